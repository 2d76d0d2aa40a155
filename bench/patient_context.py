"""SIIM-ISIC 2020 (half): does a lesion's place among the same patient's other lesions (the "ugly duckling") add to its image?

Groundwork for issue 27, the two-stage design only, measured before the library has a patient-context API.
Stage one: K patient-grouped folds (stratified by the target); each fold's image-only `vision_learner` (pretrained
EfficientNet-Lite0, `--size` px, `fine_tune(--epochs, --lr, lr_mult=1)`) is trained on the other folds and gives its
test fold's melanoma probabilities and pooled body features (embeddings): out-of-fold for every image, from a model
that never saw that image's patient. Stage two: gradient boosting (scikit-learn's HistGradientBoostingClassifier) on
the out-of-fold table, scored over another K patient-grouped folds, with four feature sets:

- the image probability alone;
- + age, sex, site;
- + patient context: the patient's number of images; the image's probability minus the patient's mean, and its rank
  within the patient; the cosine distance of its embedding to the mean of the patient's *other* images, and that
  distance's rank within the patient (missing for a patient with one image);
- + both.

A patient's context comes from out-of-fold values of that patient's images only, all from one stage-one model (a
patient's images are in one fold), so no image's context comes from a model that saw its patient.
ROC AUC per stage-two fold, paired lifts over the probability alone with 95 % t intervals.

Run: .venv/bin/python bench/patient_context.py [--folds 5] [--size 64] [--epochs 4]
Writes bench/results/patient-context-cpu.{json,md}; stage one's table is kept in /tmp (it takes the time).
"""
import argparse, json, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd, torch
from torch import nn
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from fastai.vision.all import DataBlock, CategoryBlock, ColReader, IndexSplitter, set_seed, Learner, Callback
from fastai_meta.all import *
from fastai_meta.compare import image_learner
from lesions import OUT, ci95 as _ci

SIIM = Path(__file__).resolve().parents[2]/'shared'/'data'/'siim-isic-2020-half'

def stage_one(df, fold, k, a, cache):
    "Train image-only on the folds other than `k`; probabilities and embeddings of fold `k`'s images."
    train, test = df[fold != k], df[fold == k]
    rows = pd.concat([train, test]).reset_index(drop=True)
    set_seed(a.seed + k, reproducible=True)
    blocks = TabularImageBlock('image_name', ['sex', 'anatom_site_general_challenge'], ['age_approx'], pref=f'{SIIM}/images/', suff='.jpg', cache=cache)
    dls = DataBlock(blocks=(*(blocks if a.stage_one == 'concat' else blocks[:1]), CategoryBlock), n_inp=2 if a.stage_one == 'concat' else 1,
                    get_y=ColReader('label'), splitter=IndexSplitter(np.arange(len(train), len(rows))), dl_type=MetaDL).dataloaders(rows, bs=a.bs, num_workers=0)
    w = offline_weights('tf_efficientnet_lite0')
    learn = (meta_cnn_learner(dls, 'tf_efficientnet_lite0', fusion='concat', weights_path=w) if a.stage_one == 'concat' else
             image_learner(dls, 'tf_efficientnet_lite0', weights_path=w))
    t0 = time.time()
    with learn.no_bar(), learn.no_logging(): learn.fine_tune(a.epochs, a.lr, lr_mult=1)
    feats = []
    if a.stage_one == 'image': hook = learn.model[1][1].register_forward_hook(lambda m, i, o: feats.append(o.detach().float().cpu()))  # pooled body features
    else: hook = learn.model[3][-1].register_forward_pre_hook(lambda m, i: feats.append(i[0].detach().float().cpu()))   # the head's last layer's input
    with learn.no_bar(): probs = learn.get_preds(dl=learn.dls.valid)[0].float()
    hook.remove()
    mel = list(learn.dls.vocab).index('mel')
    return dict(image_name=test.image_name.to_numpy(), p=probs[:, mel].numpy(), emb=torch.cat(feats).numpy(), minutes=(time.time() - t0)/60)

def context(tab, emb):
    "Patient-context features of each image, from its patient's images only (`tab` has `patient_id` and `p`)."
    g = tab.groupby('patient_id')
    n = g.p.transform('size').to_numpy()
    res = pd.DataFrame(dict(n_images=n, p_minus_mean=tab.p - g.p.transform('mean'), p_rank=g.p.rank(pct=True)), index=tab.index)
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    dist = np.full(len(tab), np.nan)
    for _,idx in g.indices.items():
        if len(idx) < 2: continue                       # one image: no other to compare with
        s = e[idx].sum(0)
        others = (s[None] - e[idx]) / (len(idx) - 1)    # the mean of the patient's other images
        dist[idx] = 1 - (e[idx] * others).sum(1) / np.linalg.norm(others, axis=1)
    res['dist_others'] = dist
    res['dist_rank'] = pd.Series(dist, index=tab.index).groupby(tab.patient_id).rank(pct=True)
    return res

META = ['age_approx', 'sex_code', 'site_code']
CONTEXT = ['n_images', 'p_minus_mean', 'p_rank', 'dist_others', 'dist_rank']
SETS = {'image probability': ['p'], '+ age, sex, site': ['p', *META], '+ patient context': ['p', *CONTEXT], '+ both': ['p', *META, *CONTEXT]}

