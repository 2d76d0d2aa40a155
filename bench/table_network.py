"""Does the fused network learn what the table holds? `meta_cnn_learner`'s defaults against the old ones, on the same folds.

- `'meta'` (`make_synthetic`: a rule on age and site decides the label, the images are noise) and `'xor'` (the label is
  the image's tint flipped by a flag: both inputs needed): 300 rows, ResNet-18 from scratch at 32 px, 5 epochs
  (`fit_one_cycle`), 3 folds of rows × `--seeds` seeds; balanced accuracy of each fold's held-out rows.
- `--ham N`: also HAM10000 (7 diagnoses, at most N images each, lesion-grouped folds), pretrained EfficientNet-Lite0 at
  64 px, 3 epochs (`fine_tune`), the benchmarks' recipe; balanced accuracy.

Settings: `old` (before this benchmark: no wide path), `wide` (the default now: a linear path from the encoded metadata,
`MetaModel.wide_gain`), `wide + image_p` (and half the rows' image features dropped in training). Paired differences
from `old` by fold, with the mean and its 95 % t interval.

Run: .venv/bin/python bench/table_network.py [--seeds 2] [--ham 90]   Writes fastai_meta/results/table-network-cpu.{json,md}.
"""
import argparse, json, tempfile, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
import numpy as np, torch
from fastai.vision.all import *
from sklearn.metrics import balanced_accuracy_score
from fastai_meta.all import *
from fastai_meta.crossfit import fit_fold
from lesions import HAM_COLS, load_ham, recipe, save

SETTINGS = {'old': dict(wide=False), 'wide': dict(wide=True), 'wide + image_p': dict(wide=True, image_p=0.5)}
SYNTH = dict(meta=(['site'], ['age']), xor=(['flag'], []))

def fold_scores(df, folds, seed, epochs, **spec):
    "Balanced accuracy of each fold's held-out rows under `fold_learner(**spec)`, trained by `fit_fold`."
    runs = cross_fit(df, folds, partial(fit_fold, partial(fold_learner, model='concat', **spec), epochs=epochs), seed=seed, quiet=True)
    return [float(balanced_accuracy_score(df[spec.get('label_col', 'label')][folds == k].astype(str), np.array(r['vocab'])[np.asarray(r['probs']).argmax(1)]))
            for k,r in runs.items()]

def main(a):
    rows = []
    for task, (cats, conts) in SYNTH.items():
        path = Path(tempfile.mkdtemp())
        df = make_synthetic(path, n=300, task=task, size=32, seed=0)
        for s in range(a.seeds):
            folds = row_folds(df, 3, s, stratify='label')
            for name, kw in SETTINGS.items():
                sc = fold_scores(df, folds, s, 5, path=path, folder='images', cat_names=cats, cont_names=conts, arch='resnet18', pretrained=False, size=32, **kw)
                rows += [dict(data=task, setting=name, seed=s, fold=k, balanced_accuracy=v) for k,v in enumerate(sc)]
                print(task, name, s, np.round(sc, 3), flush=True)
    if a.ham:
        df = load_ham(a.ham, 0)
        folds = row_folds(df, 3, 0, 'lesion_id', stratify='dx')
        for name, kw in SETTINGS.items():
            sc = fold_scores(df, folds, 0, 3, **HAM_COLS, exclude=['lesion_id'],
                             **recipe(64, 32), **kw)
            rows += [dict(data='ham10000', setting=name, seed=0, fold=k, balanced_accuracy=v) for k,v in enumerate(sc)]
            print('ham10000', name, np.round(sc, 3), flush=True)
    res = dict(rows=rows, seeds=a.seeds, ham=a.ham, threads=torch.get_num_threads(), torch=torch.__version__)
    save('table-network-cpu', res, to_markdown(res))

def to_markdown(res):
    "The table: per data set and setting, mean balanced accuracy, the lowest fold, and the paired difference from `old`."
    d = pd.DataFrame(res['rows'])
    md = [f"Balanced accuracy of the fused network (concat) per held-out fold, CPU ({res['threads']} threads); the difference from `old` is paired "
          "by fold: mean [95 % t interval], folds better. Synthetic tasks: 300 rows, ResNet-18 from scratch, 32 px, 5 epochs, 3 folds × "
          f"{res['seeds']} seeds." + (f" HAM10000: at most {res['ham']} images per diagnosis, 3 lesion-grouped folds, EfficientNet-Lite0 (ImageNet), 64 px, 3 epochs." if res['ham'] else ''),
          '', '| data | setting | balanced accuracy | lowest fold | minus old |', '|---|---|---|---|---|']
    for data in d.data.unique():
        base = d[(d.data == data) & (d.setting == 'old')].set_index(['seed', 'fold']).balanced_accuracy
        for name in SETTINGS:
            v = d[(d.data == data) & (d.setting == name)].set_index(['seed', 'fold']).balanced_accuracy
            st = paired_stats((v - base).to_numpy())
            diff = '' if name == 'old' else f"{st['mean']:+.3f} [{st['low']:+.3f}, {st['high']:+.3f}], {st['wins']} of {st['n']}"
            md.append(f"| {data} | `{name}` | {v.mean():.3f} | {v.min():.3f} | {diff} |")
    return '\n'.join(md) + '\n'

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--seeds', type=int, default=2); p.add_argument('--ham', type=int, default=90, help='images per diagnosis of HAM10000 (0: leave it out)')
    main(p.parse_args())
