"""HAM10000 with metadata missing at prediction time: models trained with and without `meta_dropout`.

Each lesion-grouped fold trains, with the pretrained EfficientNet-Lite0 and `fine_tune`: image only (`vision_learner`), and
`meta_cnn_learner` ('concat') without metadata dropout, with `meta_dropout=p` (whole rows) and with `MetaDropout(p,
per_column=True)`. Each metadata model is scored on its held-out fold with 0, 25, 50, 75 and 100 % of the rows' metadata
removed (rows at random, seeded), and with one column removed from every row. Balanced accuracy and macro ROC AUC, mean ±
std over folds. Targets: with dropout, at 100 % missing within 1 point of image only; at 0 % within 1 point of no dropout.

Run: .venv/bin/python bench/missing.py [--per-class 200] [--size 96] [--epochs 5] [--p 0.25]
(--render: draw the figure again from the JSON, training nothing)
Writes fastai_meta/results/missing-<cpu|gpu>.json, .md and .png.
"""
import json, sys, time, warnings
warnings.filterwarnings('ignore')
import matplotlib; matplotlib.use('Agg')
import numpy as np, pandas as pd
from fastai.vision.all import *
from fastai_meta.all import *
from fastai_meta.crossfit import IMAGE
from lesions import ARCH, DEVICE, HAM_COLS, OUT, load_ham, parser, recipe, save

COLS = HAM_COLS['cat_names'] + HAM_COLS['cont_names']
RATES = [0, 25, 50, 75, 100]
CONDITIONS = [f'{r}% of rows' for r in RATES] + ['age only', 'site only']

def removed(rows, cond, seed):
    "`rows` with metadata removed as condition `cond` says."
    rows = rows.copy()
    if cond == 'age only': rows['age'] = np.nan
    elif cond == 'site only': rows['localization'] = np.nan
    else:
        k = round(int(cond.split('%')[0]) / 100 * len(rows))
        idx = np.random.default_rng(seed).permutation(len(rows))[:k]
        rows.iloc[idx, [rows.columns.get_loc(c) for c in COLS]] = np.nan
    return rows

def train(name, df, a):
    "A learner for model `name`, trained by the library's recipe (`fit_recipe`) on the rows of `df` not marked `is_valid`."
    learn = fold_learner(df, df.is_valid.to_numpy(), IMAGE if name == 'image only' else 'concat', **HAM_COLS,
                         **recipe(a.size, a.bs, cache=name != 'image only'),
                         **({} if name == 'image only' else dict(meta_dropout=a.p if 'rows' in name else 0., cbs=[MetaDropout(a.p, per_column=True)] if 'per column' in name else [])))
    with learn.no_bar(), learn.no_logging(): fit_recipe(learn, a.epochs, a.lr)()
    return learn

def evaluate(learn, name, df, seed):
    "Scores of `learn` on the held-out rows of `df` under each condition (image only: once)."
    rows, out = df[df.is_valid], {}
    for cond in (['0% of rows'] if name == 'image only' else CONDITIONS):
        with learn.no_bar(): probs, _ = learn.get_preds(dl=learn.dls.test_dl(removed(rows, cond, seed)))
        s = class_scores(rows.dx, probs.float().numpy(), list(learn.dls.vocab))
        out[cond] = dict(balanced_accuracy=s['balanced_accuracy'], macro_auc=s['roc_auc'])
    return out