def stage_two(tab, a):
    "AUC of gradient boosting on each feature set over K patient-grouped folds of the out-of-fold table."
    fold = group_folds(tab, 'patient_id', a.folds, a.seed + 1, stratify='target')
    rows = []
    for k in range(a.folds):
        tr, te = fold != k, fold == k
        for name, cols in SETS.items():
            m = HistGradientBoostingClassifier(max_iter=200, learning_rate=0.05, max_leaf_nodes=15, random_state=a.seed)
            m.fit(tab.loc[tr, cols], tab.target[tr])
            rows.append(dict(fold=k, features=name, roc_auc=float(roc_auc_score(tab.target[te], m.predict_proba(tab.loc[te, cols])[:, 1]))))
    return rows

def to_markdown(res):
    a, d = res['settings'], pd.DataFrame(res['stage_two'])
    base = d[d.features == 'image probability'].set_index('fold').roc_auc
    lines = [f"# Patient context on SIIM-ISIC 2020 (half) ({res['device']})", '',
             f"{res['n_images']:,} images of {res['n_patients']:,} patients ({res['n_pos']} melanomas). Stage one: image-only `vision_learner`, "
             f"pretrained EfficientNet-Lite0 at {a['size']} px, `fine_tune({a['epochs']}, {a['lr']}, lr_mult=1)`, {a['folds']} patient-grouped folds: "
             f"out-of-fold AUC of the image probability {res['stage_one_auc']:.3f}. Stage two: gradient boosting on the out-of-fold table, "
             f"{a['folds']} other patient-grouped folds; means over folds with 95 % t intervals, lifts paired over the probability alone.", '',
             '| stage two on | ROC AUC | paired lift | folds up |', '|---|---|---|---|']
    for name in SETS:
        g = d[d.features == name].set_index('fold').roc_auc
        m = _ci(g)
        if name == 'image probability': lines.append(f"| {name} | {m[0]:.3f} [{m[1]:.3f}, {m[2]:.3f}] | — | — |")
        else:
            l = _ci(g - base)
            lines.append(f"| {name} | {m[0]:.3f} [{m[1]:.3f}, {m[2]:.3f}] | {l[0]:+.3f} [{l[1]:+.3f}, {l[2]:+.3f}] | {int((g > base).sum())} of {len(g)} |")
    lines += ['', f"Stage one took {np.mean(res['minutes']):.1f} minutes per fold."]
    return '\n'.join(lines) + '\n'

def main(a):
    device = 'gpu' if torch.cuda.is_available() else 'cpu'
    df = pd.read_csv(SIIM/'train.csv')
    if a.max_patients: df = df[df.patient_id.isin(df.patient_id.drop_duplicates().sample(a.max_patients, random_state=a.seed))].reset_index(drop=True)
    df['label'] = np.where(df.target == 1, 'mel', 'other')
    fold = group_folds(df, 'patient_id', a.folds, a.seed, stratify='target')
    keep = Path(f'/tmp/patient-context-stage-one-{a.size}-{a.epochs}-{a.seed}-{a.folds}-{a.max_patients}{"" if a.stage_one == "image" else "-" + a.stage_one}.npz')
    if keep.exists(): z = np.load(keep, allow_pickle=True); parts = [dict(image_name=z['names'], p=z['p'], emb=z['emb'])]; minutes = list(z['minutes'])
    else:
        cache, parts, minutes = ImageCache(a.size), [], []
        for k in range(a.folds):
            parts.append(stage_one(df, fold, k, a, cache)); minutes.append(parts[-1]['minutes'])
            print(json.dumps(dict(fold=k, minutes=minutes[-1], auc=float(roc_auc_score(df.set_index('image_name').target[parts[-1]['image_name']], parts[-1]['p'])))), flush=True)
        np.savez(keep, names=np.concatenate([o['image_name'] for o in parts]), p=np.concatenate([o['p'] for o in parts]),
                 emb=np.concatenate([o['emb'] for o in parts]), minutes=np.array(minutes))
    names, p, emb = (np.concatenate([o[k] for o in parts]) for k in ('image_name', 'p', 'emb'))
    tab = df.set_index('image_name').loc[names].reset_index()
    tab['p'] = p
    tab['sex_code'] = tab.sex.map({'male': 0, 'female': 1})
    tab['site_code'] = pd.factorize(tab.anatom_site_general_challenge)[0].astype(float)
    tab.loc[tab.anatom_site_general_challenge.isna(), 'site_code'] = np.nan
    tab = pd.concat([tab, context(tab, emb)], axis=1)
    rows = stage_two(tab, a)
    res = dict(device=device, n_images=len(tab), n_patients=int(tab.patient_id.nunique()), n_pos=int(tab.target.sum()), settings=vars(a),
               stage_one_auc=float(roc_auc_score(tab.target, tab.p)), minutes=[float(m) for m in minutes], stage_two=rows)
    name = OUT/f'patient-context-{device}'
    name.with_suffix('.json').write_text(json.dumps(res, indent=1))
    name.with_suffix('.md').write_text(to_markdown(res))
    print(to_markdown(res))

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--folds', type=int, default=5); p.add_argument('--size', type=int, default=64)
    p.add_argument('--epochs', type=int, default=4); p.add_argument('--lr', type=float, default=2e-3)
    p.add_argument('--bs', type=int, default=64); p.add_argument('--seed', type=int, default=0)
    p.add_argument('--stage-one', default='image', choices=['image', 'concat'], help="stage one's model: image only, or image + age, sex, site (concat fusion)")
    p.add_argument('--max-patients', type=int, default=0, help='a random subset of patients (0: all), for a quick check')
    main(p.parse_args())
