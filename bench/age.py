"""Age from the image and the table: is a fused regression at least as good as the table alone? `meta_compare` on real data.

`--data ham10000`: HAM10000's `age` (years) from the dermoscopic image with `sex` and `localization`, folds grouped by lesion.
`--data siim`: SIIM-ISIC 2020's `age_approx` from the image with `sex` and the site, folds grouped by patient (several images
per patient). Rows without an age are left out. A thin caller of the library's `meta_compare(task='regression')`: image only
(the same network with no metadata), each fusion, gradient boosting on the table alone, and the average of image only's and
the table's predictions, on the same grouped folds; MAE, RMSE, MAPE and R² with paired lifts and corrected intervals, and
its verdict (which says when the network does not use what the table holds).

Run: .venv/bin/python bench/age.py [--data ham10000|siim] [--n 1500] [--folds 3] [--size 96] [--epochs 4] [--fusions concat film]
Writes bench/results/age-<data>-<cpu|gpu>.{json,md,png} (and resumes from its run folder).
"""
import argparse, shutil, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd, torch
from fastai.vision.all import aug_transforms
from fastai_meta.all import *
from lesions import HAM, OUT, load_ham

SIIM = HAM.parent/'siim-isic-2020-half'
DATA = {'ham10000': dict(path=HAM, fn_col='image_id', label_col='age', group_col='lesion_id', cat_names=['sex', 'localization']),
        'siim': dict(path=SIIM, fn_col='image_name', label_col='age_approx', group_col='patient_id', cat_names=['sex', 'anatom_site_general_challenge'])}

def table(name, n, seed):
    "The rows of data set `name` with an age, `n` of them at random (0: all)."
    df = load_ham() if name == 'ham10000' else pd.read_csv(SIIM/'train.csv')
    df = df.dropna(subset=[DATA[name]['label_col']])
    return (df.sample(n, random_state=seed) if n else df).reset_index(drop=True)

def main(a):
    device = 'gpu' if torch.cuda.is_available() else 'cpu'
    name, spec = a.data, dict(DATA[a.data])
    run_dir = OUT/f'age-{name}-{device}.run'
    res = meta_compare(table(name, a.n, a.seed), spec.pop('path'), folder='images', suff='.jpg', task='regression', cont_names=[], fusions=a.fusions,
                       arch='tf_efficientnet_lite0', weights_path=offline_weights('tf_efficientnet_lite0'), epochs=a.epochs, lr=a.lr, size=a.size,
                       bs=a.bs, n_folds=a.folds, seeds=[a.seed], cache=ImageCache(a.size), batch_tfms=aug_transforms(size=a.size, flip_vert=True, max_warp=0),
                       out=run_dir, **spec)
    vs = [(f, res.versus(f, TABLE)) for f in a.fusions]        # the question of this benchmark: is a fused model at least as good as the table alone?
    extra = '\n'.join(['**Each fusion against the table alone** (MAE of the table minus the fusion\'s, paired by fold; positive: the fusion is better):', ''] +
                       [f"- {f}: {v['mean']:+.3f} [{v['low']:+.3f}, {v['high']:+.3f}] years, better on {v['wins']} of {v['n']} folds" for f,v in vs])
    for ext in ('json', 'png'): shutil.copy(run_dir/f'compare.{ext}', OUT/f'age-{name}-{device}.{ext}')
    (OUT/f'age-{name}-{device}.md').write_text(res.to_markdown() + '\n' + extra + '\n')
    print(res.to_markdown(), extra, sep='\n')

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--data', default='ham10000', choices=list(DATA)); p.add_argument('--n', type=int, default=1500, help='rows with an age, at random (0: all)')
    p.add_argument('--folds', type=int, default=3); p.add_argument('--size', type=int, default=96); p.add_argument('--epochs', type=int, default=4)
    p.add_argument('--lr', type=float, default=3e-3); p.add_argument('--bs', type=int, default=32); p.add_argument('--seed', type=int, default=0)
    p.add_argument('--fusions', nargs='+', default=['concat', 'film'])
    main(p.parse_args())