def main():
    p = parser(folds=3, per_class=200, size=96, epochs=5)
    p.add_argument('--p', type=float, default=0.25)
    a = p.parse_args()
    a.device = DEVICE
    models = ['image only', 'concat', f'concat, meta_dropout={a.p:g} (rows)', f'concat, meta_dropout={a.p:g} (per column)']
    df = load_ham(a.per_class, a.seed)
    fold = row_folds(df, a.folds, a.seed, group_col='lesion_id', stratify='dx')
    def fit(name, df, valid):
        fdf, start = df.assign(is_valid=valid), time.time()
        learn = train(name, fdf, a)
        return dict(seconds=time.time() - start, scores=evaluate(learn, name, fdf, a.seed + int(fold[valid][0])))
    rows = [dict(fold=k, model=name, condition=c, seconds=r['seconds'], **s) for name in models
            for k,r in cross_fit(df, fold, partial(fit, name), seed=a.seed).items() for c,s in r['scores'].items()]
    res = dict(vars(a), arch_name=ARCH, n_images=len(df), rows=rows,
               threads=torch.get_num_threads(), torch=torch.__version__, gpu=torch.cuda.get_device_name() if a.device == 'gpu' else None)
    save(f'missing-{a.device}', res)
    write(res)

def write(res):
    "The table (markdown) and the plot (png) of `res`."
    models, mean, std = scores(res)
    conds = [c for c in CONDITIONS if c in mean.columns]
    where = res['gpu'] or f"CPU ({res['threads']} threads), torch {res['torch']}"
    md = [f"HAM10000, {res['n_images']} images (at most {res['per_class']} per diagnosis), {res['folds']} lesion-grouped folds, "
          f"{res['arch_name']} with ImageNet weights at {res['size']} px, `fit_recipe` ({res['epochs']} epochs at {res['lr']:g}), on {where}. "
          "Balanced accuracy on the held-out fold (mean ± std over folds) with the metadata of that share of rows removed, "
          "or with one column removed from every row. The image-only model sees no metadata: one score.", '',
          '| model | ' + ' | '.join(conds) + ' |', '|---|' + '---:|'*len(conds)]
    for m in models:
        cells = [f'{mean.loc[m, c]:.3f} ± {std.loc[m, c]:.3f}' if c in mean.columns and not np.isnan(mean.loc[m, c]) else
                 (f"{mean.loc[m, '0% of rows']:.3f} (any)" if m == 'image only' else '') for c in conds]
        md.append(f'| {m} | ' + ' | '.join(cells) + ' |')
    base, nod = mean.loc['image only', '0% of rows'], mean.loc['concat']
    md.append('')
    for m in models[2:]:
        md.append(f"`{m}`: at 100 % missing {100*(mean.loc[m, '100% of rows'] - base):+.1f} points against image only "
                  f"(the model without dropout: {100*(nod['100% of rows'] - base):+.1f}); at 0 % missing "
                  f"{100*(mean.loc[m, '0% of rows'] - nod['0% of rows']):+.1f} points against the model without dropout.")
    save(f"missing-{res['device']}", md='\n'.join(md) + '\n')
    draw(res)

def scores(res):
    "The models in order, and the mean and std over folds of their balanced accuracy per condition."
    d = pd.DataFrame(res['rows'])
    pivot = lambda f: d.pivot_table(index='model', columns='condition', values='balanced_accuracy', aggfunc=f)
    return list(dict.fromkeys(d.model)), pivot('mean'), pivot('std')

def draw(res):
    "Balanced accuracy against the share of rows with their metadata removed, per model (png)."
    models, mean, std = scores(res)
    base = mean.loc['image only', '0% of rows']
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for m in models[1:]:
        ax.errorbar(RATES, [mean.loc[m, f'{r}% of rows'] for r in RATES], yerr=[std.loc[m, f'{r}% of rows'] for r in RATES],
                    marker='o', capsize=3, label=m)
    ax.axhline(base, color='k', ls='--', label='image only')
    ax.set_xlabel("validation rows with their metadata removed (%)"); ax.set_ylabel('balanced accuracy')
    ax.legend(fontsize=8, loc='upper center', bbox_to_anchor=(0.5, -0.2), ncol=2)      # below the axes: it hides no bar
    fig.savefig(OUT/f"missing-{res['device']}.png", dpi=110, bbox_inches='tight')

if __name__ == '__main__':
    if '--render' in sys.argv: draw(json.loads((OUT/'missing-cpu.json').read_text()))      # the figure, training nothing
    else: main()
