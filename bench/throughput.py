"""Throughput: does the metadata cost anything (time and parameters, per fusion), and how much faster is the image cache?

One run measures, on the same HAM10000 images and settings, side by side: the DataLoader alone (every batch through
`after_batch`), without and with metadata, and with the metadata plus `ImageCache`; training end to end (a warm epoch, then
the best of `--epochs` timed ones, learners taken in turn so that a machine's drift favours none), from scratch with
`to_fast()`: `vision_learner`, `meta_cnn_learner` with each fusion, and `'concat'` with the cache; and building DataLoaders
for 1,000,000 rows of synthetic metadata. Every number is also a ratio to the same run's `vision_learner` (or DataLoader
without metadata), so runs on different machines compare by ratio. The comparison with a bare PyTorch step that chose the
channels-last default and `amp_rule` (fastai_meta/results/speed-cpu.md) came from an earlier form of this script (PROVENANCE.md).

Run: .venv/bin/python bench/throughput.py              (CPU: a small size, minutes)
     python bench/throughput.py --n 0 --size 128 --bs 512 --workers 16      (a GPU, all images)
Writes fastai_meta/results/throughput-<cpu|gpu>.json and .md.
"""
import argparse, json, platform, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd
from fastai.vision.all import *
from fastai_meta.all import *
from fastai_meta.fusion import fusions

from lesions import HAM_COLS, OUT, load_ham, save

def images(n, seed=0):
    "(df, common from_df kwargs, metadata kwargs, name): `n` HAM10000 images (0: all)."
    df, meta = load_ham(), ('cat_names', 'cont_names')
    if n: df = df.sample(n, random_state=seed).reset_index(drop=True)
    return df, {k: v for k,v in HAM_COLS.items() if k not in meta}, {k: HAM_COLS[k] for k in meta}, 'HAM10000'

class TrainTimer(Callback):
    "Seconds and items of each training phase (validation left out)."
    order = 100
    def __init__(self): self.times = []
    def before_train(self): self.n, self.start = 0, None
    def before_batch(self):
        if self.start is None:
            if torch.cuda.is_available(): torch.cuda.synchronize()
            self.start = time.perf_counter()
    def after_batch(self):
        if self.training: self.n += find_bs(self.yb)
    def after_train(self):
        if torch.cuda.is_available(): torch.cuda.synchronize()
        self.times.append((time.perf_counter() - self.start, self.n))

def _epoch_rate(dl):
    "Items per second of one pass over `dl`."
    start, n = time.perf_counter(), 0
    for b in dl: n += len(b[0])
    if torch.cuda.is_available(): torch.cuda.synchronize()
    return n / (time.perf_counter() - start)

def dl_rates(dls, rounds=3):
    "Items per second of iterating each of `dls` (a dict), best of `rounds` passes taken in turn (after a warm one), so drift hits all alike."
    for dl in dls.values(): _epoch_rate(dl)
    rates = [{k: _epoch_rate(dl) for k,dl in dls.items()} for _ in range(rounds)]
    return {k: max(r[k] for r in rates) for k in dls}

def fit_rates(learners, a):
    "Training items per second of each of `learners` (a dict): one warm epoch each, then `a.epochs` timed epochs each, taken in turn (best)."
    timers = {k: TrainTimer() for k in learners}
    for k,learn in learners.items(): learn.add_cb(timers[k])
    for r in range(1 + a.epochs):
        for k,learn in learners.items():
            with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-3)
    return {k: max(n / t for t,n in timers[k].times[1:]) for k in learners}

def amp_chosen(learn):
    "The autocast dtype `learn`'s `to_fast` chose, as text."
    return 'off' if (cb := getattr(learn, 'fast_training', None)) is None else str(cb.amp_dtype or 'float32').replace('torch.', '')

