"""HAM10000: are the probabilities right, and does the melanoma operating point hold on new lesions?

For each of K lesion-grouped folds (StratifiedGroupKFold on `lesion_id`, stratified by diagnosis): fold k is the
test set, fold k+1 the calibration set, the other folds train `meta_cnn_learner` (concat fusion, pretrained
EfficientNet-Lite0, the `fit_recipe` of `meta_compare`). On the calibration fold, `calibrate()` fits the temperature
and `set_operating_point('mel', 0.95)` the threshold; on the test fold, which neither saw, we measure the
expected calibration error and log-likelihood before and after, and melanoma sensitivity and specificity at the
operating point and at the usual argmax decision. The fold-0 model also goes through `export_safe`/`load_safe`,
and its test predictions are compared with the original's.

Run: .venv/bin/python bench/calibration.py [--folds 5] [--per-class 300] [--size 128] [--epochs 5] [--replot]
Writes fastai_meta/results/calibration-ham10000-<cpu|gpu>.{json,md,png}; the diagram is fold 0's test predictions (kept in the JSON),
in bins of equal counts.
"""
import json, tempfile, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd, torch
import matplotlib; matplotlib.use('Agg')
import matplotlib.pyplot as plt
from fastai.vision.all import set_seed
from fastai_meta.all import *
from fastai_meta.speed import cpu_bf16_supported
from lesions import DEVICE, HAM_COLS, OUT, load_ham, interval as _ci, parser, recipe, save

def _fold(df, fold, k, a, keep=None):
    "Train on the folds other than `k` and `k+1`, calibrate on `k+1`, test on `k`; the fold's measurements."
    cal, test = fold == (k + 1) % a.folds, fold == k
    train, rows = df[~cal & ~test], df[~test]
    set_seed(a.seed + k, reproducible=True)
    learn = fold_learner(rows, cal[~test], 'concat', **HAM_COLS, **recipe(a.size, a.bs))
    t0 = time.time()
    with learn.no_bar(), learn.no_logging(): fit_recipe(learn, a.epochs, a.lr)()
    tdl = learn.dls.test_dl(df[test], with_labels=True)
    with learn.no_bar():
        logits, y = (t.as_subclass(torch.Tensor) for t in learn.get_preds(dl=tdl, act=lambda x: x))
        cal_res = learn.calibrate()
        op = learn.set_operating_point('mel', a.sensitivity)
        after, _, dec = learn.get_preds(dl=tdl, with_decoded=True)
    before, after = logits.float().softmax(1), after.float()
    c = Calibration(cal_res.temperature, before, after, y)
    mel = list(learn.dls.vocab).index('mel')
    pos = (y == mel).numpy()
    res = dict(fold=k, n_train=int(len(train)), n_cal=int(cal.sum()), n_test=int(test.sum()), n_mel_test=int(pos.sum()), minutes=(time.time() - t0)/60,
               temperature=cal_res.temperature, ece_before=c.ece_before, ece_after=c.ece_after, nll_before=c.nll_before, nll_after=c.nll_after, ece_cal_before=cal_res.ece_before, ece_cal_after=cal_res.ece_after,
               threshold=op['threshold'], sens_cal=op['sensitivity'], spec_cal=op['specificity'],
               sens_op=float((dec.numpy()[pos] == mel).mean()), spec_op=float((dec.numpy()[~pos] != mel).mean()),
               sens_argmax=float((after.argmax(1).numpy()[pos] == mel).mean()), spec_argmax=float((after.argmax(1).numpy()[~pos] != mel).mean()),
               balanced_accuracy=float(np.mean([(after.argmax(1).numpy()[(y == c).numpy()] == c).mean() for c in range(len(learn.dls.vocab))])))
    if keep is not None:
        keep.update(before=before.numpy(), after=after.numpy(), y=y.numpy())
        with tempfile.TemporaryDirectory() as d:
            f = learn.export_safe(Path(d)/'ham.safetensors')
            loaded = load_safe(f)
            with loaded.no_bar(): p = loaded.get_preds(dl=loaded.dls.test_dl(df[test]))[0]
            res['export_max_abs_diff'] = float((p.float() - after).abs().max())
            res['export_mb'] = f.stat().st_size / 2**20
    return res

def summarise(rows, a):
    "Means with 95 % t intervals over the folds, the paired ECE and NLL changes, and the operating point's results."
    d = pd.DataFrame(rows)
    s = {k: _ci(d[k]) for k in ('temperature', 'ece_before', 'ece_after', 'nll_before', 'nll_after', 'sens_op', 'spec_op', 'sens_argmax', 'spec_argmax', 'balanced_accuracy')}
    s['ece_change'], s['nll_change'] = _ci(d.ece_after - d.ece_before), _ci(d.nll_after - d.nll_before)
    s['sens_change'], s['spec_change'] = _ci(d.sens_op - d.sens_argmax), _ci(d.spec_op - d.spec_argmax)
    from scipy.stats import binomtest
    hit, n = int(round((d.sens_op * d.n_mel_test).sum())), int(d.n_mel_test.sum())
    ci = binomtest(hit, n).proportion_ci(0.95)
    s['mel_test_pooled'] = dict(hit=hit, n=n, ci=[float(ci.low), float(ci.high)])
    s['wins'] = dict(ece=int((d.ece_after < d.ece_before).sum()), nll=int((d.nll_after < d.nll_before).sum()), n=len(d))
    return s

