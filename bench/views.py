"""HAM10000 at lesion level: does a model that sees every image of a lesion beat one image, and the usual shortcut?

One row per lesion (its images, its age, sex and site; HAM10000 lists 1,956 of its 7,470 lesions more than once), at
most `--per-class` lesions per diagnosis, K lesion-grouped folds (stratified by diagnosis): each fold is tested once,
the others train `meta_cnn_learner` (concat fusion, pretrained EfficientNet-Lite0 at `--size` px, `fine_tune`). Four
models, on the same folds and recipe, each scored on the test fold's lesions:

- `one image`: the lesion's first image only, no metadata (a constant column in its place);
- `all images`: every image of the lesion through the one shared body, features averaged (`ImageBlocks`), no metadata;
- `all images + metadata`: the same with age, sex and site;
- `per-image average + metadata`: the usual shortcut: one row per image (with the lesion's metadata) to train, then the
  probabilities of a lesion's images averaged;
- `all images + metadata, as many steps`: `all images + metadata` trained for as many optimiser steps as the shortcut
  takes (its epochs times the training images per lesion, rounded): one row per image gives the shortcut more batches.

Balanced accuracy and macro one-vs-rest ROC AUC per fold, and each model's paired lift over `one image` with a 95 % t
interval over folds.

Run: .venv/bin/python bench/views.py [--folds 5] [--per-class 200] [--size 96] [--epochs 4]
Writes bench/results/views-ham10000-<cpu|gpu>.{json,md}.
"""
import argparse, json, time, warnings
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd, torch
from fastai.vision.all import aug_transforms, IndexSplitter, DataBlock, ColReader, CategoryBlock, accuracy, partial
from fastai_meta.all import *
from lesions import HAM, OUT, interval as _ci

MODELS = ('one image', 'all images', 'all images + metadata', 'per-image average + metadata', 'all images + metadata, as many steps')

def load_lesions(per_class, seed):
    "One row per lesion: its images (a list, in image_id order), diagnosis, and the metadata of its first image."
    df = pd.read_csv(HAM/'metadata.csv').replace('unknown', np.nan).sort_values('image_id')
    les = df.groupby('lesion_id', sort=False).agg(images=('image_id', list), dx=('dx', 'first'), age=('age', 'first'),
                                                  sex=('sex', 'first'), localization=('localization', 'first')).reset_index()
    les = les.sample(frac=1, random_state=seed)
    les = les[les.groupby('dx').cumcount() < per_class].sort_values('lesion_id').reset_index(drop=True)
    les['first'], les['none'] = les.images.str[0], 0.
    return les

def _blocks(model, cache, n_images):
    "The input blocks of `model`: one image or all of the lesion's, then the metadata (or a constant column)."
    meta = (['sex', 'localization'], ['age']) if 'metadata' in model else ([], ['none'])
    pref, suff = HAM/'images', '.jpg'
    if model == 'one image' or model.startswith('per-image'): imgs = TabularImageBlock('first', pref=f'{pref}/', suff=suff, cache=cache)[:1]
    else: imgs = ImageBlocks('images', n_images=n_images, pref=f'{pref}/', suff=suff, cache=cache)
    return (*imgs, MetaBlock(*meta, verbose=False))

def _fit(model, train, test, a, cache, n_images):
    "Train `model` on the lesions `train`; its probabilities for the lesions `test`, and the minutes it took."
    per_image = model.startswith('per-image')
    if per_image: train, test_rows = train.explode('images').assign(first=lambda d: d.images), test.explode('images').assign(first=lambda d: d.images)
    else: test_rows = test
    rows = pd.concat([train, test_rows]).reset_index(drop=True)
    dls = DataBlock(blocks=(*_blocks(model, cache, n_images), CategoryBlock), get_y=ColReader('dx'), splitter=IndexSplitter(np.arange(len(train), len(rows))),
                    batch_tfms=aug_transforms(size=a.size, flip_vert=True, max_warp=0)).dataloaders(rows, bs=a.bs, num_workers=0)
    learn = meta_cnn_learner(dls, 'tf_efficientnet_lite0', weights_path=offline_weights('tf_efficientnet_lite0'), metrics=accuracy)
    t0 = time.time()
    epochs = round(a.epochs * train.images.map(len).sum() / len(train)) if model.endswith('as many steps') else a.epochs
    with learn.no_bar(), learn.no_logging(): learn.fine_tune(epochs, a.lr)
    with learn.no_bar(): probs = learn.get_preds(dl=learn.dls.valid)[0].float().numpy()
    if per_image: probs = pd.DataFrame(probs).groupby(test_rows.lesion_id.to_numpy(), sort=False).mean().loc[test.lesion_id].to_numpy()
    return probs, list(learn.dls.vocab), (time.time() - t0)/60, epochs

def summarise(rows):
    "Per model: mean scores with intervals, and the paired lift over 'one image' with its interval and the folds it wins."
    d = pd.DataFrame(rows)
    base = d[d.model == 'one image'].set_index('fold')
    res = {}
    for m,g in d.groupby('model', sort=False):
        g = g.set_index('fold')
        res[m] = {k: _ci(g[k]) for k in ('balanced_accuracy', 'roc_auc')}
        if m != 'one image':
            for k in ('balanced_accuracy', 'roc_auc'):
                diff = g[k] - base.loc[g.index, k]
                res[m][f'{k}_lift'] = _ci(diff) + [int((diff > 0).sum()), len(diff)]
    return res

