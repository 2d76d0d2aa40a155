"""HAM10000: does age, sex and site help a pretrained image model? A thin caller of `meta_compare`, and the HAM10000 helpers of bench/.

Image only, each fusion, gradient boosting on the metadata alone and the product of experts, on the same lesion-grouped
folds (stratified by diagnosis), with paired lifts and corrected intervals, per-class recall and subgroups. The images are
read from ../shared/data/ham10000 (CC BY-NC: never copied). `--per-class N` caps each diagnosis at N images (0: all
10,015); the CPU default fits about an hour on a 2-core CPU; on a GPU use `--per-class 0 --size 224`.

Run: .venv/bin/python bench/lesions.py [--folds 5] [--per-class 300] [--size 128] [--epochs 5] [--lr 3e-3] [--fusions concat metablock]
[--name ham10000]. Writes fastai_meta/results/compare-<name>-<cpu|gpu>.{json,md,png} (and resumes from the json when stopped).
"""
import argparse, shutil, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd, torch
from fastai.vision.all import aug_transforms
from fastai_meta.all import *
from fastai_meta.sources import results_path

OUT = results_path()
HAM = Path(__file__).resolve().parents[2]/'shared'/'data'/'ham10000'

def load_ham(per_class=0, seed=0):
    "HAM10000's table, `unknown` read as missing, at most `per_class` images per diagnosis (0: all)."
    df = pd.read_csv(HAM/'metadata.csv').replace('unknown', np.nan)
    if per_class:
        df = df.sample(frac=1, random_state=seed)
        df = df[df.groupby('dx').cumcount() < per_class].sort_index()
    return df.reset_index(drop=True)

def interval(x):
    "Mean and 95 % t interval of per-fold values `x`, as [mean, low, high] (`paired_stats`, the benchmarks' summaries)."
    s = paired_stats(x)
    return [s['mean'], s['low'], s['high']]

def pretrained_compare(df, path, a, out, **kwargs):
    "`meta_compare` of the rows `df` (images in `path/images`, '.jpg') with the benchmarks' pretrained recipe: EfficientNet-Lite0's offline weights, cached images, flips and rotations; `a`: the folds, size and budget."
    return meta_compare(df, path, folder='images', suff='.jpg', arch='tf_efficientnet_lite0', weights_path=offline_weights('tf_efficientnet_lite0'),
                        epochs=a.epochs, lr=a.lr, size=a.size, bs=a.bs, n_folds=a.folds, seeds=list(range(a.seed, a.seed + getattr(a, 'seeds', 1))),
                        cache=ImageCache(a.size), batch_tfms=aug_transforms(size=a.size, flip_vert=True, max_warp=0), out=out, **kwargs)

def compare_ham(a, name='ham10000'):
    "Run `meta_compare` on HAM10000 with the options `a`; copy its json, md and png to fastai_meta/results/compare-<name>-<device>.*"
    device = 'gpu' if torch.cuda.is_available() else 'cpu'
    run_dir = OUT/f'compare-{name}-{device}.run'
    res = pretrained_compare(load_ham(a.per_class, a.seed), HAM, a, run_dir, fn_col='image_id', label_col='dx', group_col='lesion_id',
                             cat_names=['sex', 'localization'], cont_names=['age'], fusions=a.fusions)
    for ext in ('json', 'md', 'png'): shutil.copy(run_dir/f'compare.{ext}', OUT/f'compare-{name}-{device}.{ext}')
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
    a = p.parse_args(); compare_ham(a, a.name)
