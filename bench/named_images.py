"""Two named image columns (a close-up and an overview): which pooling tells them apart, and does it cost the symmetric case?

`make_synthetic`'s 'ordered' task (the first image's tint, flipped by `flag`, is the label; the second a distraction),
'views' (exactly one image red, flipped by `flag`: order does not matter) and 'selects' (`flag` picks the image whose
tint is the label: the metadata chooses the image). Each `image_pool` trains `small_cnn`, a two-layer CNN
(`fit_one_cycle(10, 3e-2)`, 400 rows, 16 px), `--seeds` seeds; validation accuracy. Named columns default to the pooling
best on all three; a list column of views keeps 'mean' (its slots are exchangeable), so bench/views.py is unchanged by it.

Run: .venv/bin/python bench/named_images.py [--seeds 3]   Writes fastai_meta/results/named-images-cpu.{json,md}.
"""
import argparse, json, sys, tempfile, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
import numpy as np, torch
from fastai.vision.all import *
from fastai_meta.all import *
from lesions import save
from fastai_meta.model import pooling
from fastai_meta.synth import small_cnn

TASKS = ('ordered', 'views', 'selects')

def views_dls(path, df, seed=0):
    "DataLoaders of two named image columns (cached at 16 px), then `flag`."
    return DataBlock(blocks=(*ImageBlocks(['fname', 'fname2'], pref=path/'images', cache=ImageCache(16)),
                             MetaBlock(cat_names=['flag']), CategoryBlock),
                     get_y=ColReader('label'), splitter=RandomSplitter(seed=seed)).dataloaders(df, bs=32, num_workers=0)

def main(a):
    rows = []
    for task in TASKS:
        path = Path(tempfile.mkdtemp())
        df = make_synthetic(path, n=400, task=task, size=16, seed=0)
        for pool in a.pools:
            for seed in range(a.seeds):
                set_seed(seed, reproducible=True)
                learn = meta_cnn_learner(views_dls(path, df, seed=seed), small_cnn, pretrained=False, ps=0.1, meta_ps=0.1, metrics=accuracy, image_pool=pool)
                with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(10, 3e-2)
                rows.append(dict(task=task, image_pool=pool, seed=seed, accuracy=float(learn.validate()[1])))
                print(rows[-1], flush=True)
    res = dict(rows=rows, seeds=a.seeds, threads=torch.get_num_threads(), torch=torch.__version__)
    save('named-images-cpu', res)
    acc = lambda t, p: [r['accuracy'] for r in rows if r['task'] == t and r['image_pool'] == p]
    md = [f"Two named image columns, 400 rows at 16 px, a two-layer CNN, `fit_one_cycle(10, 3e-2)`, {a.seeds} seeds, CPU ({res['threads']} threads): "
          "validation accuracy (chance 0.5), mean and each seed.", '', '| image_pool | ' + ' | '.join(TASKS) + ' |', '|---' * (len(TASKS) + 1) + '|']
    md += [f"| `{p}` | " + ' | '.join(f"{np.mean(acc(t, p)):.3f} ({', '.join(f'{v:.2f}' for v in acc(t, p))})" for t in TASKS) + ' |' for p in a.pools]
    save('named-images-cpu', md='\n'.join(md) + '\n')

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--seeds', type=int, default=3); p.add_argument('--pools', nargs='+', default=['mean', 'slots', 'concat', 'attention'])
    main(p.parse_args())