def to_markdown(res):
    s, a = res['summary'], res['settings']
    f = lambda k, p=3: f"{s[k][0]:.{p}f} [{s[k][1]:.{p}f}, {s[k][2]:.{p}f}]"
    pooled = s['mel_test_pooled']
    lines = [f"# Calibration and a melanoma operating point on HAM10000 ({res['device']})", '',
             f"{a['folds']} lesion-grouped folds of {res['n_images']:,} images ({a['per_class']} per diagnosis at most, {a['size']} px): "
             f"each fold tested once, the next fold calibrates, the rest train concat `meta_cnn_learner` (pretrained EfficientNet-Lite0, "
             f"`fine_tune({a['epochs']}, {a['lr']})`). Means over folds with 95 % t intervals.", '',
             '| on the test fold | before calibration | after | change (paired) |', '|---|---|---|---|',
             f"| expected calibration error (15 bins) | {f('ece_before')} | {f('ece_after')} | {f('ece_change')}, lower in {s['wins']['ece']} of {s['wins']['n']} folds |",
             f"| negative log-likelihood | {f('nll_before')} | {f('nll_after')} | {f('nll_change')}, lower in {s['wins']['nll']} of {s['wins']['n']} folds |", '',
             f"Temperature fitted: {f('temperature', 2)}. Balanced accuracy (argmax, unchanged by the temperature): {f('balanced_accuracy')}.", '',
             f"| melanoma, on the test fold | at the operating point (target sensitivity {a['sensitivity']}, chosen on the calibration fold) | argmax | change (paired) |",
             '|---|---|---|---|',
             f"| sensitivity | {f('sens_op')} | {f('sens_argmax')} | {f('sens_change')} |",
             f"| specificity | {f('spec_op')} | {f('spec_argmax')} | {f('spec_change')} |", '',
             f"Pooled over the test folds, {pooled['hit']} of {pooled['n']} melanomas are flagged at the operating point: sensitivity "
             f"{pooled['hit']/pooled['n']:.3f}, 95 % Clopper-Pearson interval [{pooled['ci'][0]:.3f}, {pooled['ci'][1]:.3f}] (the t interval above "
             "can pass 1; this one cannot; it counts images, and a few lesions have several).", '',
             pd.DataFrame(res['rows'])[['fold', 'temperature', 'ece_before', 'ece_after', 'threshold', 'sens_cal', 'sens_op', 'spec_op', 'n_mel_test']]
               .rename(columns=dict(temperature='T', sens_cal='sensitivity (calibration fold)', sens_op='sensitivity (test)', spec_op='specificity (test)',
                                    n_mel_test='melanomas (test)')).round(3).to_markdown(index=False)]
    r0 = res['rows'][0]
    lines += ['', f"Fold 0's model through `export_safe` and `load_safe`: largest difference in test probabilities {r0['export_max_abs_diff']:.2g} "
              f"({r0['export_mb']:.1f} MB file). Time per fold: {np.mean([r['minutes'] for r in res['rows']]):.1f} minutes."]
    return '\n'.join(lines) + '\n'

def main(a):
    df = load_ham(a.per_class, a.seed)
    fold = group_folds(df, 'lesion_id', a.folds, a.seed, stratify='dx')
    keep, rows = {}, []
    for k in range(a.folds):
        rows.append(_fold(df, fold, k, a, keep if k == 0 else None))
        print(json.dumps(rows[-1]), flush=True)
    res = dict(device=DEVICE, n_images=len(df), settings=vars(a), rows=rows, summary=summarise(rows, a),
               cpu_bf16=bool(cpu_bf16_supported()), threads=torch.get_num_threads(),
               fold0={k: np.round(v, 6).tolist() for k,v in keep.items()})      # the diagram's data, to draw it again without training
    name = OUT/f'calibration-ham10000-{DEVICE}'
    save(name.name, res, to_markdown(res))
    draw(res, name.with_suffix('.png'))

def draw(res, fname):
    "The reliability diagram of fold 0's test lesions (`Calibration.plot`), from the predictions kept in `res`."
    f = res['fold0']
    cal = Calibration(res['rows'][0]['temperature'], torch.tensor(f['before']), torch.tensor(f['after']), torch.tensor(f['y']))
    ax = cal.plot(); ax.set_title(f"fold 0, test lesions ({cal.n} images)", fontsize=9)
    plt.savefig(fname, dpi=110, bbox_inches='tight'); plt.close()

if __name__ == '__main__':
    p = parser()
    p.add_argument('--sensitivity', type=float, default=0.95)
    p.add_argument('--replot', action='store_true', help="draw the diagram again from the saved JSON, training nothing")
    a = p.parse_args()
    if a.replot:
        name = OUT/f"calibration-ham10000-{DEVICE}"
        draw(json.loads(name.with_suffix('.json').read_text()), name.with_suffix('.png'))
    else: main(a)