def to_markdown(res):
    s, a = res['summary'], res['settings']
    f = lambda v: f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"
    lift = lambda v: f"{v[0]:+.3f} [{v[1]:+.3f}, {v[2]:+.3f}], up in {v[3]} of {v[4]}"
    lines = [f"# Several images per lesion on HAM10000 ({res['device']})", '',
             f"{res['n_lesions']:,} lesions ({a['per_class']} per diagnosis at most; {res['n_multi']:,} with 2 to {res['max_images']} images, "
             f"{res['n_images']:,} images), {a['folds']} lesion-grouped folds stratified by diagnosis, each tested once on its lesions. "
             f"`meta_cnn_learner`, pretrained EfficientNet-Lite0 at {a['size']} px, `fine_tune({a['epochs']}, {a['lr']})`, "
             "the same recipe for every model. Means over folds with 95 % t intervals; lifts are paired, fold by fold, over `one image`.", '',
             '| model | balanced accuracy | lift | macro ROC AUC | lift |', '|---|---|---|---|---|']
    for m in MODELS:
        if m not in s: continue
        r = s[m]
        lines.append(f"| {m} | {f(r['balanced_accuracy'])} | {lift(r['balanced_accuracy_lift']) if 'balanced_accuracy_lift' in r else '—'} | "
                     f"{f(r['roc_auc'])} | {lift(r['roc_auc_lift']) if 'roc_auc_lift' in r else '—'} |")
    d = pd.DataFrame(res['rows'])
    short = d[d.model == 'per-image average + metadata'].set_index('fold')
    for m in ('all images + metadata', 'all images + metadata, as many steps'):
        g = d[d.model == m].set_index('fold')
        if len(g) and len(short):
            ba, auc = (_ci(g[k] - short.loc[g.index, k]) for k in ('balanced_accuracy', 'roc_auc'))
            lines += ['', f"`{m}` against the shortcut, paired: balanced accuracy {ba[0]:+.3f} [{ba[1]:+.3f}, {ba[2]:+.3f}], "
                          f"AUC {auc[0]:+.3f} [{auc[1]:+.3f}, {auc[2]:+.3f}], higher AUC in {int((g.roc_auc > short.loc[g.index, 'roc_auc']).sum())} of {len(g)} folds."]
    best = max(s, key=lambda m: s[m]['roc_auc'][0])
    lines += ['', f"Highest mean AUC: **{best}**. Epochs: " + ', '.join(f"{m} {sorted({r.get('epochs', a['epochs']) for r in res['rows'] if r['model'] == m})}" for m in MODELS if m in s)
              + ". Minutes per fold and model: "
              + ', '.join(f"{m} {np.mean([r['minutes'] for r in res['rows'] if r['model'] == m]):.1f}" for m in MODELS if m in s) + '.']
    return '\n'.join(lines) + '\n'

def main(a):
    device = 'gpu' if torch.cuda.is_available() else 'cpu'
    les = load_lesions(a.per_class, a.seed)
    fold = group_folds(les, 'lesion_id', a.folds, a.seed, stratify='dx')
    n_images, cache = int(les.images.map(len).max()), ImageCache(a.size)
    models = [m for m in MODELS if a.models is None or m in a.models]
    def fit(m, les, valid):
        probs, vocab, minutes, epochs = _fit(m, les[~valid], les[valid], a, cache, n_images)
        sc = class_scores(les.dx[valid], probs, vocab)
        return dict(model=m, n_test=int(valid.sum()), minutes=minutes, epochs=epochs, balanced_accuracy=sc['balanced_accuracy'], roc_auc=sc['roc_auc'])
    rows = [dict(fold=k, **r) for m in models for k,r in cross_fit(les, fold, partial(fit, m), seed=a.seed).items()]
    name = OUT/f'views-ham10000-{device}'
    if a.add:      # more models on the same folds: keep the saved rows of the others
        old = json.loads(name.with_suffix('.json').read_text())
        if {k: v for k,v in old['settings'].items() if k not in ('models', 'add')} != {k: v for k,v in vars(a).items() if k not in ('models', 'add')}:
            raise ValueError(f"{name}.json was made with other settings: {old['settings']}")
        rows = [r for r in old['rows'] if r['model'] not in models] + rows
    res = dict(device=device, n_lesions=len(les), n_multi=int((les.images.map(len) > 1).sum()), n_images=int(les.images.map(len).sum()),
               max_images=n_images, settings=vars(a), rows=rows, summary=summarise(rows), threads=torch.get_num_threads())
    name.with_suffix('.json').write_text(json.dumps(res, indent=1))
    name.with_suffix('.md').write_text(to_markdown(res))
    print(to_markdown(res))

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--folds', type=int, default=5); p.add_argument('--per-class', type=int, default=200)
    p.add_argument('--size', type=int, default=96); p.add_argument('--epochs', type=int, default=4)
    p.add_argument('--bs', type=int, default=32); p.add_argument('--lr', type=float, default=3e-3)
    p.add_argument('--seed', type=int, default=0); p.add_argument('--models', nargs='*')
    p.add_argument('--add', action='store_true', help='add the rows of --models to the saved results (same settings)')
    main(p.parse_args())
