"""The time `learn.explain` takes for one row on this machine, against `learn.predict` of the same row.

A concat `meta_cnn_learner` on HAM10000 images (pretrained EfficientNet-Lite0 at `--size` px, sex, site and age), as
the tutorial builds it; the time does not depend on what the weights learned, so it is not trained here. Each of
`--rows` rows is explained (the default: an occlusion heatmap and its deletion check, feature ablation over the three
columns) and predicted, and explained with `method='gradcam'` (Grad-CAM on the body's last stage),
after two rows of warm-up; the median and the quartiles of the seconds per row, and their ratio.

Run: .venv/bin/python bench/explain_time.py [--rows 20] [--size 128]
Writes fastai_meta/results/explain-time-cpu.{json,md}.
"""
import argparse, json, time, warnings
warnings.filterwarnings('ignore')
import numpy as np, torch
from fastai_meta.all import *
from lesions import DEVICE, HAM_COLS, load_ham, save

def main(a):
    df = load_ham(per_class=20, seed=0).reset_index(drop=True)
    valid = np.arange(len(df)) % 5 == 0
    learn = fold_learner(df, valid, 'concat', **HAM_COLS, arch='tf_efficientnet_lite0',
                         weights_path=offline_weights('tf_efficientnet_lite0'), size=a.size, bs=16)
    rows = df.iloc[:a.rows + 2]
    times = {'explain': [], "explain(method='gradcam')": [], 'predict': []}
    for i, (_, r) in enumerate(rows.iterrows()):
        t0 = time.perf_counter(); learn.explain(r); t1 = time.perf_counter(); learn.explain(r, method='gradcam'); t2 = time.perf_counter()
        with learn.no_bar(): learn.predict(r)
        t3 = time.perf_counter()
        if i >= 2:
            for k,v in zip(times, (t1 - t0, t2 - t1, t3 - t2)): times[k].append(v)
    q = {k: [float(np.percentile(v, p)) for p in (25, 50, 75)] for k,v in times.items()}
    res = dict(device=DEVICE, threads=torch.get_num_threads(), settings=vars(a), seconds=q,
               ratio=float(np.median(np.array(times['explain']) / np.array(times['predict']))), raw=times)
    save(f"explain-time-{res['device']}", res)
    md = '\n'.join([f"# The time of one explanation ({res['device']}, {res['threads']} threads)", '',
                    f"`learn.explain(row)` on a HAM10000 row: a concat `meta_cnn_learner`, pretrained EfficientNet-Lite0 at {a.size} px, "
                    f"three metadata columns (sex, site, age): the default (an occlusion heatmap, a window a quarter of the image wide moved by "
                    f"a sixteenth, 169 positions, with its deletion check) or Grad-CAM on the body's last stage, and feature ablation of each column. "
                    f"{a.rows} rows after two of warm-up; seconds per row, median [quartiles].", '',
                    '| call | seconds per row |', '|---|---|',
                    *[f"| `learn.{k.replace('(', '(row, ') if '(' in k else k + '(row)'}` | {v[1]:.3f} [{v[0]:.3f}, {v[2]:.3f}] |" for k,v in q.items()], '',
                    f"An explanation takes {res['ratio']:.1f} times as long as a prediction of the same row (median of the per-row ratios).", ''])
    save(f"explain-time-{res['device']}", md=md)

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--rows', type=int, default=20); p.add_argument('--size', type=int, default=128)
    main(p.parse_args())
