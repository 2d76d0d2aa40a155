"""Does `learn.explain` find the region a task is built around, in every training run? Heatmap methods side by side.

Tasks whose decisive region is known (`make_synthetic`, `--size` px): 'patch' (a red square in half of the images; `yes` when
there is one and `flag` is true: the square is the only evidence for `yes`), 'where' (a red or blue square in each
quadrant; the label is the colour of the one in the quadrant that `quadrant` names; FiLM fusion, which learns it) and
'spot' (one square, red or blue; `yes` when red and `flag`: a model may also answer from the absence of blue, which has
no place). Bodies: resnet18 from scratch (`fit_one_cycle`) and EfficientNet-Lite0 pretrained (`fine_tune`). Per run,
the first 20 validation rows whose answer lies in the region (`yes` rows with the square; 'where': every row) are
explained for their label's class by each method: 'occlusion' (the default), Grad-CAM on the body's last stage
(`gradcam`, the old default) and on its first stage (`gradcam-first`). For each: the heatmap's mass inside the region
(median over the rows; the region is 1/16 of the image), the pointing game (rows whose hottest pixel is inside), the
rows whose map passes its own deletion check; for the default, the rows of a model
with re-initialised weights whose map passes the check (it should be none).

Run: .venv/bin/python bench/explain_sanity.py [--seeds 5] [--size 32] [--n 600] [--epochs 8] [--settings patch:resnet18 where:resnet18:1000:10 patch:lite0 spot:resnet18]
Writes fastai_meta/results/explain-sanity-cpu.{json,md}.
"""
import argparse, copy, json, tempfile, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd, torch
from fastai.vision.all import accuracy, set_seed
from fastai_meta.all import *
from lesions import DEVICE, OUT, save

SIZE, SIDE = 32, 8                   # the image's side and the region's (set by --size)
FIRST = dict(resnet18='layer1', lite0='blocks.1')
METHODS = dict(occlusion=dict(), gradcam=dict(method='gradcam'), gradcam_first=None)

def region(task, r):
    "The decisive region of row `r` of `task`, a boolean mask."
    m = np.zeros((SIZE, SIZE), bool)
    if task == 'where':
        qx, qy = dict(tl=(0, 0), tr=(1, 0), bl=(0, 1), br=(1, 1))[r.quadrant]
        x, y = qx*SIZE//2 + SIDE//2, qy*SIZE//2 + SIDE//2
    else: x, y = r.spot_x, r.spot_y
    m[y:y + SIDE, x:x + SIDE] = True
    return m

def train(task, body, seed, n, epochs):
    path = Path(tempfile.mkdtemp())
    df = make_synthetic(path, n=n, task=task, size=SIZE, seed=seed)
    set_seed(seed)
    cats = ['quadrant'] if task == 'where' else ['flag', 'site']
    dls = MetaDataLoaders.from_df(df, path, folder='images', fn_col='fname', label_col='label', cat_names=cats, cont_names=['noise'],
                                  seed=seed, bs=32, num_workers=0, cache=ImageCache(SIZE))
    kw = dict(fusion='film') if task == 'where' else {}
    if body == 'lite0': learn = meta_cnn_learner(dls, 'tf_efficientnet_lite0', weights_path=offline_weights(), metrics=accuracy, **kw)
    else: learn = meta_cnn_learner(dls, body, pretrained=False, metrics=accuracy, **kw)
    with learn.no_bar(), learn.no_logging():
        if body == 'lite0': learn.fine_tune(epochs, 1e-2)
        else: learn.fit_one_cycle(epochs, 1e-2)
    with learn.no_bar(): acc = float(learn.validate()[1])
    valid = df.loc[learn.dls.valid.items.index]
    if task == 'where': rows = valid
    else: rows = valid[(valid.spot_x >= 0) & (valid.label == 'yes') & (valid.spot_colour == 'red' if task == 'spot' else True)]
    return learn, acc, rows.head(20)

