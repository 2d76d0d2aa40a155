"""HAM10000: how much can age, sex and site add to a pretrained image model? A check on `lesions.py`'s lifts.

On the same lesion-grouped folds and with the same recipe as `lesions.py --pretrained`, per fold:
- the metadata alone: gradient boosting on age, sex and site (training fold only);
- the pretrained image-only model (`vision_learner`);
- the two combined without any training on the held-out fold, as a product of experts:
  p(y | image, metadata) ∝ p(y | image) · p(y | metadata) / p(y), with p(y) the training fold's class shares
  (exact if image and metadata were independent given the diagnosis and both models calibrated);
- `meta_cnn_learner` with `concat`, which learns the combination end to end.
If the product lifts the image model and concat does not, the metadata carries information the network
fails to use; if neither lifts it, the metadata has little left to add to this image model.

Run: .venv/bin/python bench/complement.py [--per-class 300] [--size 128] [--epochs 5] [--lr 3e-3] [--lr-mult 1]
Writes bench/results/complement-<cpu|gpu>.json and .md.
"""
import argparse, json, warnings
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from fastai.vision.all import *
from fastai_meta.all import *
from lesions import OUT, load_ham, lesion_folds, trained, paired_lifts, summary, _pm

BASE, CAT, CONT = 'image only (vision_learner)', ['sex', 'localization'], ['age']

def meta_probs(df):
    "Class probabilities of the held-out rows from gradient boosting on the metadata of the training rows, with the classes."
    X = df[CONT + CAT].copy()
    for c in CAT: X[c] = X[c].astype('category').cat.codes      # -1: missing
    tr, va = ~df.is_valid, df.is_valid
    m = HistGradientBoostingClassifier(categorical_features=[len(CONT) + i for i in range(len(CAT))], max_iter=100, learning_rate=0.05,
                                       random_state=0).fit(X[tr], df.dx[tr])     # unweighted: p(y | metadata), prior included
    return m.predict_proba(X[va]), list(m.classes_)

def scores(y, p, vocab):
    "Balanced accuracy and macro one-vs-rest ROC AUC of probabilities `p` (columns in `vocab` order) for labels `y`."
    return dict(balanced_accuracy=float(balanced_accuracy_score(y, np.array(vocab)[p.argmax(1)])),
                macro_auc=float(roc_auc_score(y, p, multi_class='ovr', labels=vocab)))

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--folds', type=int, default=3); p.add_argument('--per-class', type=int, default=300)
    p.add_argument('--size', type=int, default=128); p.add_argument('--epochs', type=int, default=5)
    p.add_argument('--bs', type=int, default=32); p.add_argument('--lr', type=float, default=3e-3)
    p.add_argument('--lr-mult', type=float, default=1); p.add_argument('--workers', type=int, default=0)
    p.add_argument('--seed', type=int, default=0); p.add_argument('--from-json', help='only rewrite the table from this json')
    p.add_argument('--save-probs', help='also keep the networks\' held-out probabilities in this .npz file')
    a = p.parse_args()
    if a.from_json: return write_md(json.loads(Path(a.from_json).read_text()))
    a.device, a.pretrained = 'gpu' if torch.cuda.is_available() else 'cpu', True
    a.arch = a.arch_name = 'tf_efficientnet_lite0'
    a.weights = offline_weights(a.arch)
    df = load_ham(a.per_class, a.seed)
    df['fold'] = lesion_folds(df, a.folds, a.seed)
    rows, kept = [], {}
    for k in range(a.folds):
        fdf = df.assign(is_valid=df.fold == k)
        y = fdf.dx[fdf.is_valid].values
        pm, vocab = meta_probs(fdf)
        prior = fdf.dx[~fdf.is_valid].value_counts(normalize=True)[vocab].values
        probs = {'metadata only (gradient boosting)': pm}
        for name in (BASE, 'concat'):
            set_seed(a.seed + k, reproducible=True)
            learn = trained(name, fdf, a)
            assert list(learn.dls.vocab) == vocab, (list(learn.dls.vocab), vocab)
            with learn.no_bar(): probs[name] = kept[f'{k}/{name}'] = learn.get_preds(dl=learn.dls.valid)[0].numpy()
        prod = probs[BASE] * pm / prior
        probs['image × metadata (product)'] = prod / prod.sum(1, keepdims=True)
        for name,pr in probs.items(): rows.append(dict(fold=k, model=name, n_valid=len(y), **scores(y, pr, vocab))); print(rows[-1], flush=True)
    res = dict({k:v for k,v in vars(a).items() if k not in ('arch', 'weights')}, n_images=len(df), rows=rows,
               threads=torch.get_num_threads(), torch=torch.__version__, gpu=torch.cuda.get_device_name() if a.device == 'gpu' else None)
    if a.save_probs: np.savez_compressed(a.save_probs, **kept)
    OUT.mkdir(exist_ok=True)
    (OUT/f'complement-{a.device}.json').write_text(json.dumps(res, indent=2))
    write_md(res)

def write_md(res):
    "Write the results table of `res` next to its json."
    s, lifts = summary(res), paired_lifts(res, BASE).groupby('model', sort=False).agg(['mean', 'std'])
    where = res['gpu'] or f"CPU ({res['threads']} threads), torch {res['torch']}"
    md = [f"HAM10000, {res['n_images']} images (at most {res['per_class']} per diagnosis), {res['folds']} lesion-grouped folds (those of "
          f"`lesions.py`); networks: {res['arch_name']} with ImageNet weights at {res['size']} px, `fine_tune({res['epochs']}, {res['lr']:g}, "
          f"lr_mult={res['lr_mult']:g})`, on {where}. The product needs no training on the held-out fold. Lift: paired, against image only, "
          "in points, mean ± std over folds.", '',
          '| model | balanced accuracy | macro ROC AUC | lift, balanced accuracy | lift, macro AUC |', '|---|---:|---:|---:|---:|']
    for m,r in s.iterrows():
        l = lifts.loc[m]
        md.append(f"| {m} | {_pm(r[('balanced_accuracy','mean')], r[('balanced_accuracy','std')])} | {_pm(r[('macro_auc','mean')], r[('macro_auc','std')])} |"
                  + (' – | – |' if m == BASE else f" {_pm(l[('balanced_accuracy','mean')], l[('balanced_accuracy','std')], 100, '+.1f')} |"
                                                    f" {_pm(l[('macro_auc','mean')], l[('macro_auc','std')], 100, '+.1f')} |"))
    (OUT/f"complement-{res['device']}.md").write_text('\n'.join(md) + '\n')
    print('\n'.join(md))

if __name__ == '__main__': main()
