"""Does `learn.explain` find the answer of a task built for it, over several training runs? The 'spot' task, seed by seed.

`make_synthetic(task='spot')`: a grey noisy 64-px image with one 16-px square, red or blue; the label is `yes` when the
square is red and `flag` is true (5 % flipped); `site` and `noise` are irrelevant. For each seed a resnet18 is trained
from scratch as on the explain page (600 rows, `--epochs` of one cycle at 1e-2), and the first 20 rows with a red square
and `flag` true are explained with Grad-CAM on `layer1` (16×16 at 64 px; the last stage is 2×2). Per seed: validation accuracy; the heatmap's mass inside the square
(mean over the rows; the square is 0.0625 of the image), and that over the square's share; the pointing game (the rows
whose hottest pixel lies in the square); the share of the 256 hottest pixels inside the square; the rows with `flag`
first among the columns; and the model-randomisation check (Adebayo et al. 2018): the median rank correlation between
the trained and a re-initialised model's heatmaps.

Run: .venv/bin/python bench/explain_sanity.py [--seeds 5] [--epochs 6] [--render]
Writes bench/results/explain-sanity-cpu.{json,md}.
"""
import argparse, copy, json, tempfile, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd, torch
from scipy.stats import spearmanr
from fastai.vision.all import accuracy, set_seed
from fastai_meta.all import *

OUT, SIDE, SIZE = Path(__file__).parent/'results', 16, 64

def run(seed, epochs):
    "One training run of the spot task and the checks on its 20 explained rows."
    path = Path(tempfile.mkdtemp())
    df = make_synthetic(path, n=600, task='spot', size=SIZE, seed=seed)
    set_seed(seed)
    dls = MetaDataLoaders.from_df(df, path, folder='images', fn_col='fname', label_col='label', cat_names=['flag', 'site'],
                                  cont_names=['noise'], seed=seed, bs=32, num_workers=0, cache=ImageCache(SIZE))
    learn = meta_cnn_learner(dls, 'resnet18', pretrained=False, metrics=accuracy)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(epochs, 1e-2)
    with learn.no_bar(): acc = float(learn.validate()[1])
    rows = df[(df.spot_colour == 'red') & df.flag].head(20)
    square = [np.zeros((SIZE, SIZE), bool) for _ in range(len(rows))]
    for m,(_,r) in zip(square, rows.iterrows()): m[r.spot_y:r.spot_y + SIDE, r.spot_x:r.spot_x + SIDE] = True
    es = [learn.explain(r, layer='layer1') for _,r in rows.iterrows()]
    hs = [e.heatmaps[0] for e in es]
    rand = copy.deepcopy(learn)
    set_seed(seed + 1000)
    for mod in rand.model.modules():
        if hasattr(mod, 'reset_parameters'): mod.reset_parameters()
    rs = [spearmanr(h.ravel(), rand.explain(r, layer='layer1', target='yes').heatmaps[0].ravel()).statistic for h,(_,r) in zip(hs, rows.iterrows())]
    mass = np.array([h[m].sum() / max(h.sum(), 1e-12) for h,m in zip(hs, square)])
    return dict(seed=seed, accuracy=acc, mass=float(mass.mean()), mass_over_area=float(mass.mean() / (SIDE**2 / SIZE**2)),
                rows_with_most_mass=int((mass > 0.5).sum()), pointing=int(sum(m.flat[h.argmax()] for h,m in zip(hs, square))),
                top_share=float(np.mean([m.ravel()[np.argsort(-h.ravel())[:SIDE**2]].mean() for h,m in zip(hs, square)])),
                flag_first=sum(e.meta.index[0] == 'flag' for e in es), randomised_spearman=float(np.nanmedian(rs)), rows=len(rows))

def main(a):
    t0, res = time.time(), []
    for s in range(a.seeds):
        res.append(run(s, a.epochs)); print(res[-1], flush=True)
    out = dict(device='gpu' if torch.cuda.is_available() else 'cpu', threads=torch.get_num_threads(), settings=vars(a), runs=res, seconds=time.time() - t0)
    (OUT/f"explain-sanity-{out['device']}.json").write_text(json.dumps(out, indent=1))
    render(out)

def render(out):
    "Write the results `out` as bench/results/explain-sanity-<device>.md."
    res, a = out['runs'], argparse.Namespace(**out['settings'])
    tab = pd.DataFrame(res)
    cols = ['seed', 'accuracy', 'mass', 'mass_over_area', 'rows_with_most_mass', 'pointing', 'top_share', 'flag_first', 'randomised_spearman']
    fmt = lambda r: '| ' + ' | '.join(f'{r[c]:.2f}' if isinstance(r[c], float) else f'{r[c]}' for c in cols) + ' |'     # `r`: one run's dict
    n = len(tab)
    md = '\n'.join([f"# Explanations of a task built for them, over {n} training runs ({out['device']}, {out['threads']} threads)", '',
                    f"The 'spot' task (64 px, a 16-px square: 0.0625 of the image), resnet18 from scratch, {a.epochs} epochs; per seed, the first "
                    "20 rows with a red square and `flag` true, Grad-CAM on `layer1` (16×16). mass: the heatmap's share inside the square (mean); "
                    "mass_over_area: that over the square's share (1 for a heatmap blind to the square); rows_with_most_mass: rows with more "
                    "than half of it inside; pointing: rows whose hottest pixel is inside; top_share: the share of the 256 hottest pixels "
                    "inside; flag_first: rows with `flag` the largest contribution; randomised_spearman: median rank correlation with a "
                    "re-initialised model's heatmaps.", '',
                    '| ' + ' | '.join(cols) + ' |', '|' + '---|'*len(cols), *[fmt(r) for r in res], '',
                    f"Over the {n} runs: mass {tab.mass.median():.2f} median ({tab.mass.min():.2f} to {tab.mass.max():.2f}); more than half of the "
                    f"mass on the square (the mean over the rows) in {int((tab.mass > 0.5).sum())} of {n} runs; mass over the square's share at least "
                    f"{tab.mass_over_area.min():.1f}; pointing {tab.pointing.min()} to {tab.pointing.max()} of 20; `flag` first in "
                    f"{tab.flag_first.min()} to {tab.flag_first.max()} of 20; randomised correlation at most {tab.randomised_spearman.max():.2f}.", ''])
    (OUT/f"explain-sanity-{out['device']}.md").write_text(md)
    print(md)

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--seeds', type=int, default=5); p.add_argument('--epochs', type=int, default=6)
    p.add_argument('--render', action='store_true', help='only rewrite the .md from the saved .json')
    a = p.parse_args()
    if a.render: render(json.loads((OUT/f"explain-sanity-{'gpu' if torch.cuda.is_available() else 'cpu'}.json").read_text()))
    else: main(a)
