"""SIIM-ISIC 2020 (half): does a lesion's place among the same patient's other lesions (the "ugly duckling") add to its image?

Stage one (`--stage-one image|concat`, kept in /tmp): pretrained EfficientNet-Lite0 image-only or concat models cross-fitted
over K patient-grouped folds (the library's `cross_fit`), so every image's melanoma probability and embedding come from a
model that never saw its patient. Stage two, on that out-of-fold table, fitted and scored on K other patient-grouped folds:
each design of `DESIGNS`. ROC AUC per fold, paired lifts over image only with t and Nadeau-Bengio intervals; seeds 1 to 3
repeat the stage two over other folds. Rows of the results file made by removed code: fastai_meta/results/PROVENANCE.md.

Run: .venv/bin/python bench/patient_context.py --stage-one image; ... --stage-one concat; then with no --stage-one
Writes fastai_meta/results/patient-context-cpu.{json,md}.
"""
import json, time, warnings
from functools import partial
from pathlib import Path
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd, torch
from sklearn.metrics import roc_auc_score
from fastai_meta.all import *
from fastai_meta.context import fit_stage_two
from fastai_meta.crossfit import IMAGE, fit_fold
from lesions import DEVICE, SIIM_COLS, interval as _ci, parser, recipe, save


def stage_one(df, fold, a, kind):
    "Out-of-fold melanoma probabilities and embeddings of every image, from `kind` ('image' or 'concat') models cross-fitted over the patient folds (the library's `cross_fit`, `fold_learner`, `fit_recipe`)."
    build = partial(fold_learner, model=IMAGE if kind == 'image' else 'concat', **dict(SIIM_COLS, label_col='label'),
                    **recipe(a.size, a.bs, aug=False, cache=kind == 'concat'))
    t0 = time.time()
    runs = cross_fit(df, fold, partial(fit_fold, build, epochs=a.epochs, lr=a.lr, embeddings=True), seed=a.seed)
    mel = runs[0]['vocab'].index('mel')
    return dict(names=df.image_name.to_numpy(), p=out_of_fold(runs, fold)[:, mel], emb=out_of_fold(runs, fold, 'emb'), minutes=[(time.time() - t0)/60/len(runs)])

DESIGNS = {   # name: (stage one's table, stage two); 'raw': the stage-one model's own probability
    'image only (vision_learner)': ('image', 'raw'),
    'metadata fusion alone (meta_cnn_learner concat)': ('concat', 'raw'),
    'two-stage: concat + context, logistic regression (context_learner)': ('concat', 'lr'),
    'two-stage: image only + context, logistic regression': ('image', 'lr'),
}   # the gradient-boosting stage two, which lost to this logistic regression, is in the results file only (fastai_meta/results/PROVENANCE.md)
BASE = 'image only (vision_learner)'
SHIPPED = 'two-stage: concat + context, logistic regression (context_learner)'
FUSION = 'metadata fusion alone (meta_cnn_learner concat)'

def load_table(df, a, kind):
    "Stage one's out-of-fold table of `kind` ('image' or 'concat', kept in /tmp): image_name, patient_id, target, p and the context features (`patient_context`), or None."
    keep = Path(f'/tmp/patient-context-stage-one-{a.size}-{a.epochs}-{a.seed}-{a.folds}-{a.max_patients}{"" if kind == "image" else "-" + kind}.npz')
    if not keep.exists(): return None
    z = np.load(keep, allow_pickle=True)
    tab = df.set_index('image_name').loc[z['names']].reset_index()
    tab['p'] = z['p']
    ctx = patient_context(tab.patient_id, tab.p.to_numpy()[:, None], z['emb'])
    return tab, ctx, [float(m) for m in z['minutes']]

def stage_two(tabs, a, seed):
    "Each design's ROC AUC on each of K patient-grouped folds of the out-of-fold table (stage twos fitted on the other folds), and the shipped design's probabilities."
    names = tabs['image'][0].image_name
    for t,_,_ in (v for v in tabs.values() if v is not None): assert (t.image_name.to_numpy() == names.to_numpy()).all()
    fold = group_folds(tabs['image'][0], 'patient_id', a.folds, seed, stratify='target')
    rows, shipped = [], np.full(len(names), np.nan)
    for k in range(a.folds):
        tr, te = fold != k, fold == k
        for name,(kind,how) in DESIGNS.items():
            if tabs.get(kind) is None: continue
            tab, ctx, _ = tabs[kind]
            y = tab.target.to_numpy()
            if how == 'raw': p = tab.p.to_numpy()[te]
            else:
                scaler, lr = fit_stage_two(ctx[tr].assign(fold=0), y[tr], seed=a.seed)
                p = lr.predict_proba(scaler.transform(ctx[te].to_numpy()))[:, 1]
                if name == SHIPPED: shipped[te] = p
            rows.append(dict(seed=seed, fold=k, design=name, roc_auc=float(roc_auc_score(y[te], p))))
    return rows, shipped

