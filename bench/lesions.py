"""Does the metadata help a pretrained image model, per fusion? A thin caller of `meta_compare`, and the data helpers of bench/.

Image only, each fusion, gradient boosting on the metadata alone and the product of experts, on the same lesion-grouped
folds (stratified by the label), with paired lifts and corrected intervals, per-class recall and subgroups.
- `--data ham10000`: age, sex and site for 7 diagnoses, folds grouped by lesion; `--per-class N` caps each diagnosis at N
  images (0: all 10,015); the CPU default fits about an hour on a 2-core CPU; on a GPU use `--per-class 0 --size 224`.
- `--data siim`: age, sex and site for melanoma or not (SIIM-ISIC 2020 half), `--per-class` images of each at random
  (melanomas are 1.7 % of the rows: the sample is balanced on purpose), folds grouped by patient; headline ROC AUC.
The images are read from ../shared/data (CC BY-NC: never copied).

Run: .venv/bin/python bench/lesions.py [--data ham10000] [--folds 5] [--per-class 300] [--size 128] [--epochs 5] [--lr 3e-3]
[--fusions concat metablock] [--name ham10000]. Writes fastai_meta/results/compare-<name>-<cpu|gpu>.{json,md,png} (and resumes
from the json when stopped).
"""
import argparse, shutil, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd, torch
from fastai.vision.all import aug_transforms
from fastai_meta.all import *
from fastai_meta.crossfit import write_json
from fastai_meta.sources import results_path

OUT = results_path()
DEVICE = 'gpu' if torch.cuda.is_available() else 'cpu'     # the results' suffix
HAM = Path(__file__).resolve().parents[2]/'shared'/'data'/'ham10000'
SIIM = HAM.parent/'siim-isic-2020-half'
# each data set once: where its images are and the columns that describe its rows (the label: a benchmark may override)
HAM_COLS = dict(path=HAM, folder='images', suff='.jpg', fn_col='image_id', label_col='dx',
                cat_names=['sex', 'localization'], cont_names=['age'])
SIIM_COLS = dict(path=SIIM, folder='images', suff='.jpg', fn_col='image_name', label_col='target',
                 cat_names=['sex', 'anatom_site_general_challenge'], cont_names=['age_approx'])
ARCH = 'tf_efficientnet_lite0'                 # the benchmarks' pretrained body
LEAKS = ['diagnosis', 'benign_malignant']      # SIIM-ISIC's columns recorded with the label

def load_ham(per_class=0, seed=0):
    "HAM10000's table, `unknown` read as missing, at most `per_class` images per diagnosis (0: all)."
    df = pd.read_csv(HAM/'metadata.csv').replace('unknown', np.nan)
    if per_class:
        df = df.sample(frac=1, random_state=seed)
        df = df[df.groupby('dx').cumcount() < per_class].sort_index()
    return df.reset_index(drop=True)

def load_siim():
    "SIIM-ISIC's table, without the columns recorded with the label."
    return pd.read_csv(SIIM/'train.csv').drop(columns=LEAKS)

def siim(per_class, seed):
    "`per_class` melanomas and as many other images of the SIIM-ISIC half, at random: 'melanoma' or 'benign'."
    df = load_siim()
    df = pd.concat([g.sample(min(per_class, len(g)), random_state=seed) for _,g in df.groupby('target')])
    return df.assign(target=df.target.map({0: 'benign', 1: 'melanoma'})).reset_index(drop=True)

def rows(a):
    "The rows of `a.data` ('ham10000' or 'siim') and `meta_compare`'s arguments that describe them."
    if a.data == 'siim': return siim(a.per_class, a.seed), dict(SIIM_COLS, group_col='patient_id', metric='roc_auc')
    return load_ham(a.per_class, a.seed), dict(HAM_COLS, group_col='lesion_id')

def recipe(size, bs, aug=True, cache=True):
    "The benchmarks' recipe: EfficientNet-Lite0's offline weights at `size` px, batch `bs`, a cache, flips, rotations."
    return dict(arch=ARCH, weights_path=offline_weights(ARCH), size=size, bs=bs,
                cache=ImageCache(size) if cache else None,
                **(dict(batch_tfms=aug_transforms(size=size, flip_vert=True, max_warp=0)) if aug else {}))

def save(name, res=None, md=None):
    "Write fastai_meta/results/`name`.json (`res`, standard JSON: NaN as null) and .md (`md`, also printed)."
    if res is not None: write_json(OUT/f'{name}.json', res, indent=1)
    if md is not None: (OUT/f'{name}.md').write_text(md); print(md)

def interval(x):
    "Mean and 95 % t interval of per-fold values `x`, as [mean, low, high] (`paired_stats`, the benchmarks' summaries)."
    s = paired_stats(x)
    return [s['mean'], s['low'], s['high']]

def pretrained_compare(df, a, out, **kwargs):
    "`meta_compare` of the rows `df` by the pretrained `recipe`; `a`: folds, size and budget; `kwargs`: the columns."
    seeds = list(range(a.seed, a.seed + getattr(a, 'seeds', 1)))
    return meta_compare(df, **recipe(a.size, a.bs), epochs=a.epochs, lr=a.lr, n_folds=a.folds, seeds=seeds, out=out,
                        **kwargs)

def compare(a, name='ham10000'):
    "Run `meta_compare` on `a.data` with the options `a`; copy its json, md and png to fastai_meta/results/compare-<name>-<device>.*"
    run_dir = OUT/f'compare-{name}-{DEVICE}.run'
    df, spec = rows(a)
    res = pretrained_compare(df, a, run_dir, fusions=a.fusions, **spec)
    for ext in ('json', 'md', 'png'): shutil.copy(run_dir/f'compare.{ext}', OUT/f'compare-{name}-{DEVICE}.{ext}')
    print(res.to_markdown())
    return res

def parser(**defaults):
    "The benchmarks' options (folds, images per class, size, budget, seeds, fusions), with `defaults` over these."
    p = argparse.ArgumentParser()
    p.add_argument('--folds', type=int, default=5); p.add_argument('--per-class', type=int, default=300)
    p.add_argument('--size', type=int, default=128); p.add_argument('--epochs', type=int, default=5)
    p.add_argument('--bs', type=int, default=32); p.add_argument('--lr', type=float, default=3e-3)
    p.add_argument('--seed', type=int, default=0); p.add_argument('--seeds', type=int, default=1, help='repeat the cross-validation with this many seeds')
    p.add_argument('--fusions', nargs='+', default=['concat', 'metablock'])
    p.set_defaults(**defaults)
    return p

if __name__ == '__main__':
    p = parser(); p.add_argument('--name', default='ham10000', help='results: compare-<name>-<cpu|gpu>.*')
    p.add_argument('--data', default='ham10000', choices=['ham10000', 'siim'])
    a = p.parse_args(); compare(a, a.name)
