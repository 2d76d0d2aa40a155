"`learn.explain`: the shapes and signs of an explanation, a gap contributing nothing, another class on request, clear refusals. (Whether it finds the answer of a task built for it, and the model-randomisation check, run on the explain page.)"
import sys
import pytest
from fastai.vision.all import *
from fastai_meta.all import *

@pytest.fixture(scope='module')
def small(synth):
    path, df = synth('meta', n=64)
    dls = MetaDataLoaders.from_df(df, path, folder='images', fn_col='fname', label_col='label', cat_names=['site'], cont_names=['age', 'noise'],
                                  seed=0, bs=16, num_workers=0, item_tfms=Resize(32))
    return meta_cnn_learner(dls, 'resnet18', pretrained=False), df

def test_one_row(small):
    learn, df = small
    row = df.iloc[0].to_dict() | dict(noise=None)
    e = learn.explain(row)
    assert len(e.heatmaps) == 1 and e.heatmaps[0].shape == (32, 32) and (e.heatmaps[0] >= 0).all()
    assert e.images[0].shape == (32, 32, 3)
    assert set(e.meta.index) == {'site', 'age', 'noise'} and e.meta['noise'] == 0          # a gap contributes nothing
    assert list(e.meta.abs()) == sorted(e.meta.abs(), reverse=True)                         # largest first
    assert e.target == e.pred and abs(sum(e.probs.values()) - 1) < 1e-5
    other = next(c for c in ('yes', 'no') if c != e.pred)
    o = learn.explain(row, target=other)
    assert o.target == other and o.pred == e.pred
    assert np.isclose(o.meta['age'], -e.meta['age'], atol=1e-5)     # two classes: what raised one lowered the other
    assert isinstance(e.show(), plt.Figure); plt.close('all')
    with pytest.raises(ValueError, match="'maybe' is not a class"): learn.explain(row, target='maybe')
    with pytest.raises(ValueError, match='5 is not a class'): learn.explain(row, target=5)          # a class by its name, not an index out of range
    with pytest.raises(ValueError, match='one row'): learn.explain(df.iloc[:2])
    assert len(learn.explain(dl=learn.dls.valid, n=2)) == 2

def test_without_captum_it_says_what_to_install(small, monkeypatch):
    monkeypatch.setitem(sys.modules, 'captum.attr', None)
    monkeypatch.setitem(sys.modules, 'captum', None)
    with pytest.raises(ImportError, match=r"pip install 'fastai_meta\[explain\]'"): small[0].explain(small[1].iloc[0])