def lifts(d, name, base=BASE):
    "Paired lift of `name` over `base` per fold: the t interval over folds, and the interval widened for overlapping training sets (Nadeau and Bengio)."
    g, b = (d[d.design == n].set_index(['seed', 'fold']).roc_auc for n in (name, base))
    diff = (g - b).to_numpy()
    return dict(mean=float(diff.mean()), t=[float(x) for x in _ci(diff)[1:]], corrected=paired_stats(diff, test_frac=1/(d.fold.max() + 1)),
                up=int((diff > 0).sum()), n=len(diff))

def examples(tab, shipped, n=3):
    "Patients of the first seed's stage two whose melanoma moved most in the ranking of all images (up, and the one it moved down most): their images' probabilities."
    t = tab.assign(p_context=shipped, rank_image=tab.p.rank(pct=True), rank_context=pd.Series(shipped).rank(pct=True))
    mel = t[t.target == 1].assign(change=lambda x: x.rank_context - x.rank_image)
    mel = mel[mel.patient_id.map(t.patient_id.value_counts()).between(3, 12)]
    chosen = list(mel.nlargest(n, 'change').patient_id) + list(mel.nsmallest(1, 'change').patient_id)
    return [dict(patient_id=pid, images=[dict(image_name=r.image_name, target=int(r.target), p_image=round(float(r.p), 4), p_context=round(float(r.p_context), 4),
                                              rank_image=round(float(r.rank_image), 4), rank_context=round(float(r.rank_context), 4))
                                         for r in t[t.patient_id == pid].itertuples()]) for pid in dict.fromkeys(chosen)]

def by_images(tab, p_image, shipped):
    "ROC AUC of the image-only probabilities and of the shipped design's, per number of images of the patient (the library's `subgroup_report`)."
    score = lambda i: dict(n_pos=int(tab.target[i].sum()), **{k: float(roc_auc_score(tab.target[i], p[i])) if tab.target[i].nunique() > 1 else float('nan')
                                                              for k,p in (('image', p_image), ('context', shipped))})
    bins = ['1', '2-3', '4-7', '8-15', '16-31', '32+']
    rep = subgroup_report(tab, ['images'], score, extra={'images': (images_per_patient(tab.patient_id), bins)}, overall=False)
    return rep.dropna().to_dict('records')

