"""HAM10000: image only (`vision_learner`) against `meta_cnn_learner` (concat, csf), on lesion-grouped folds.

Real images with real gaps (../shared/data/ham10000, CC BY-NC: read from there, never copied).
Each fold holds out whole lesions (sklearn's StratifiedGroupKFold on `lesion_id`), so no lesion is in
both training and validation. Every model trains from scratch (no weights can be downloaded) with the
same data, seed and budget per fold; the score is the last epoch's balanced accuracy and macro
one-vs-rest ROC AUC on the held-out fold, reported as mean ± std over folds.

`--per-class N` caps each diagnosis at N images (0: all 10,015); the CPU default is a small balanced
run that fits CI's 2-core machine, the GPU run (`--per-class 0 --size 128 --epochs 12`) uses everything.

Run: .venv/bin/python bench/lesions.py [--folds 3] [--per-class 150] [--size 64] [--epochs 4]
Writes bench/results/lesions-<cpu|gpu>.json and .md.
"""
import argparse, json, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd
from sklearn.model_selection import StratifiedGroupKFold
from fastai.vision.all import *
from fastai_meta.all import *

OUT = Path(__file__).parent/'results'
HAM = Path(__file__).resolve().parents[2]/'shared'/'data'/'ham10000'
MODELS = ['image only (vision_learner)', 'concat', 'csf']

def load_ham(per_class=0, seed=0):
    "HAM10000's table, `unknown` read as missing, at most `per_class` images per diagnosis (0: all)."
    df = pd.read_csv(HAM/'metadata.csv').replace('unknown', np.nan)
    if per_class:
        df = df.sample(frac=1, random_state=seed)
        df = df[df.groupby('dx').cumcount() < per_class].sort_index()
    return df.reset_index(drop=True)

def lesion_folds(df, n_folds, seed=0):
    "Fold number of each row: stratified by diagnosis, grouped by lesion."
    fold = np.zeros(len(df), dtype=int)
    for k,(_, va) in enumerate(StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed).split(df, df.dx, df.lesion_id)): fold[va] = k
    return fold

def train_one(name, df, a):
    "Train model `name` on `df` (its `is_valid` column is the held-out fold); return its scores."
    common = dict(path=HAM, folder='images', fn_col='image_id', suff='.jpg', label_col='dx', valid_col='is_valid', bs=a.bs,
                  num_workers=a.workers, item_tfms=Resize(a.size), batch_tfms=aug_transforms(flip_vert=True, max_warp=0))
    metrics = [BalancedAccuracy(), RocAuc()]
    if name.startswith('image only'):
        learn = vision_learner(ImageDataLoaders.from_df(df, **common), a.arch, pretrained=False, metrics=metrics).to_fast()
    else:
        dls = MetaDataLoaders.from_df(df, cat_names=['sex', 'localization'], cont_names=['age'], **common)
        learn = meta_cnn_learner(dls, a.arch, fusion=name, pretrained=False, metrics=metrics)   # to_fast() by default
    start = time.time()
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(a.epochs, a.lr)
    _, _, bal, auc = learn.recorder.values[-1]
    return dict(balanced_accuracy=float(bal), macro_auc=float(auc), seconds=time.time() - start)

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--folds', type=int, default=3); p.add_argument('--per-class', type=int, default=150)
    p.add_argument('--size', type=int, default=64); p.add_argument('--epochs', type=int, default=4)
    p.add_argument('--bs', type=int, default=32); p.add_argument('--lr', type=float, default=2e-3)
    p.add_argument('--arch', default='resnet18'); p.add_argument('--workers', type=int, default=0)
    p.add_argument('--seed', type=int, default=0); p.add_argument('--from-json', help='only rewrite the table from this json')
    a = p.parse_args()
    if a.from_json: return write_md(json.loads(Path(a.from_json).read_text()))
    a.device = 'gpu' if torch.cuda.is_available() else 'cpu'
    a.arch_name, a.arch = a.arch, getattr(__import__('torchvision.models', fromlist=[a.arch]), a.arch)
    df = load_ham(a.per_class, a.seed)
    df['fold'] = lesion_folds(df, a.folds, a.seed)
    rows = []
    for k in range(a.folds):
        fdf = df.assign(is_valid=df.fold == k)
        assert not set(fdf.lesion_id[fdf.is_valid]) & set(fdf.lesion_id[~fdf.is_valid])
        for name in MODELS:
            set_seed(a.seed + k, reproducible=True)
            rows.append(dict(fold=k, model=name, n_valid=int(fdf.is_valid.sum()), **train_one(name, fdf, a)))
            print(rows[-1], flush=True)
    res = dict({k:v for k,v in vars(a).items() if k != 'arch'}, n_images=len(df), rows=rows,
               torch=torch.__version__, gpu=torch.cuda.get_device_name() if a.device == 'gpu' else None)
    OUT.mkdir(exist_ok=True)
    (OUT/f'lesions-{a.device}.json').write_text(json.dumps(res, indent=2))
    write_md(res)

def summary(res):
    "Mean and std over folds of each model's scores, as a DataFrame."
    d = pd.DataFrame(res['rows'])
    return d.groupby('model', sort=False)[['balanced_accuracy', 'macro_auc']].agg(['mean', 'std'])

def write_md(res):
    "Write the results table of `res` next to its json."
    s = summary(res)
    where = res['gpu'] or f"CPU, torch {res['torch']}"
    md = [f"HAM10000, {res['n_images']} images ({'all' if not res['per_class'] else 'at most ' + str(res['per_class']) + ' per diagnosis'}), "
          f"{res['folds']} lesion-grouped folds, {res['arch_name']} from scratch at {res['size']} px, {res['epochs']} epochs of one-cycle "
          f"at lr {res['lr']:g}, batch {res['bs']}, on {where}. Mean ± std over folds.", '',
          '| model | balanced accuracy | macro ROC AUC |', '|---|---:|---:|']
    for m,r in s.iterrows():
        md.append(f"| {m} | {r[('balanced_accuracy','mean')]:.3f} ± {r[('balanced_accuracy','std')]:.3f} | "
                  f"{r[('macro_auc','mean')]:.3f} ± {r[('macro_auc','std')]:.3f} |")
    (OUT/f"lesions-{res['device']}.md").write_text('\n'.join(md) + '\n')
    print('\n'.join(md))

if __name__ == '__main__': main()
