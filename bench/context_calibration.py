"""SIIM-ISIC 2020 (half): is a patient-context model's melanoma probability calibrated, and does its operating point hold on new patients?

The patients are split once into five patient-grouped folds stratified by melanoma (`group_folds`); fold 0's patients are
the test set, and no image of theirs is seen before the end. `context_learner` trains on the other patients (pretrained
EfficientNet-Lite0 concat image models cross-fitted over `--inner` patient folds, then the logistic-regression stage two).
`calibrate()` fits the temperature and `set_operating_point('mel', 0.9)` the threshold on the training patients' rows that
neither stage trained on (`held_out_probs`: the stage two cross-fitted over the image models' own patient folds).
On the test patients we measure the expected calibration error and log-likelihood before and after, and melanoma
sensitivity and specificity at the operating point and at the argmax decision. Intervals: 95 % percentile intervals of
2,000 bootstrap resamples of the test *patients* (an image's neighbours share its patient); the sensitivity also gets its
exact binomial interval. The calibrated model also goes through `export_safe`/`load_safe` and its test predictions
are compared with the original's.

Run: .venv/bin/python bench/context_calibration.py [--inner 3] [--size 64] [--epochs 4] [--lr 2e-3] [--render]
Writes fastai_meta/results/context-calibration-siim-<cpu|gpu>.{json,md}.
"""
import json, os, tempfile, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd, torch
from scipy.stats import binomtest
from sklearn.metrics import roc_auc_score
from fastai.vision.all import set_seed
from fastai_meta.all import *
from lesions import DEVICE, OUT, SIIM_COLS, parser, recipe, save

COLS = ['image_name', 'patient_id', 'sex', 'age_approx', 'anatom_site_general_challenge', 'label']   # not `diagnosis` or `benign_malignant`: they are the label

def load_siim():
    "The shared SIIM-ISIC half: one row per image, the label 'mel' or 'other', without the columns recorded with the diagnosis."
    df = pd.read_csv(SIIM_COLS['path']/'train.csv')
    df['label'] = np.where(df.target == 1, 'mel', 'other')
    return df[COLS]

def measures(p, y, dec, mel):
    "ECE and NLL of probabilities `p` (rows × classes) and melanoma sensitivity and specificity of decisions `dec`, for targets `y`."
    pos = y == mel
    c = Calibration(1., torch.as_tensor(p).float(), torch.as_tensor(p).float(), torch.as_tensor(y))
    return dict(ece=c.ece_before, nll=c.nll_before, sens=float((dec[pos] == mel).mean()), spec=float((dec[~pos] != mel).mean()))

def bootstrap(groups, fn, n=2000, seed=0):
    "Each key of `fn(rows)` over `n` resamples of the values of `groups` (whole patients, with replacement): [low, high] 95 % percentile intervals."
    codes = pd.factorize(groups)[0]
    rows_of = [np.flatnonzero(codes == g) for g in range(codes.max() + 1)]
    rng, draws = np.random.default_rng(seed), []
    for _ in range(n): draws.append(fn(np.concatenate([rows_of[g] for g in rng.integers(0, len(rows_of), len(rows_of))])))
    d = pd.DataFrame(draws)
    return {k: [float(d[k].quantile(0.025)), float(d[k].quantile(0.975))] for k in d}

def main(a):
    df = load_siim()
    if a.max_patients: df = df[df.patient_id.isin(df.patient_id.drop_duplicates().sample(a.max_patients, random_state=a.seed))].reset_index(drop=True)
    fold = group_folds(df, 'patient_id', 5, a.seed, stratify='label')
    train, test = df[fold != 0].reset_index(drop=True), df[fold == 0].reset_index(drop=True)
    t0 = time.time()
    set_seed(a.seed, reproducible=True)
    learn = context_learner(train, context_col='patient_id', fusion='concat', epochs=a.epochs, lr=a.lr, n_folds=a.inner,
                            seed=a.seed,
                            **dict(SIIM_COLS, label_col='label'), **recipe(a.size, a.bs, aug=False))
    minutes = (time.time() - t0)/60
    mel = list(map(str, learn.vocab)).index('mel')
    before, y, img = (t.numpy() for t in learn.get_preds(learn.test_dl(test, with_labels=True), with_image=True))
    cal = learn.calibrate()
    op = learn.set_operating_point('mel', a.sensitivity)
    after = learn.get_preds(learn.test_dl(test))[0].numpy()
    dec_op, dec_before = learn.decide(after), before.argmax(1)
    def stats(i):
        b, f = measures(before[i], y[i], dec_before[i], mel), measures(after[i], y[i], dec_op[i], mel)
        return dict(ece_before=b['ece'], ece_after=f['ece'], ece_change=f['ece'] - b['ece'], nll_before=b['nll'], nll_after=f['nll'], nll_change=f['nll'] - b['nll'],
                    sens_op=f['sens'], spec_op=f['spec'], sens_argmax=b['sens'], spec_argmax=b['spec'],
                    auc=roc_auc_score(y[i] == mel, after[i, mel]), auc_image=roc_auc_score(y[i] == mel, img[i, mel]))
    point, ci = stats(np.arange(len(y))), bootstrap(test.patient_id, stats)
    pos = y == mel
    hit = int((dec_op[pos] == mel).sum()); b = binomtest(hit, int(pos.sum())).proportion_ci(0.95)
    with tempfile.TemporaryDirectory() as d:
        loaded = load_safe(learn.export_safe(Path(d)/'context.safetensors'))
        p2 = loaded.get_preds(loaded.test_dl(test))[0].numpy()
        export = dict(max_abs_diff=float(np.abs(p2 - after).max()), same_decisions=bool((loaded.decide(p2) == dec_op).all()),
                      temperature=loaded.temperature, threshold=loaded.decision['threshold'])
    res = dict(device=DEVICE, cpus=os.cpu_count(), settings=vars(a), minutes=minutes,
               n_train=len(train), n_test=len(test), patients_train=int(train.patient_id.nunique()), patients_test=int(test.patient_id.nunique()),
               mel_train=int((train.label == 'mel').sum()), mel_test=int(pos.sum()), temperature=cal.temperature,
               held_out=dict(n=cal.n, ece_before=cal.ece_before, ece_after=cal.ece_after, nll_before=cal.nll_before, nll_after=cal.nll_after,
                             threshold=op['threshold'], sensitivity=op['sensitivity'], specificity=op['specificity']),
               test={k: [v, *ci[k]] for k,v in point.items()}, sens_op_exact=dict(hit=hit, n=int(pos.sum()), ci=[float(b.low), float(b.high)]), export=export)
    name = f"context-calibration-siim-{res['device']}" + (f'-{a.max_patients}' if a.max_patients else '')
    save(name, res, to_markdown(res))