def to_markdown(res):
    a, d = res['settings'], pd.DataFrame(res['stage_two'])
    first = d[d.seed == res['seeds'][0]]
    lines = [f"# Patient context on SIIM-ISIC 2020 (half) ({res['device']})", '',
             f"{res['n_images']:,} images of {res['n_patients']:,} patients ({res['n_pos']} melanomas). Stage one: pretrained EfficientNet-Lite0 at "
             f"{a['size']} px, `fine_tune({a['epochs']}, {a['lr']}, lr_mult=1)`, trained on {a['folds']} patient-grouped folds, so every image's "
             f"probability and embedding come from the model that did not see its patient. Stage two: fitted and scored on {a['folds']} other "
             f"patient-grouped folds of that out-of-fold table (seed {res['seeds'][0]}; seeds {res['seeds'][1:]} repeat it with other folds). "
             "ROC AUC: mean over folds with its 95 % t interval; lift: paired per fold over the image-only model's own probability, with the t interval "
             "and the interval widened for overlapping training sets (Nadeau and Bengio, as `meta_compare`).", '',
             '| design | ROC AUC | lift over image only | t interval | widened interval | folds up |', '|---|---|---|---|---|---|']
    for name in DESIGNS:
        g = first[first.design == name].roc_auc
        if not len(g): continue
        m = _ci(g.to_numpy())
        if name == BASE: lines.append(f"| {name} | {m[0]:.3f} [{m[1]:.3f}, {m[2]:.3f}] | — | — | — | — |"); continue
        l = res['lifts'][str(res['seeds'][0])][name]
        c = l['corrected']
        lines.append(f"| {name} | {m[0]:.3f} [{m[1]:.3f}, {m[2]:.3f}] | {l['mean']:+.3f} | [{l['t'][0]:+.3f}, {l['t'][1]:+.3f}] | "
                     f"[{c['low']:+.3f}, {c['high']:+.3f}] | {l['up']} of {l['n']} |")
    lines += ['', f"**`context_learner`'s design, each stage-two split** (seed {res['seeds'][0]} is the table above; the others repeat the stage two over other "
              "patient-grouped folds of the same out-of-fold table): lift over image only, and over the metadata fusion alone (what the context adds "
              "to the same stage-one model), with the t and the widened intervals:", '',
              '| stage-two seed | over image only | t interval | widened | folds up | over metadata fusion alone | t interval | widened | folds up |',
              '|---|---|---|---|---|---|---|---|---|']
    for s in res['seeds']:
        l, m = res['lifts'][str(s)].get(SHIPPED), res['over_fusion'].get(str(s))
        if l and m:
            cell = lambda x: f"{x['mean']:+.3f} | [{x['t'][0]:+.3f}, {x['t'][1]:+.3f}] | [{x['corrected']['low']:+.3f}, {x['corrected']['high']:+.3f}] | {x['up']} of {x['n']}"
            lines.append(f"| {s} | {cell(l)} | {cell(m)} |")
    lines += ['', 'Minutes per stage-one fold: ' + ', '.join(f"{k} {np.mean(v):.1f}" for k,v in res['minutes'].items()) + '.']
    if res.get('by_images'):
        lines += ['', f"**By the number of images per patient** (out-of-fold, seed {res['seeds'][0]}'s stage two; ROC AUC of the image-only model and of `context_learner`'s design):", '',
                  '| images per patient | images | melanomas | image only | with context |', '|---|---|---|---|---|']
        lines += [f"| {r['group']} | {r['count']:,} | {r['n_pos']} | {r['image']:.3f} | {r['context']:.3f} |" for r in res['by_images']]
    return '\n'.join(lines) + '\n'

def main(a):
    df = pd.read_csv(SIIM_COLS['path']/'train.csv')
    if a.max_patients: df = df[df.patient_id.isin(df.patient_id.drop_duplicates().sample(a.max_patients, random_state=a.seed))].reset_index(drop=True)
    df['label'] = np.where(df.target == 1, 'mel', 'other')
    fold = group_folds(df, 'patient_id', a.folds, a.seed, stratify='target')
    if a.stage_one != 'none':
        keep = Path(f'/tmp/patient-context-stage-one-{a.size}-{a.epochs}-{a.seed}-{a.folds}-{a.max_patients}{"" if a.stage_one == "image" else "-" + a.stage_one}.npz')
        if not keep.exists(): np.savez(keep, **stage_one(df, fold, a, a.stage_one))
    tabs = {k: load_table(df, a, k) for k in ('image', 'concat')}
    seeds = [a.seed + 1, a.seed + 2, a.seed + 3]
    rows, res_lifts, shipped, over_fusion = [], {}, None, {}
    for s in seeds:
        r, sh = stage_two(tabs, a, s)
        rows, shipped, d = rows + r, sh if shipped is None else shipped, pd.DataFrame(r)
        res_lifts[str(s)] = {n: lifts(d, n) for n in DESIGNS if n != BASE and n in set(d.design)}
        if FUSION in set(d.design): over_fusion[str(s)] = lifts(d, SHIPPED, base=FUSION)
    tab = tabs['image'][0]
    res = dict(device=DEVICE, n_images=len(tab), n_patients=int(tab.patient_id.nunique()), n_pos=int(tab.target.sum()),
               settings=vars(a), seeds=seeds,
               minutes={k: v[2] for k,v in tabs.items() if v is not None}, stage_two=rows, lifts=res_lifts, over_fusion=over_fusion,
               examples=examples(tabs['concat'][0], shipped) if tabs['concat'] is not None else [],
               by_images=by_images(tab, tab.p.to_numpy(), shipped) if tabs['concat'] is not None else [])
    save(f'patient-context-{DEVICE}', res, to_markdown(res))

if __name__ == '__main__':
    p = parser(size=64, epochs=4, lr=2e-3, bs=64)
    p.add_argument('--stage-one', default='none', choices=['none', 'image', 'concat'], help="train this stage one if it is not kept in /tmp: image only, or image + age, sex, site (concat fusion)")
    p.add_argument('--max-patients', type=int, default=0, help='a random subset of patients (0: all), for a quick check')
    main(p.parse_args())
