"Shared fixtures: small synthetic data sets whose answers are known (see `fastai_meta.synth`)."
import warnings
import matplotlib
matplotlib.use('Agg')
import pytest
from fastai.vision.all import *
from fastai_meta.all import *

COLS = dict(meta=(['site'], ['age', 'noise']), xor=(['flag'], ['noise']), points=(['quadrant'], ['dx', 'dy', 'noise']))

@pytest.fixture(scope='session')
def synth(tmp_path_factory):
    "Function making (and caching) a synthetic data set: returns (path, df)."
    cache = {}
    def _make(task, n=400, size=32, seed=1):
        key = (task, n, size, seed)
        if key not in cache:
            path = tmp_path_factory.mktemp(f'{task}{n}')
            cache[key] = path, make_synthetic(path, n=n, task=task, size=size, seed=seed)
        return cache[key]
    return _make

def meta_dls(path, df, task, bs=32, **kwargs):
    "`MetaDataLoaders` for a synthetic classification task, split reproducibly."
    cats, conts = COLS[task]
    return MetaDataLoaders.from_df(df, path, folder='images', fn_col='fname', label_col='label', cat_names=cats,
                                   cont_names=conts, seed=0, bs=bs, num_workers=0, **kwargs)

def fit_quietly(learn, epochs, lr=1e-2):
    "Fit with one-cycle, no progress output; return the validation metrics."
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(epochs, lr)
        return learn.validate()

def pytest_pycollect_makeitem(collector, name, obj):
    "Collect only the test module's own functions, not `test_eq`, `test_set`... that star imports bring in."
    if callable(obj) and getattr(obj, '__module__', None) != collector.module.__name__: return []