def to_markdown(res):
    t, h, a = res['test'], res['held_out'], res['settings']
    f = lambda k, p=3: f"{t[k][0]:.{p}f} [{t[k][1]:.{p}f}, {t[k][2]:.{p}f}]"
    g = lambda k, p=3: f"{t[k][0]:+.{p}f} [{t[k][1]:+.{p}f}, {t[k][2]:+.{p}f}]"
    s = res['sens_op_exact']
    return '\n'.join([
        f"# A patient-context model's calibration and melanoma operating point on SIIM-ISIC 2020 (half) ({res['device']})", '',
        f"Training: {res['n_train']:,} images of {res['patients_train']:,} patients ({res['mel_train']} melanomas); test: {res['n_test']:,} images of "
        f"{res['patients_test']} other patients ({res['mel_test']} melanomas), seen only at the end. `context_learner`: {a['inner']} concat image models "
        f"(pretrained EfficientNet-Lite0, {a['size']} px, {a['epochs']} epochs at {a['lr']:g}) cross-fitted over patient folds, then the stage two; "
        f"{res['minutes']:.0f} minutes on a CPU of {res.get('cpus', 2)} cores. `calibrate()` and `set_operating_point('mel', {a['sensitivity']})` were fitted on "
        f"{h['n']:,} training rows that neither stage trained on (the stage two cross-fitted over the image models' patient folds). "
        "Intervals: 95 % over 2,000 bootstrap resamples of the test patients.", '',
        f"Fitted: temperature {res['temperature']:.3f}; melanoma threshold {h['threshold']:.4f} (sensitivity {h['sensitivity']:.3f}, specificity "
        f"{h['specificity']:.3f} on those rows; ECE there {h['ece_before']:.4f} → {h['ece_after']:.4f}).", '',
        '| on the test patients | before | after | change, paired |', '|---|---|---|---|',
        f"| expected calibration error | {t['ece_before'][0]:.4f} | {t['ece_after'][0]:.4f} | {g('ece_change', 4)} |",
        f"| log-likelihood (NLL) | {t['nll_before'][0]:.4f} | {t['nll_after'][0]:.4f} | {g('nll_change', 4)} |", '',
        "The levels have no interval here: resampled patients make the calibration error larger (a bootstrap sample's bins are "
        f"noisier), so their percentile intervals lie above the estimate itself (before: [{t['ece_before'][1]:.4f}, {t['ece_before'][2]:.4f}]); "
        "the paired change does not have that bias.", '',
        '| melanoma decision on the test patients | sensitivity | specificity |', '|---|---|---|',
        f"| argmax (before calibration) | {f('sens_argmax')} | {f('spec_argmax')} |",
        f"| operating point (target {a['sensitivity']}) | {f('sens_op')} | {f('spec_op')} |", '',
        f"At the operating point {s['hit']} of {s['n']} test melanomas were found; exact binomial 95 % interval {s['ci'][0]:.3f} to {s['ci'][1]:.3f}. "
        f"ROC AUC on the test patients: image models alone {f('auc_image')}, with patient context {f('auc')}.", '',
        f"Export: `export_safe` → `load_safe` gave probabilities within {res['export']['max_abs_diff']:.1e} of the original's, "
        f"{'the same' if res['export']['same_decisions'] else 'different'} decisions, and kept the temperature and threshold.", ''])

if __name__ == '__main__':
    p = parser(size=64, epochs=4, lr=2e-3, bs=64)
    p.add_argument('--inner', type=int, default=3, help="context_learner's patient folds")
    p.add_argument('--sensitivity', type=float, default=0.9)
    p.add_argument('--max-patients', type=int, default=0, help='a random subset of the patients (a quick check; 0: all)')
    p.add_argument('--render', action='store_true', help='rewrite the Markdown from the saved JSON, without training')
    a = p.parse_args()
    if a.render:
        f = OUT/f"context-calibration-siim-{DEVICE}"
        f.with_suffix('.md').write_text(to_markdown(json.loads(f.with_suffix('.json').read_text())))
    else: main(a)
