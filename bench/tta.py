"""HAM10000: does test-time augmentation help a metadata model? The same trained model scored with and without it, fold by fold.

For each of K lesion-grouped folds (stratified by diagnosis), concat `meta_cnn_learner` (pretrained EfficientNet-Lite0, the
`fit_recipe` of `meta_compare`, flips and rotations) is trained on the other folds; its held-out fold is predicted twice, with
`get_preds` and with fastai's `learn.tta()` (4 augmented passes, mixed with the plain one as fastai does). The paired
differences (TTA minus plain) of macro ROC AUC and balanced accuracy get a 95 % t interval widened by Nadeau and Bengio's correction.

Run: .venv/bin/python bench/tta.py [--folds 3] [--per-class 300] [--size 128] [--epochs 5]
Writes fastai_meta/results/tta-ham10000-<cpu|gpu>.{json,md}.
"""
import json, time, warnings
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd, torch
from fastai.vision.all import partial, set_seed
from fastai_meta.all import *
from fastai_meta.crossfit import fit_fold, fold_outputs
from lesions import DEVICE, HAM_COLS, load_ham, parser, recipe, save

def main(a):
    df = load_ham(a.per_class, a.seed)
    folds = row_folds(df, a.folds, a.seed, 'lesion_id', stratify='dx')
    build = partial(fold_learner, model='concat', **HAM_COLS, **recipe(a.size, a.bs))
    rows = []
    for k in range(a.folds):
        set_seed(a.seed + k, reproducible=True)
        t0 = time.time()
        run = fit_fold(build, df, folds == k, a.epochs, a.lr, keep=True)
        learn, y = run['learn'], df.dx[folds == k].to_numpy()
        t1 = time.time()
        tta, _ = fold_outputs(learn, learn.dls.valid, tta=True)
        scores = {name: class_scores(y, p, run['vocab']) for name, p in (('plain', run['probs']), ('tta', tta))}
        rows.append(dict(fold=k, n_valid=int((folds == k).sum()), minutes_train=(t1 - t0)/60, minutes_tta=(time.time() - t1)/60,
                         **{f'{n}_{m}': scores[n][m] for n in scores for m in ('roc_auc', 'balanced_accuracy')}))
        print(json.dumps(rows[-1]), flush=True)
    d = pd.DataFrame(rows)
    frac = float(np.mean(d.n_valid / len(df)))           # the held-out share, for the correction
    summary = {m: paired_stats(d[f'tta_{m}'] - d[f'plain_{m}'], frac) for m in ('roc_auc', 'balanced_accuracy')}
    res = dict(device=DEVICE, n_images=len(df), settings=vars(a), rows=rows, summary=summary, test_frac=frac,
               threads=torch.get_num_threads())
    save(f'tta-ham10000-{DEVICE}', res, to_markdown(res))

def to_markdown(res):
    s, a, d = res['summary'], res['settings'], pd.DataFrame(res['rows'])
    f = lambda m: f"{d[f'plain_{m}'].mean():.3f} | {d[f'tta_{m}'].mean():.3f} | {s[m]['mean']:+.4f} [{s[m]['low']:+.4f}, {s[m]['high']:+.4f}], better in {s[m]['wins']} of {s[m]['n']} folds"
    return '\n'.join([f"# Test-time augmentation on HAM10000 ({res['device']})", '',
        f"{a['folds']} lesion-grouped folds of {res['n_images']:,} images ({a['per_class']} per diagnosis at most, {a['size']} px); concat `meta_cnn_learner` "
        f"(pretrained EfficientNet-Lite0, `fine_tune({a['epochs']}, {a['lr']})`, flips and rotations), each fold's model scored on its held-out fold "
        "with `get_preds` and with `learn.tta()` (4 augmented passes, fastai's mix with the plain pass). Paired change: TTA minus plain, "
        "mean [95 % t interval with Nadeau and Bengio's correction].", '',
        '| metric | plain | TTA | change (paired) |', '|---|---|---|---|',
        f"| ROC AUC (macro, one-vs-rest) | {f('roc_auc')} |", f"| balanced accuracy | {f('balanced_accuracy')} |", '',
        d[['fold', 'n_valid', 'plain_roc_auc', 'tta_roc_auc', 'plain_balanced_accuracy', 'tta_balanced_accuracy']].round(4).to_markdown(index=False), '',
        f"Time per fold: {d.minutes_train.mean():.1f} minutes to train, {60*d.minutes_tta.mean():.0f} s for the TTA predictions "
        f"({res['threads']} threads)."]) + '\n'

if __name__ == '__main__': main(parser(folds=3).parse_args())