def run(task, body, seed, n, epochs):
    learn, acc, rows = train(task, body, seed, n, epochs)
    res = dict(task=task, body=body, seed=seed, accuracy=acc, rows=len(rows))
    masks = [region(task, r) for _,r in rows.iterrows()]
    for name, kw in METHODS.items():
        kw = kw if kw is not None else dict(method='gradcam', layer=FIRST[body])
        t0 = time.perf_counter()
        es = [learn.explain(r, target=r.label, **kw) for _,r in rows.iterrows()]
        res[f'{name}_seconds'] = (time.perf_counter() - t0) / len(rows)
        hs = [e.heatmaps[0] for e in es]
        res[f'{name}_mass'] = float(np.median([h[m].sum() / max(h.sum(), 1e-12) for h,m in zip(hs, masks)]))
        res[f'{name}_pointing'] = int(sum(m.flat[h.argmax()] for h,m in zip(hs, masks) if h.max() > 0))
        res[f'{name}_passes'] = int(sum(e.faithful.trusted for e in es))
    rand = copy.deepcopy(learn)
    set_seed(seed + 1000)
    for mod in rand.model.modules():
        if hasattr(mod, 'reset_parameters'): mod.reset_parameters()
    res['randomised_passes'] = int(sum(rand.explain(r, target=r.label).faithful.trusted for _,r in rows.iterrows()))
    return res

def main(a):
    global SIZE, SIDE
    SIZE, SIDE = a.size, a.size // 4
    t0, res = time.time(), []
    for setting in a.settings:                        # task:body, or task:body:rows:epochs
        task, body, *more = setting.split(':')
        n, epochs = (int(v) for v in more) if more else (a.n, a.epochs if body != 'lite0' else a.epochs // 2)
        for s in range(a.seeds):
            res.append(run(task, body, s, n, epochs) | dict(n=n, epochs=epochs)); print(res[-1], flush=True)
            out = dict(device=DEVICE, threads=torch.get_num_threads(), settings=vars(a), runs=res,
                       seconds=time.time() - t0)
            save(f"explain-sanity-{out['device']}", out)
    render(out)

def render(out):
    "Write the results `out` as fastai_meta/results/explain-sanity-<device>.md."
    tab, a = pd.DataFrame(out['runs']), argparse.Namespace(**out['settings'])
    rows = []
    for (task, body), g in tab.groupby(['task', 'body'], sort=False):
        for m in METHODS:
            rows.append(f"| {task} | {body} | {m.replace('_', ' ')} | {g[f'{m}_mass'].median():.2f} ({g[f'{m}_mass'].min():.2f}–{g[f'{m}_mass'].max():.2f}) "
                        f"| {int((g[f'{m}_mass'] > 0.5).sum())} of {len(g)} | {g[f'{m}_pointing'].sum()} of {g.rows.sum()} "
                        f"| {g[f'{m}_passes'].sum()} of {g.rows.sum()} |")
    acc = '; '.join(f"{t}, {b}: {g.n.iloc[0]} rows, {g.epochs.iloc[0]} epochs, accuracy {g.accuracy.min():.2f}–{g.accuracy.max():.2f}"
                    for (t, b), g in tab.groupby(['task', 'body'], sort=False))
    md = '\n'.join([f"# Heatmaps against regions known to decide ({out['device']}, {out['threads']} threads)", '',
                    f"{len(tab)} training runs on images of {a.size} px: one cycle from scratch (resnet18) or `fine_tune` pretrained "
                    f"(EfficientNet-Lite0); per task and body, {acc} (validation). Up to 20 validation rows "
                    "per run whose answer lies in a known region (1/16 of the image), each explained for its label's class. "
                    "mass: the heatmap's share inside the region, median over a run's rows, then the median (range) over runs; "
                    "runs > 0.5: runs whose median mass is over one half; pointing: rows whose hottest pixel is inside; passes: rows "
                    "whose map passes its own deletion check (its hottest 10 % of pixels, set to the image's mean colour, lower the "
                    "probability by 0.05 or more and by twice what the same shape of pixels at random places does). The time of an explanation: "
                    "explain-time-cpu.md.", '',
                    '| task | body | heatmap | mass | runs > 0.5 | pointing | passes |', '|---|---|---|---|---|---|---|', *rows, '',
                    f"The default's maps of models with re-initialised weights passed the check in {tab.randomised_passes.sum()} of "
                    f"{tab.rows.sum()} rows.", ''])
    save(f"explain-sanity-{out['device']}", md=md)

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--seeds', type=int, default=5); p.add_argument('--epochs', type=int, default=8); p.add_argument('--n', type=int, default=600)
    p.add_argument('--size', type=int, default=32)
    p.add_argument('--settings', nargs='+', default=['patch:resnet18', 'where:resnet18:1000:10', 'patch:lite0', 'spot:resnet18'])
    p.add_argument('--render', action='store_true', help='only rewrite the .md from the saved .json')
    a = p.parse_args()
    if a.render: render(json.loads((OUT/f"explain-sanity-{DEVICE}.json").read_text()))
    else: main(a)
