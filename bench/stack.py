"""The stack against its parts on real data: is `stack_learner` at least as good as image only, the fusion and the table alone?

`meta_compare(fusions=('concat', 'stack'))` with the benchmarks' pretrained recipe (`lesions.pretrained_compare`: EfficientNet-Lite0's
offline weights, flips and rotations): image only, concat, gradient boosting on the table, the product of experts and the stack
(`stack_learner` trained on each outer fold's training rows, its own networks cross-fitted over `--inner` folds of them), all
scored on the same grouped outer folds; then the stack against each, paired by fold (`CompareResult.against`).

- `--data ham10000`: the 7 diagnoses, at most `--per-class` images each, folds grouped by lesion; headline balanced accuracy.
- `--data siim`: melanoma or not, `--per-class` images of each at random (melanomas are 1.7 % of the rows: the sample is
  balanced on purpose), folds grouped by patient; headline ROC AUC. `--context`: `--per-class` patients with a melanoma and
  as many without, up to 12 images each; the stack's stage two also reads each image's place among its patient's images
  (`context_col='patient_id'`), and `'context'` (`context_learner`) joins.
- `--data age`: HAM10000's age from the image, sex and site (a regression, `--per-class` × 7 rows with an age); headline MAE.

Run: .venv/bin/python bench/stack.py --data ham10000|siim|age [--context] [--per-class 90] [--folds 3] [--inner 3] [--size 64] [--epochs 3]
Writes fastai_meta/results/stack-<data>[-context]-<cpu|gpu>.{json,md,png} (and resumes from its run folder).
"""
import shutil, warnings
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd, torch
from fastai_meta.all import *
from lesions import DEVICE, HAM_COLS, OUT, load_ham, load_siim, parser, pretrained_compare, rows, save

def siim_patients(n, seed, cap=12):
    "All images (at most `cap` per patient, melanomas kept first) of `n` patients with a melanoma and `n` without, at random: patients whose other images give each one its context."
    df = load_siim()
    has = df.groupby('patient_id').target.max()
    pick = pd.concat([has[has == v].sample(min(n, int((has == v).sum())), random_state=seed) for v in (0, 1)]).index
    df = df[df.patient_id.isin(pick)].sample(frac=1, random_state=seed).sort_values('target', ascending=False, kind='stable')
    df = df[df.groupby('patient_id').cumcount() < cap]
    return df.assign(target=df.target.map({0: 'benign', 1: 'melanoma'})).reset_index(drop=True)

def data(a):
    "The rows and `meta_compare`'s data arguments of `--data`."
    if a.data == 'age': return (load_ham(a.per_class, a.seed).dropna(subset=['age']).drop(columns=['dx', 'dx_type']).reset_index(drop=True),
                                dict(HAM_COLS, label_col='age', group_col='lesion_id', cont_names=[],
                                     task='regression'))
    df, spec = rows(a)
    return (siim_patients(a.per_class, a.seed) if a.data == 'siim' and a.context else df), spec

def main(a):
    df, spec = data(a)
    name = f"stack-{a.data}{'-context' if a.context else ''}-{DEVICE}"
    run_dir = OUT/f'{name}.run'
    extra = dict(context_col='patient_id', fusions=['concat', 'context', 'stack']) if a.context else dict(fusions=['concat', 'stack'])
    res = pretrained_compare(df, a, run_dir, context_folds=a.inner, **extra, **spec)
    weights = pd.DataFrame([r['weights'] for k,r in res.runs.items() if k.endswith('/stack')]).fillna(0).mean()
    said = f"Stage two's mean weights over the outer folds: {', '.join(f'{n} {w:.2f}' for n,w in weights.items())}."
    for ext in ('json', 'png'): shutil.copy(run_dir/f'compare.{ext}', OUT/f'{name}.{ext}')
    save(name, md=res.to_markdown() + '\n' + said + '\n')

if __name__ == '__main__':
    p = parser(folds=3, per_class=90, size=64, epochs=3)
    p.add_argument('--data', default='ham10000', choices=['ham10000', 'siim', 'age']); p.add_argument('--inner', type=int, default=3, help="the stack's own folds")
    p.add_argument('--context', action='store_true', help="SIIM-ISIC: the stack with the patient context, and context_learner beside it")
    main(p.parse_args())
