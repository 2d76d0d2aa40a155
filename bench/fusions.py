"""Parameters and forward+backward time of each fusion, relative to 'concat' and to a plain vision_learner.

Run: .venv/bin/python bench/fusions.py [--size 128] [--bs 16] [--iters 5]
Writes bench/results/fusions_<device>.json and .md.
"""
import argparse, json, platform, tempfile, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
from fastai.vision.all import *
from fastai_meta.all import *

def time_fwd_bwd(model, inputs, iters, device):
    "Median seconds of one forward+backward pass."
    model.train()
    times = []
    for i in range(iters + 2):
        if device == 'cuda': torch.cuda.synchronize()
        start = time.perf_counter()
        out = model(*inputs)
        out = out[0] if isinstance(out, tuple) else out
        out.float().sum().backward()
        if device == 'cuda': torch.cuda.synchronize()
        if i >= 2: times.append(time.perf_counter() - start)   # two warm-up passes
        model.zero_grad(set_to_none=True)
    return float(np.median(times))

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--size', type=int, default=128); p.add_argument('--bs', type=int, default=16)
    p.add_argument('--iters', type=int, default=5); p.add_argument('--rounds', type=int, default=3); p.add_argument('--arch', default='resnet18')
    a = p.parse_args()
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    path = Path(tempfile.mkdtemp())
    df = make_synthetic(path, n=64, task='meta', size=a.size)
    dls = MetaDataLoaders.from_df(df, path, folder='images', fn_col='fname', label_col='label', cat_names=['site'],
                                  cont_names=['age', 'noise'], bs=a.bs, num_workers=0, device=device)
    arch = getattr(models, a.arch)
    x, meta, _ = dls.one_batch()
    plain = vision_learner(ImageDataLoaders.from_df(df, path, folder='images', fn_col='fname', label_col='label', bs=a.bs, num_workers=0, device=device),
                           arch, pretrained=False).model.to(device)
    variants = {f: dict(fusion=f) for f in fusions} | {'concat + self-contrastive': dict(contrastive=0.1), 'concat + ArcFace head': dict(arcface=True)}
    built = {'plain': (plain, (x,))} | {name: (meta_cnn_learner(dls, arch, pretrained=False, **kw).model.to(device), (x, meta))
                                        for name,kw in variants.items()}
    times = {name: [] for name in built}
    for _ in range(a.rounds):   # round-robin, so that slow spells of the machine hit every model alike
        for name,(model,inputs) in built.items(): times[name].append(time_fwd_bwd(model, inputs, a.iters, device))
    n_params = {name: sum(p.numel() for p in m.parameters()) for name,(m,_) in built.items()}
    n_plain, t_plain = n_params['plain'], float(np.median(times['plain']))
    rows = [dict(fusion=name, params=n_params[name], added_vs_plain=n_params[name] - n_plain, seconds=float(np.median(times[name])))
            for name in variants]
    base = next(r for r in rows if r['fusion'] == 'concat')
    for r in rows: r |= dict(time_vs_concat=r['seconds']/base['seconds'], time_vs_plain=r['seconds']/t_plain,
                             added_vs_concat=r['params'] - base['params'])
    dev = torch.cuda.get_device_name() if device == 'cuda' else f'CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)'
    res = dict(device=dev, arch=a.arch, size=a.size, bs=a.bs, iters=a.iters, rounds=a.rounds, torch=torch.__version__,
               plain=dict(params=n_plain, seconds=t_plain), rows=rows)
    out = Path(__file__).parent/'results'
    out.mkdir(exist_ok=True)
    tag = 'gpu' if device == 'cuda' else 'cpu'
    (out/f'fusions_{tag}.json').write_text(json.dumps(res, indent=2))
    md = [f'Forward+backward of one batch: {a.arch}, batch {a.bs}, {a.size}x{a.size} px, {dev}, torch {torch.__version__}, '
          f'median over {a.rounds} round-robin rounds of the median of {a.iters} passes. Plain `vision_learner`: {n_plain/1e6:.2f} M parameters, {t_plain*1000:.0f} ms.', '',
          '| fusion | parameters (M) | added vs plain | added vs concat | time (ms) | time vs concat | time vs plain |',
          '|---|---:|---:|---:|---:|---:|---:|']
    md += [f"| {r['fusion']} | {r['params']/1e6:.2f} | {r['added_vs_plain']/1e6:+.2f} M | {r['added_vs_concat']/1e6:+.3f} M | "
           f"{r['seconds']*1000:.0f} | {r['time_vs_concat']:.2f}x | {r['time_vs_plain']:.2f}x |" for r in rows]
    (out/f'fusions_{tag}.md').write_text('\n'.join(md) + '\n')
    print('\n'.join(md))

if __name__ == '__main__': main()
