"""HAM10000: how much can age, sex and site add to a pretrained image model? The product-of-experts check.

`meta_compare` now runs this check with every comparison: gradient boosting on the metadata alone, fitted on
the training folds, and the product of experts p(y | image, metadata) ∝ p(y | image) · p(y | metadata) / p(y)
(p(y): the training folds' class shares), which needs no training on the held-out fold. If the product
lifts the image model and the fusions do not, the metadata carries information the network fails to use.
This script is `lesions.py` with the setting of the first check: 3 lesion-grouped folds, concat only.

Run: .venv/bin/python bench/complement.py [--folds 3] [--per-class 300] [--size 128] [--epochs 5] [--lr 3e-3]
Writes bench/results/compare-complement-<cpu|gpu>.{json,md,png}.
"""
from lesions import parser, compare_ham

if __name__ == '__main__':
    p = parser()
    p.set_defaults(folds=3, fusions=['concat'])
    compare_ham(p.parse_args(), name='complement')
