"""HAM10000: what `fine_tune(epochs, lr)` gives a pretrained timm body, by how its parameters are grouped and `lr_mult`.

fastai puts a timm body in one parameter group (`default_split`), so `fine_tune`'s default `lr_mult=100`
trains the whole body at lr/200. `timm_split` uses timm's own layer groups (`group_matcher(coarse=True)`:
stem, each stage, last convolution), so the same `slice(lr/lr_mult, lr)` spreads the rates over depth.
Image-only `vision_learner` with EfficientNet-Lite0's ImageNet weights (`offline_weights`), the same
lesion-grouped folds, data, seed and budget for every configuration (`bench/lesions.py`'s). Autocast is
fixed (bfloat16 where the CPU has it, else float32) so that a run repeats exactly; `to_fast`'s timed
choice would make the numerics depend on the machine's load.

Run: .venv/bin/python bench/layer_groups.py [--resume] [--folds 3] [--per-class 300] [--size 128] [--epochs 5] [--lr 3e-3]
Writes bench/results/layer-groups-<cpu|gpu>.json and .md.
"""
import argparse, json, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd
from fastai.vision.all import *
from fastai_meta.all import *
from lesions import HAM, OUT, load_ham, lesion_folds, _pm

CONFIGS = {'one group (fastai), lr_mult=100': (default_split, 100), 'timm groups, lr_mult=100': (timm_split, 100),
           'timm groups, lr_mult=10': (timm_split, 10), 'one group (fastai), lr_mult=1': (default_split, 1)}   # lr_mult=1: one rate, any grouping
BEST = 'one group (fastai), lr_mult=1'      # the recipe the docs recommended before `timm_split`

def train(df, splitter, lr_mult, a):
    "Balanced accuracy and macro AUC of an image-only Lite0 fine-tuned on `df` (held out: `is_valid`)."
    dls = ImageDataLoaders.from_df(df, path=HAM, folder='images', fn_col='image_id', suff='.jpg', label_col='dx', valid_col='is_valid',
                                   bs=a.bs, num_workers=0, item_tfms=Resize(a.size), batch_tfms=aug_transforms(size=a.size, flip_vert=True, max_warp=0))
    learn = vision_learner(dls, 'tf_efficientnet_lite0', pretrained=True, pretrained_cfg_overlay=dict(file=str(a.weights)), splitter=splitter,
                           metrics=[BalancedAccuracy(), RocAuc()]).to_fast(amp='bf16' if cpu_bf16_supported() else False)
    start = time.time()
    with learn.no_bar(), learn.no_logging(): learn.fine_tune(a.epochs, a.lr, lr_mult=lr_mult)
    _, _, bal, auc = learn.recorder.values[-1]
    return dict(balanced_accuracy=float(bal), macro_auc=float(auc), groups=len(learn.opt.param_groups), seconds=time.time() - start)

def main():
    p = argparse.ArgumentParser()
    p.add_argument('--folds', type=int, default=3); p.add_argument('--per-class', type=int, default=300)
    p.add_argument('--size', type=int, default=128); p.add_argument('--epochs', type=int, default=5)
    p.add_argument('--bs', type=int, default=32); p.add_argument('--lr', type=float, default=3e-3)
    p.add_argument('--seed', type=int, default=0); p.add_argument('--from-json', help='only rewrite the table from this json')
    p.add_argument('--resume', action='store_true', help="keep the rows of the last run's json (same settings) and train only the missing ones")
    a = p.parse_args()
    if a.from_json: return write_md(json.loads(Path(a.from_json).read_text()))
    a.device, a.weights = 'gpu' if torch.cuda.is_available() else 'cpu', offline_weights('tf_efficientnet_lite0')
    df = load_ham(a.per_class, a.seed)
    df['fold'] = lesion_folds(df, a.folds, a.seed)
    out = OUT/f'layer-groups-{a.device}.json'
    rows = [r for r in json.loads(out.read_text())['rows'] if r['model'] in CONFIGS] if a.resume and out.exists() else []
    for k in range(a.folds):
        for name,(splitter, lr_mult) in CONFIGS.items():
            if any(r['fold'] == k and r['model'] == name for r in rows): continue    # every run is seeded: a kept row is what it would give again
            set_seed(a.seed + k, reproducible=True)
            rows.append(dict(fold=k, model=name, **train(df.assign(is_valid=df.fold == k), splitter, lr_mult, a)))
            print(rows[-1], flush=True)
            save(a, df, rows, out)

def save(a, df, rows, out):
    "Write the json after every model, so that a stopped run keeps what it trained (and says it is partial)."
    res = dict({k:v for k,v in vars(a).items() if k not in ('weights', 'resume')}, n_images=len(df), rows=rows, threads=torch.get_num_threads(),
               torch=torch.__version__, bf16=cpu_bf16_supported(), gpu=torch.cuda.get_device_name() if a.device == 'gpu' else None)
    if len(rows) < a.folds * len(CONFIGS): res['stopped'] = f'{len(rows)} of {a.folds * len(CONFIGS)} models trained'
    OUT.mkdir(exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    write_md(res)

def write_md(res):
    "The table: each configuration's scores over folds, and its paired difference from the best recipe known before."
    d = pd.DataFrame(res['rows']).set_index(['fold', 'model'])[['balanced_accuracy', 'macro_auc']]
    diff = (d - d.xs(BEST, level='model')).groupby('model', sort=False).agg(['mean', 'std'])
    s = d.groupby('model', sort=False).agg(['mean', 'std'])
    groups = pd.DataFrame(res['rows']).groupby('model', sort=False)['groups'].first()
    where = res['gpu'] or f"CPU ({res['threads']} threads, {'bfloat16 autocast' if res['bf16'] else 'float32'}), torch {res['torch']}"
    md = [f"HAM10000, {res['n_images']} images (at most {res['per_class']} per diagnosis), {res['folds']} lesion-grouped folds, image-only "
          f"`vision_learner('tf_efficientnet_lite0')` with ImageNet weights at {res['size']} px, `fine_tune({res['epochs']}, {res['lr']:g}, lr_mult=...)`, "
          f"batch {res['bs']}, on {where}. Mean ± std over folds; difference: minus `{BEST}` on the same fold, in points (×100)."
          + (f" **Partial: {res['stopped']}.**" if res.get('stopped') else ''), '',
          '| parameter groups, lr_mult | groups | balanced accuracy | macro ROC AUC | difference, balanced accuracy | difference, macro AUC |',
          '|---|---:|---:|---:|---:|---:|']
    for m,r in s.iterrows():
        l = diff.loc[m]
        md.append(f"| {m} | {groups[m]} | {_pm(r[('balanced_accuracy','mean')], r[('balanced_accuracy','std')])} | {_pm(r[('macro_auc','mean')], r[('macro_auc','std')])} | "
                  + ('– | – |' if m == BEST else f"{_pm(l[('balanced_accuracy','mean')], l[('balanced_accuracy','std')], 100, '+.1f')} | "
                                                 f"{_pm(l[('macro_auc','mean')], l[('macro_auc','std')], 100, '+.1f')} |"))
    secs = pd.DataFrame(res['rows']).groupby('model', sort=False).seconds.mean()
    md += ['', 'Training seconds per fold: ' + ', '.join(f"{m} {v:.0f}" for m,v in secs.items()) + '.']
    (Path(__file__).parent/'results'/f"layer-groups-{res['device']}.md").write_text('\n'.join(md) + '\n')
    print('\n'.join(md))

if __name__ == '__main__': main()