def build_million(n=1_000_000, seed=0):
    """Seconds to build DataLoaders (MetaBlock + CategoryBlock, random split) for `n` rows of synthetic metadata.

    The label vocabulary is given (`CategoryBlock(vocab=...)`): without it fastai's `Categorize` reads the
    label of every training row one pandas row at a time, which alone takes ~20 s for a million rows."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(0, 90, n); age[rng.random(n) < 0.05] = np.nan
    df = pd.DataFrame({'sex': rng.choice(['male', 'female', None], n), 'site': rng.choice([f's{i}' for i in range(15)], n),
                       'smoker': rng.choice([True, False, None], n), 'age': age, 'bmi': rng.normal(25, 4, n),
                       'label': rng.choice(list('abcdefg'), n)})
    dblock = DataBlock(blocks=(MetaBlock(cat_names=['sex', 'site', 'smoker'], cont_names=['age', 'bmi']), CategoryBlock(vocab=list('abcdefg'))),
                       get_x=noop, get_y=ColReader('label'), splitter=RandomSplitter(seed=seed))
    start = time.perf_counter()
    dls = dblock.dataloaders(df, bs=1024, num_workers=0)
    secs = time.perf_counter() - start
    assert len(dls.train_ds) + len(dls.valid_ds) == n
    return secs

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--n', type=int, default=1024, help='images (0: all)'); p.add_argument('--size', type=int, default=64)
    p.add_argument('--bs', type=int, default=64); p.add_argument('--workers', type=int, default=0)
    p.add_argument('--arch', default='resnet18'); p.add_argument('--epochs', type=int, default=3, help='timed epochs per learner, best kept')
    a = p.parse_args()
    a.gpu = torch.cuda.is_available()
    device = 'gpu' if a.gpu else 'cpu'
    arch = getattr(__import__('torchvision.models', fromlist=[a.arch]), a.arch)
    df, common, meta_kw, source = images(a.n)
    common.update(bs=a.bs, num_workers=a.workers, valid_pct=0.1, seed=0, batch_tfms=aug_transforms(size=a.size, flip_vert=True, max_warp=0))
    res = dict(device=torch.cuda.get_device_name() if a.gpu else f'CPU ({platform.machine()}, {torch.get_num_threads()} threads)', speed_cpu=cpu_name(),
               torch=torch.__version__, data=source, n_images=len(df), size=a.size, bs=a.bs, workers=a.workers, arch=a.arch,
               precision='to_fast (channels-last, autocast by amp_rule)', epochs=a.epochs)
    def say(k, v): res[k] = v; print(f'{k}: {v:.4g}' if isinstance(v, float) else f'{k}: {v}', flush=True)

    plain = ImageDataLoaders.from_df(df, item_tfms=Resize(a.size), **common)
    meta = MetaDataLoaders.from_df(df, item_tfms=Resize(a.size), **common, **meta_kw)
    start = time.perf_counter()
    cache = ImageCache(a.size, n_workers=max(a.workers, defaults.cpus))
    cached = MetaDataLoaders.from_df(df, cache=cache, **common, **meta_kw)
    say('cache_build_s', time.perf_counter() - start); say('cache_mib', cache.nbytes / 2**20)
    for k,v in dl_rates(dict(dl_no_meta=plain.train, dl_meta=meta.train, dl_meta_cached=cached.train)).items(): say(k, v)
    learners = {}
    for k in ['vision_learner', *fusions, 'concat_cached']:
        set_seed(0)
        learners[k] = (vision_learner(plain, arch, pretrained=False).to_fast() if k == 'vision_learner' else
                       meta_cnn_learner(cached if k == 'concat_cached' else meta, arch, fusion=k.replace('_cached', ''), pretrained=False, fast=True))
    for k,v in fit_rates(learners, a).items(): say(k, v)
    res['amp'] = {k: amp_chosen(l) for k,l in learners.items()}
    res['params'] = {k: sum(p.numel() for p in l.model.parameters()) for k,l in learners.items()}
    print('autocast chosen:', res['amp'])
    del learners
    say('build_1m_rows_s', build_million())
    OUT.mkdir(exist_ok=True)
    save(f'throughput-{device}', res)
    write_md(res, device)

def cpu_name():
    "The CPU's model name, from /proc/cpuinfo where there is one (the bf16 rule and the speeds depend on it)."
    try: return next(l.split(':', 1)[1].strip() for l in Path('/proc/cpuinfo').read_text().splitlines() if l.startswith('model name'))
    except Exception: return platform.processor() or 'unknown CPU'

def _size(res, k):
    "' (N M parameters)' of learner `k` where the run counted them."
    return f" ({res['params'][k]/1e6:.2f} M parameters)" if k in res.get('params', {}) else ''

def write_md(res, device=None):
    "The results of `res` as a table, ratios to the same run's baselines."
    device = device or ('cpu' if res['device'].startswith('CPU') else 'gpu')
    base, dl0 = res['vision_learner'], res['dl_no_meta']
    md = [f"{res['data']}, {res['n_images']} images at {res['size']} px, batch {res['bs']}, {res['workers']} DataLoader workers, "
          f"{res['arch']} from scratch, {res['precision']}, on {res['device']}, torch {res['torch']}. Training: best of {res.get('epochs', 1)} timed epochs per learner after a warm one, learners taken in turn.", '',
          '| what | images/s | ratio |', '|---|---:|---:|',
          f"| DataLoader alone, no metadata (`ImageDataLoaders`) | {dl0:,.0f} | 1.00 |",
          f"| DataLoader alone, with metadata (`MetaDataLoaders`) | {res['dl_meta']:,.0f} | {res['dl_meta']/dl0:.2f} |",
          f"| DataLoader alone, metadata + `ImageCache` | {res['dl_meta_cached']:,.0f} | {res['dl_meta_cached']/dl0:.2f} |",
          f"| training, `vision_learner`{_size(res, 'vision_learner')} | {base:,.0f} | 1.00 |"]
    md += [f"| training, `meta_cnn_learner`, `'{f}'`{_size(res, f)} | {res[f]:,.0f} | {res[f]/base:.2f} |" for f in fusions]
    md += [f"| training, `'concat'` + `ImageCache` | {res['concat_cached']:,.0f} | {res['concat_cached']/base:.2f} |", '',
           f"Time of each fusion relative to `'concat'`: " + ', '.join(f"{f} {res['concat']/res[f]:.2f}x" for f in fusions) + '.',
           *([f"Autocast each learner's `to_fast` chose: " + ', '.join(f"{k} {v}" for k,v in res['amp'].items()) + '.'] if 'amp' in res else []),
           f"The cache took {res['cache_build_s']:.1f} s to fill ({res['cache_mib']:.0f} MiB of uint8 images). "
           f"DataLoaders for 1,000,000 rows of metadata (no images, label vocabulary given): built in {res['build_1m_rows_s']:.1f} s."]
    save(f'throughput-{device}', md='\n'.join(md) + '\n')

if __name__ == '__main__': main()
