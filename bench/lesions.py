"""HAM10000: image only (`vision_learner`) against `meta_cnn_learner` (concat, csf), on lesion-grouped folds.

Real images with real gaps (../shared/data/ham10000, CC BY-NC: read from there, never copied).
Each fold holds out whole lesions (sklearn's StratifiedGroupKFold on `lesion_id`), so no lesion is in
both training and validation. Every model trains from scratch (no weights can be downloaded) with the
same data, seed and budget per fold; the score is the last epoch's balanced accuracy and macro
one-vs-rest ROC AUC on the held-out fold, reported as mean ± std over folds.

`--per-class N` caps each diagnosis at N images (0: all 10,015); the CPU default is a small balanced
run that fits CI's 2-core machine, the GPU run (`--per-class 0 --size 128 --epochs 12`) uses everything.

`--pretrained`: the way users train. EfficientNet-Lite0 with ImageNet weights (`offline_weights`, from
its PyPI wheel), `fine_tune(epochs)` (one frozen epoch first), `ImageCache` for the metadata models;
models: image only from scratch (same budget, `fit_one_cycle(epochs + 1)`), image only pretrained
(`vision_learner` with the same weights), and `meta_cnn_learner` with concat, film, metablock and csf.
The table adds each model's paired lift over the pretrained image-only model, fold by fold.
`--lr-mult`: fine_tune's `lr_mult`. timm bodies are one parameter group in fastai (`default_split`), so
fastai's default 100 trains the whole body at a hundredth of the head's rate; 1 trains it at the head's.

Run: .venv/bin/python bench/lesions.py [--folds 3] [--per-class 150] [--size 64] [--epochs 4]
     .venv/bin/python bench/lesions.py --pretrained [--per-class 300] [--size 128] [--epochs 5] [--lr 3e-3] [--lr-mult 1]
Writes bench/results/lesions[-pretrained]-<cpu|gpu>.json and .md.
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
PRETRAINED_MODELS = ['image only, from scratch', 'image only (vision_learner)', 'concat', 'film', 'metablock', 'csf']
BASE = 'image only (vision_learner)'   # what lifts are measured against

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
    learn = trained(name, df, a)
    _, _, bal, auc = learn.recorder.values[-1]
    return dict(balanced_accuracy=float(bal), macro_auc=float(auc), seconds=learn.fit_seconds)

def trained(name, df, a):
    "Model `name` trained on `df` (its `is_valid` column is the held-out fold), as a `Learner`."
    common = dict(path=HAM, folder='images', fn_col='image_id', suff='.jpg', label_col='dx', valid_col='is_valid', bs=a.bs,
                  num_workers=a.workers, batch_tfms=aug_transforms(size=a.size, flip_vert=True, max_warp=0))
    metrics, pre = [BalancedAccuracy(), RocAuc()], a.pretrained and 'scratch' not in name
    weights = dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(a.weights))) if pre else dict(pretrained=False)
    if name.startswith('image only'):
        learn = vision_learner(ImageDataLoaders.from_df(df, item_tfms=Resize(a.size), **common), a.arch, metrics=metrics, **weights).to_fast()
    else:
        cache = dict(cache=ImageCache(a.size)) if a.pretrained else dict(item_tfms=Resize(a.size))
        dls = MetaDataLoaders.from_df(df, cat_names=['sex', 'localization'], cont_names=['age'], **cache, **common)
        learn = meta_cnn_learner(dls, a.arch, fusion=name.split()[0], wide='wide' in name, pretrained=pre, weights_path=a.weights if pre else None, metrics=metrics, fast=True)
    lr_mult = name_lr_mult(name, a.lr_mult)
    start = time.time()
    with learn.no_bar(), learn.no_logging():
        if pre: learn.fine_tune(a.epochs, a.lr, lr_mult=lr_mult)
        else: learn.fit_one_cycle(a.epochs + a.pretrained, a.lr)     # the same number of epochs as fine_tune's
    learn.fit_seconds = time.time() - start
    return learn

def name_lr_mult(name, default=None):
    "The `lr_mult` a model name asks for (e.g. 'concat (lr_mult=100)', 'image only, lr_mult=100'), else `default`."
    return float(name.split('lr_mult=')[1].rstrip(')')) if 'lr_mult=' in name else default

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--folds', type=int, default=3); p.add_argument('--per-class', type=int, default=150)
    p.add_argument('--size', type=int, default=64); p.add_argument('--epochs', type=int, default=4)
    p.add_argument('--bs', type=int, default=32); p.add_argument('--lr', type=float, default=2e-3)
    p.add_argument('--lr-mult', type=float, default=100, help="fine_tune's lr_mult: the body's lr is the head's divided by it (fastai's default 100)")
    p.add_argument('--arch', default='resnet18'); p.add_argument('--workers', type=int, default=0)
    p.add_argument('--seed', type=int, default=0); p.add_argument('--from-json', help='only rewrite the table from this json')
    p.add_argument('--pretrained', action='store_true', help='EfficientNet-Lite0 with ImageNet weights, fine_tune, against image only from scratch')
    p.add_argument('--models', help="only these models, separated by ';' (e.g. 'concat + wide': concat with wide=True; 'concat (lr_mult=100)')")
    p.add_argument('--add', action='store_true', help='add these models\' rows to the results json of the same settings')
    a = p.parse_args()
    if a.from_json: return write_md(json.loads(Path(a.from_json).read_text()))
    a.device = 'gpu' if torch.cuda.is_available() else 'cpu'
    if a.pretrained:
        a.arch = a.arch_name = 'tf_efficientnet_lite0'
        a.weights = offline_weights(a.arch)
    else: a.arch_name, a.arch, a.weights = a.arch, getattr(__import__('torchvision.models', fromlist=[a.arch]), a.arch), None
    df = load_ham(a.per_class, a.seed)
    df['fold'] = lesion_folds(df, a.folds, a.seed)
    rows = []
    for k in range(a.folds):
        fdf = df.assign(is_valid=df.fold == k)
        assert not set(fdf.lesion_id[fdf.is_valid]) & set(fdf.lesion_id[~fdf.is_valid])
        for name in (a.models.split(';') if a.models else PRETRAINED_MODELS if a.pretrained else MODELS):
            set_seed(a.seed + k, reproducible=True)
            rows.append(dict(fold=k, model=name, n_valid=int(fdf.is_valid.sum()), **train_one(name, fdf, a)))
            print(rows[-1], flush=True)
    res = dict({k:v for k,v in vars(a).items() if k not in ('arch', 'weights')}, n_images=len(df), rows=rows,
               threads=torch.get_num_threads(), torch=torch.__version__, gpu=torch.cuda.get_device_name() if a.device == 'gpu' else None)
    OUT.mkdir(exist_ok=True)
    out = OUT/f"lesions{'-pretrained' if a.pretrained else ''}-{a.device}.json"
    if a.add: res = merged(out, res, ('folds', 'per_class', 'size', 'epochs', 'bs', 'lr', 'lr_mult', 'seed', 'n_images'))
    out.write_text(json.dumps(res, indent=2))
    write_md(res)

def merged(out, res, same):
    "The results json `out` with `res`'s rows in place of its rows of the same models; refuses if a setting in `same` differs."
    old = {'lr_mult': 100., **json.loads(out.read_text())}       # runs from before --lr-mult used fastai's default
    if any(old.get(k) != res.get(k) for k in same): raise ValueError(f'{out} was made with other settings: {[(k, old.get(k), res.get(k)) for k in same]}')
    names = {r['model'] for r in res['rows']}
    return dict(old, rows=[r for r in old['rows'] if r['model'] not in names] + res['rows'])

def summary(res):
    "Mean and std over folds of each model's scores, as a DataFrame."
    d = pd.DataFrame(res['rows'])
    return d.groupby('model', sort=False)[['balanced_accuracy', 'macro_auc']].agg(['mean', 'std'])

def paired_lifts(res, base=BASE):
    "Each model's score minus the `base` model's on the same fold, as a DataFrame (rows: fold, model)."
    d = pd.DataFrame(res['rows']).set_index(['fold', 'model'])[['balanced_accuracy', 'macro_auc']]
    return d - d.xs(base, level='model')

def _pm(mean, std, scale=1., fmt='.3f'): return f"{mean*scale:{fmt}} ± {std*scale:{fmt.lstrip('+')}}"

def write_md(res):
    "Write the results table of `res` next to its json."
    s, pre = summary(res), res.get('pretrained', False)
    where = res['gpu'] or f"CPU{' (%d threads)' % res['threads'] if 'threads' in res else ''}, torch {res['torch']}"
    how = (f"{res['arch_name']} with ImageNet weights (`offline_weights`) at {res['size']} px, `fine_tune({res['epochs']})` "
           f"(one frozen epoch first) at lr {res['lr']:g}, `lr_mult={res.get('lr_mult', 100):g}`; the from-scratch model trains `fit_one_cycle({res['epochs'] + 1})`"
           if pre else f"{res['arch_name']} from scratch at {res['size']} px, {res['epochs']} epochs of one-cycle at lr {res['lr']:g}")
    md = [f"HAM10000, {res['n_images']} images ({'all' if not res['per_class'] else 'at most ' + str(res['per_class']) + ' per diagnosis'}), "
          f"{res['folds']} lesion-grouped folds, {how}, batch {res['bs']}, on {where}. Mean ± std over folds."
          + (" Lift: the model's score minus the pretrained image-only model's on the same fold, in points (×100), mean ± std over folds." if pre else ''), '',
          '| model | balanced accuracy | macro ROC AUC |' + (' lift, balanced accuracy | lift, macro AUC |' if pre else ''),
          '|---|---:|---:|' + ('---:|---:|' if pre else '')]
    lifts = paired_lifts(res).groupby('model', sort=False).agg(['mean', 'std']) if pre else None
    for m,r in s.iterrows():
        row = f"| {m} | {_pm(r[('balanced_accuracy','mean')], r[('balanced_accuracy','std')])} | {_pm(r[('macro_auc','mean')], r[('macro_auc','std')])} |"
        if pre:
            l = lifts.loc[m]
            row += ' – | – |' if m == BASE else (f" {_pm(l[('balanced_accuracy','mean')], l[('balanced_accuracy','std')], 100, '+.1f')} |"
                                                 f" {_pm(l[('macro_auc','mean')], l[('macro_auc','std')], 100, '+.1f')} |")
        md.append(row)
    for m in s.index:                                # a fusion at another lr_mult, against image only at that lr_mult
        base = f"image only, lr_mult={name_lr_mult(m):g}" if name_lr_mult(m) else None
        if base and m != base and base in s.index:
            l = paired_lifts(res, base).xs(m, level='model').agg(['mean', 'std'])
            md += ['', f"Paired lift of {m} over {base}: {_pm(l.balanced_accuracy['mean'], l.balanced_accuracy['std'], 100, '+.1f')} "
                       f"balanced accuracy, {_pm(l.macro_auc['mean'], l.macro_auc['std'], 100, '+.1f')} macro AUC (points)."]
    secs = pd.DataFrame(res['rows']).groupby('model', sort=False).seconds.mean()
    md += ['', 'Training seconds per fold: ' + ', '.join(f"{m} {v:.0f}" for m,v in secs.items()) + '.']
    (OUT/f"lesions{'-pretrained' if pre else ''}-{res['device']}.md").write_text('\n'.join(md) + '\n')
    print('\n'.join(md))

if __name__ == '__main__': main()
