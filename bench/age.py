"""Age from the image and the table: is a fused regression at least as good as the table alone? `meta_compare` on real data.

`--data ham10000`: HAM10000's `age` with `sex` and `localization`, folds grouped by lesion; `--data siim`: SIIM-ISIC 2020's
`age_approx` with `sex` and the site, grouped by patient. Rows without an age are left out. The library's
`meta_compare(task='regression')`: image only (the same network, no metadata), each fusion, gradient boosting on the table,
and the average of image only's and the table's predictions, on the same grouped folds (MAE, RMSE, MAPE, R², paired lifts
with corrected intervals, its verdict); then each fusion against the table alone, paired.

Run: .venv/bin/python bench/age.py [--data ham10000|siim] [--n 1500] [--folds 3] [--size 96] [--epochs 4] [--fusions concat film]
Writes fastai_meta/results/age-<data>-<cpu|gpu>.{json,md,png} (and resumes from its run folder).
"""
import shutil, warnings
warnings.filterwarnings('ignore')
import pandas as pd, torch
from fastai_meta.all import *
from fastai_meta.compare import TABLE
from lesions import DEVICE, HAM_COLS, SIIM_COLS, OUT, load_ham, parser, pretrained_compare, save

DATA = {'ham10000': dict(HAM_COLS, label_col='age', group_col='lesion_id', cont_names=[]),
        'siim': dict(SIIM_COLS, label_col='age_approx', group_col='patient_id', cont_names=[])}

def table(name, n, seed):
    "The rows of data set `name` with an age, `n` of them at random (0: all)."
    df = load_ham() if name == 'ham10000' else pd.read_csv(SIIM_COLS['path']/'train.csv')
    df = df.dropna(subset=[DATA[name]['label_col']])
    return (df.sample(n, random_state=seed) if n else df).reset_index(drop=True)

def main(a):
    name = a.data
    run_dir = OUT/f'age-{name}-{DEVICE}.run'
    res = pretrained_compare(table(name, a.n, a.seed), a, run_dir, task='regression', fusions=a.fusions, **DATA[name])
    vs = [(f, res.versus(f, TABLE)) for f in a.fusions]        # the question of this benchmark: is a fused model at least as good as the table alone?
    extra = '\n'.join(['**Each fusion against the table alone** (MAE of the table minus the fusion\'s, paired by fold; positive: the fusion is better):', ''] +
                       [f"- {f}: {v['mean']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}] years, better on {v['wins']} of {v['n']} folds" for f,v in vs])
    for ext in ('json', 'png'): shutil.copy(run_dir/f'compare.{ext}', OUT/f'age-{name}-{DEVICE}.{ext}')
    save(f'age-{name}-{DEVICE}', md=res.to_markdown() + '\n' + extra + '\n')

if __name__ == '__main__':
    p = parser(folds=3, size=96, epochs=4, fusions=['concat', 'film'])
    p.add_argument('--data', default='ham10000', choices=list(DATA)); p.add_argument('--n', type=int, default=1500, help='rows with an age, at random (0: all)')
    main(p.parse_args())
