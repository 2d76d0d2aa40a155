"""SIIM-ISIC 2020 (half): the set-aware design of patient context, trained end to end (issue 27's second design).

Each image's pooled body features `f` go to the head with `f - m` and a flag, where `m` is the mean features of the
*same patient's other images in the batch*. Training batches are drawn by patient (patients in random order, each
patient's images together, at most `--per-patient` of them per epoch), so most images have others of their patient in
their batch. At prediction time `m` is the mean over all of the patient's other images (two passes: features, then
the head). Same folds, body (pretrained EfficientNet-Lite0 at `--size` px), recipe (`fine_tune(--epochs, --lr,
lr_mult=1)`) and seeds as bench/patient_context.py's stage one, so its out-of-fold probabilities pair with the image
model's and the two-stage stack's.

Run: .venv/bin/python bench/patient_set.py   (writes /tmp/patient-context-stage-one-...-set.npz; patient_context.py scores it)
"""
import argparse, json, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd, torch
from torch import nn
from sklearn.metrics import roc_auc_score
from fastai.vision.all import *
from fastai_meta.all import *
from fastai_meta.learner import _timm_body
from patient_context import SIIM

class PatientDL(TfmdDL):
    "Shuffled batches that keep a patient's images together (patients in random order, at most `per_patient` images each per epoch)."
    def get_idxs(self):
        idxs = super().get_idxs()
        if not self.shuffle: return idxs
        g = self.groups[idxs]
        pos = pd.Series(np.arange(len(idxs))).groupby(g).cumcount().to_numpy()        # place within its patient (already shuffled)
        keep = pos < self.per_patient
        order = np.random.permutation(g.max() + 1)
        return list(np.array(idxs)[keep][np.lexsort((pos[keep], order[g[keep]]))])

class SetModel(Module):
    "Body, concat pooling, then a head on [features, features - mean of the patient's other images, has others]."
    def __init__(self, body, nf, n_out=2):
        self.body, self.pool = body, nn.Sequential(AdaptiveConcatPool2d(), Flatten())
        self.head = create_head(4*nf + 1, n_out, pool=False)
    def features(self, x): return self.pool(self.body(x))
    def head_of(self, f, m, has): return self.head(torch.cat([f, (f - m)*has, has], 1))
    def forward(self, x, g):
        f = self.features(x)
        same = (g[:, None] == g[None, :]).float(); same.fill_diagonal_(0)
        n = same.sum(1, keepdim=True)
        return self.head_of(f, same @ f / n.clamp(min=1), (n > 0).float())

def set_learner(dls, a):
    body, nf, cfg = _timm_body('tf_efficientnet_lite0', True, offline_weights('tf_efficientnet_lite0'), 3)
    dls.add_tfms([Normalize.from_stats(cfg['mean'], cfg['std'])], 'after_batch')
    model = SetModel(body, nf, 2)
    return Learner(dls, model, loss_func=CrossEntropyLossFlat(), splitter=lambda m: [params(m.body), params(m.pool) + params(m.head)])

def predict(learn, dl, groups):
    "Two passes: every image's features, then the head with the mean of all of the patient's other images."
    model = learn.model.eval()
    with torch.no_grad():
        f = torch.cat([model.features(b[0]) for b in dl])
        g = torch.as_tensor(pd.factorize(groups)[0])
        total = torch.zeros(int(g.max()) + 1, f.shape[1]).index_add_(0, g, f)
        n = torch.bincount(g).float()[g][:, None]
        m = (total[g] - f) / (n - 1).clamp(min=1)
        return model.head_of(f, m, (n > 1).float()).softmax(1).numpy(), f.numpy()

def stage_one(df, fold, k, a, cache):
    train, test = df[fold != k], df[fold == k]
    rows = pd.concat([train, test]).reset_index(drop=True)
    rows['pid'] = pd.factorize(rows.patient_id)[0]
    set_seed(a.seed + k, reproducible=True)
    img = TabularImageBlock('image_name', pref=f'{SIIM}/images/', suff='.jpg', cache=cache)[0]
    grp = TransformBlock(type_tfms=[ColReader('pid'), lambda v: tensor(int(v))])
    dls = DataBlock(blocks=(img, grp, CategoryBlock), n_inp=2, get_y=ColReader('label'), splitter=IndexSplitter(np.arange(len(train), len(rows))),
                    dl_type=PatientDL).dataloaders(rows, bs=a.bs, num_workers=0)
    dls.train.groups, dls.train.per_patient = rows.pid.to_numpy()[:len(train)], a.per_patient
    learn = set_learner(dls, a)
    t0 = time.time()
    with learn.no_bar(), learn.no_logging(): learn.fine_tune(a.epochs, a.lr, lr_mult=1)
    probs, emb = predict(learn, dls.valid.new(shuffle=False, drop_last=False), test.patient_id.to_numpy())
    mel = list(dls.vocab).index('mel')
    return dict(image_name=test.image_name.to_numpy(), p=probs[:, mel], emb=emb, minutes=(time.time() - t0)/60)

def main(a):
    df = pd.read_csv(SIIM/'train.csv')
    if a.max_patients: df = df[df.patient_id.isin(df.patient_id.drop_duplicates().sample(a.max_patients, random_state=a.seed))].reset_index(drop=True)
    df['label'] = np.where(df.target == 1, 'mel', 'other')
    fold = group_folds(df, 'patient_id', a.folds, a.seed, stratify='target')
    cache, parts = ImageCache(a.size), []
    for k in range(a.folds):
        parts.append(stage_one(df, fold, k, a, cache))
        auc = roc_auc_score(df.set_index('image_name').target[parts[-1]['image_name']], parts[-1]['p'])
        print(json.dumps(dict(fold=k, minutes=parts[-1]['minutes'], auc=float(auc))), flush=True)
    keep = Path(f'/tmp/patient-context-stage-one-{a.size}-{a.epochs}-{a.seed}-{a.folds}-{a.max_patients}-set.npz')
    np.savez(keep, names=np.concatenate([o['image_name'] for o in parts]), p=np.concatenate([o['p'] for o in parts]),
             emb=np.zeros((sum(len(o['p']) for o in parts), 1)), minutes=np.array([o['minutes'] for o in parts]))
    print('written', keep)

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--folds', type=int, default=5); p.add_argument('--size', type=int, default=64)
    p.add_argument('--epochs', type=int, default=4); p.add_argument('--lr', type=float, default=2e-3)
    p.add_argument('--bs', type=int, default=64); p.add_argument('--seed', type=int, default=0)
    p.add_argument('--per-patient', type=int, default=1000000, help='at most this many of a patient\'s images per training epoch')
    p.add_argument('--max-patients', type=int, default=0, help='a random subset of patients (0: all), for a quick check')
    main(p.parse_args())
