"""HAM10000 at lesion level: does a model that sees every image of a lesion beat one image? Two `meta_compare` runs on one row per lesion.

One row per lesion (its images as a list, in image_id order; its diagnosis; the age, sex and site of its first image), at
most `--per-class` lesions per diagnosis. The same lesion-grouped folds (stratified by diagnosis) serve two comparisons by
the library's `meta_compare`: one reads the lesion's first image, the other every image of it (a list column: exchangeable
views, pooled by a mean). Each trains image only and concat (pretrained EfficientNet-Lite0) and scores the table alone; the
paired difference of the two runs' scores, fold by fold, is the lift of every image over one.

Run: .venv/bin/python bench/views.py [--folds 5] [--per-class 200] [--size 96] [--epochs 4]
Writes fastai_meta/results/views-ham10000-<cpu|gpu>.md and the two runs' compare files in views-ham10000-<device>.run/.
"""
import warnings
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd, torch
from fastai_meta.all import *
from fastai_meta.crossfit import IMAGE
from lesions import DEVICE, HAM_COLS, OUT, load_ham, parser, pretrained_compare, save

def load_lesions(per_class, seed):
    "One row per lesion: its images (a list, in image_id order), diagnosis, and the metadata of its first image."
    df = load_ham().sort_values('image_id')
    les = df.groupby('lesion_id', sort=False).agg(images=('image_id', list), dx=('dx', 'first'), age=('age', 'first'),
                                                  sex=('sex', 'first'), localization=('localization', 'first')).reset_index()
    les = les.sample(frac=1, random_state=seed)
    les = les[les.groupby('dx').cumcount() < per_class].sort_values('lesion_id').reset_index(drop=True)
    return les.assign(first=les.images.str[0])

def main(a):
    les, run = load_lesions(a.per_class, a.seed), OUT/f'views-ham10000-{DEVICE}.run'
    res = {fn: pretrained_compare(les, a, run/fn, **dict(HAM_COLS, fn_col=fn), group_col='lesion_id',
                                  fusions=['concat']) for fn in ('first', 'images')}
    one, every = (r.scores.set_index(['seed', 'fold', 'model']) for r in res.values())
    lines = [f"# Every image of a lesion against its first, on HAM10000 ({DEVICE})", '',
             f"{len(les):,} lesions ({a.per_class} per diagnosis at most; {int((les.images.map(len) > 1).sum()):,} with 2 to {les.images.map(len).max()} images), "
             f"{a.folds} lesion-grouped folds; pretrained EfficientNet-Lite0 at {a.size} px, {a.epochs} epochs (`meta_compare`'s recipe). "
             "Paired, fold by fold: the score with every image minus the score with the first image, mean [95 % interval, corrected], folds up.", '',
             '| model | balanced accuracy, first image | every image | lift | ROC AUC, first image | every image | lift |', '|---|---|---|---|---|---|---|']
    for m in (IMAGE, 'concat'):
        cells = []
        for t in ('balanced_accuracy', 'roc_auc'):
            d = paired_stats((every.xs(m, level='model')[t] - one.xs(m, level='model')[t]).to_numpy(), res['images'].test_frac)
            cells += [f"{one.xs(m, level='model')[t].mean():.3f}", f"{every.xs(m, level='model')[t].mean():.3f}",
                      f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}], {d['wins']} of {d['n']}"]
        lines.append(f"| {m} | " + ' | '.join(cells) + ' |')
    lines += ['', f"Verdicts: first image: {res['first'].verdict} Every image: {res['images'].verdict}"]
    save(f'views-ham10000-{DEVICE}', md='\n'.join(lines) + '\n')

if __name__ == '__main__': main(parser(per_class=200, size=96, epochs=4).parse_args())
