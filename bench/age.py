"""HAM10000 age regression: the image plus `sex` and `localization`, against the table alone and the image alone.

A real regression the project can run offline (../shared/data/ham10000, CC BY-NC: read from there, never
copied). `age` (in years, a multiple of 5) is predicted on lesion-grouped folds (StratifiedGroupKFold on
`lesion_id`, stratified by diagnosis), rows without an age left out. Models, same rows and folds:

- `gradient boosting, table only`: scikit-learn's HistGradientBoostingRegressor (defaults) on `sex` and
  `localization` as categorical features (missing values as its own);
- `image only`: `vision_learner` with the pretrained EfficientNet-Lite0 (`offline_weights`), trained on the
  standardised age (the training rows' mean and std) and mapped back: what a careful fastai user does;
- `concat`, `concat + wide`, `csf`: `meta_cnn_learner` with default arguments (targets standardised and the
  head started at the mean by the library itself), `wide=True` adding a linear path from the metadata.

Every network: `fine_tune(epochs, lr)` at `size` px, batch 32, seeded per fold. Score: mean absolute error
in years on the held-out fold. Target: the fused model's MAE below both baselines' on every fold.

Run: .venv/bin/python bench/age.py [--n 1500] [--size 96] [--epochs 4]
Writes bench/results/age-<cpu|gpu>.json and .md.
"""
import argparse, json, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from fastai.vision.all import *
from fastai_meta.all import *
from lesions import HAM, OUT, load_ham

MODELS = ['gradient boosting, table only', 'image only', 'concat', 'concat + wide', 'csf']
CATS = ['sex', 'localization']

def gbm_mae(df):
    "MAE of gradient boosting on the categorical columns alone, trained on the rows not in the fold."
    X = pd.DataFrame({c: df[c].astype('category').cat.codes.replace(-1, np.nan) for c in CATS})
    tr, va = ~df.is_valid, df.is_valid
    gbm = HistGradientBoostingRegressor(categorical_features=[0, 1], random_state=0).fit(X[tr], df.age[tr])
    return float(np.abs(gbm.predict(X[va]) - df.age[va]).mean())

def net_mae(name, df, a):
    "MAE of network `name` on the held-out fold, in years."
    common = dict(path=HAM, folder='images', fn_col='image_id', suff='.jpg', valid_col='is_valid', bs=32, num_workers=0,
                  y_block=RegressionBlock, batch_tfms=aug_transforms(size=a.size, flip_vert=True, max_warp=0))
    if name == 'image only':
        tr = df.age[~df.is_valid]
        mean, std = tr.mean(), tr.std()
        dls = ImageDataLoaders.from_df(df.assign(age_z=(df.age - mean)/std), label_col='age_z', item_tfms=Resize(a.size), **common)
        learn = vision_learner(dls, a.arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(a.weights))).to_fast()
        unscale = lambda p: p*std + mean
    else:
        dls = MetaDataLoaders.from_df(df, label_col='age', cat_names=CATS, cache=ImageCache(a.size), **common)
        learn = meta_cnn_learner(dls, a.arch, fusion=name.split()[0], wide='wide' in name, weights_path=a.weights, fast=True)
        unscale = noop
    with learn.no_bar(), learn.no_logging():
        learn.fine_tune(a.epochs, a.lr, lr_mult=a.lr_mult)
        preds, _ = learn.get_preds()
    return float((unscale(preds[:, 0]) - tensor(df.age[df.is_valid].values).float()).abs().mean())

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--n', type=int, default=1500, help='images drawn at random from those with an age (0: all)')
    p.add_argument('--folds', type=int, default=3); p.add_argument('--size', type=int, default=96)
    p.add_argument('--epochs', type=int, default=4); p.add_argument('--lr', type=float, default=3e-3)
    p.add_argument('--lr-mult', type=float, default=1, help="fine_tune's lr_mult (1: the library's recipe for a timm body, `MetaLearner.fine_tune`'s default; fastai's is 100)")
    p.add_argument('--seed', type=int, default=0); p.add_argument('--models', default=';'.join(MODELS), help='names separated by ;')
    p.add_argument('--from-json', help='only rewrite the table from this json')
    a = p.parse_args()
    if a.from_json: return write_md(json.loads(Path(a.from_json).read_text()))
    a.device = 'gpu' if torch.cuda.is_available() else 'cpu'
    a.arch = 'tf_efficientnet_lite0'; a.weights = offline_weights(a.arch)
    df = load_ham().dropna(subset=['age'])
    if a.n: df = df.sample(a.n, random_state=a.seed)
    df = df.reset_index(drop=True)
    fold = row_folds(df, a.folds, a.seed, group_col='lesion_id', stratify='dx')
    def fit(name, df, valid):
        fdf, start = df.assign(is_valid=valid), time.time()
        mae = gbm_mae(fdf) if name.startswith('gradient') else net_mae(name, fdf, a)
        return dict(model=name, n_valid=int(valid.sum()), mae=mae, seconds=time.time() - start)
    rows = [dict(fold=k, **r) for name in a.models.split(';') for k,r in cross_fit(df, fold, partial(fit, name), seed=a.seed).items()]
    res = dict({k:v for k,v in vars(a).items() if k not in ('arch', 'weights')}, arch_name=a.arch, n_images=len(df), rows=rows,
               age_std=float(df.age.std()), threads=torch.get_num_threads(), torch=torch.__version__,
               gpu=torch.cuda.get_device_name() if a.device == 'gpu' else None)
    OUT.mkdir(exist_ok=True)
    (OUT/f"age-{a.device}.json").write_text(json.dumps(res, indent=2))
    write_md(res)

def write_md(res):
    "Write the table of `res` next to its json."
    d = pd.DataFrame(res['rows'])
    per_fold = d.pivot(index='fold', columns='model', values='mae')[list(dict.fromkeys(d.model))]
    s = d.groupby('model', sort=False).mae.agg(['mean', 'std'])
    where = res['gpu'] or f"CPU ({res['threads']} threads), torch {res['torch']}"
    md = [f"HAM10000 age (years; std {res['age_std']:.1f}), {res['n_images']} images with an age, {res['folds']} lesion-grouped folds; "
          f"networks: {res['arch_name']} with ImageNet weights at {res['size']} px, `fine_tune({res['epochs']}, {res['lr']:g}, lr_mult={res.get('lr_mult', 100):g})`, "
          f"batch 32, on {where}. Mean absolute error, mean ± std over folds, and per fold.", '',
          '| model | MAE (years) | ' + ' | '.join(f'fold {k}' for k in per_fold.index) + ' |',
          '|---|---:|' + '---:|'*len(per_fold)]
    for m,r in s.iterrows():
        md.append(f"| {m} | {r['mean']:.2f} ± {r['std']:.2f} | " + ' | '.join(f'{v:.2f}' for v in per_fold[m]) + ' |')
    base = [m for m in ('gradient boosting, table only', 'image only') if m in per_fold]
    for m in per_fold:
        if m in base or len(base) < 2: continue
        wins = int((per_fold[m] < per_fold[base].min(axis=1)).sum())
        md.append(f"\n`{m}` below both baselines on {wins} of {len(per_fold)} folds.")
    secs = d.groupby('model', sort=False).seconds.mean()
    md += ['', 'Seconds per fold: ' + ', '.join(f"{m} {v:.0f}" for m,v in secs.items()) + '.']
    (OUT/f"age-{res['device']}.md").write_text('\n'.join(md) + '\n')
    print('\n'.join(md))

if __name__ == '__main__': main()
