"`learn.explain`: the shapes and signs of an explanation, a gap contributing nothing, another class on request, clear refusals, each heatmap's own check on a task whose region is known. (Over training runs and heatmap methods: the explain page and bench/explain_sanity.py.)"
import sys
import pytest
from fastai.vision.all import *
from fastai_meta.all import *
from fastai_meta.explain import last_stage
from fastai_meta.model import pooling

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

def test_heatmap_methods_and_their_refusals(small):
    learn, df = small
    occ, gc = learn.explain(df.iloc[0]), learn.explain(df.iloc[0], method='gradcam')
    assert occ.heatmaps[0].shape == gc.heatmaps[0].shape == (32, 32) and isinstance(occ.faithful, Faithfulness)
    np.testing.assert_allclose(learn.explain(df.iloc[0], layer='layer4').heatmaps[0], learn.explain(df.iloc[0], method='gradcam', layer='layer4').heatmaps[0])
    with pytest.raises(ValueError, match="'gradcam'"): learn.explain(df.iloc[0], method='occlusion', layer='layer4')
    with pytest.raises(ValueError, match="Unknown heatmap method 'shap'"): learn.explain(df.iloc[0], method='shap')

def test_faithfulness_verdicts():
    assert Faithfulness(0.6, 0.01).trusted and Faithfulness(0.3, -0.2).trusted
    assert not Faithfulness(0.04, 0.0).trusted and not Faithfulness(0.3, 0.2).trusted     # too small a fall; no better than random pixels
    assert 'do not trust' in str(Faithfulness(0.0, 0.0)) and 'passes its check' in str(Faithfulness(0.5, 0.0)) and '-0.00' not in str(Faithfulness(0.5, -0.001))

def test_each_heatmap_checks_itself_on_a_task_whose_region_is_known(synth):
    "'patch': a red square in half of the images, `yes` when there is one and `flag` is true. A trained model's maps put their mass on the square and pass their own check; a model with re-initialised weights fails it."
    path, df = synth('patch', n=600, size=32, seed=0)
    set_seed(0)
    dls = MetaDataLoaders.from_df(df, path, folder='images', fn_col='fname', label_col='label', cat_names=['flag'], cont_names=[], seed=0,
                                  bs=32, num_workers=0, cache=ImageCache(32))
    learn = meta_cnn_learner(dls, 'resnet18', pretrained=False, metrics=accuracy)
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(8, 1e-2)
    with learn.no_bar(): assert learn.validate()[1] > 0.85
    rows = df[(df.spot_x >= 0) & df.flag & (df.label == 'yes')].head(12)
    es = [learn.explain(r, target='yes') for _,r in rows.iterrows()]
    mass = [e.heatmaps[0][r.spot_y:r.spot_y + 8, r.spot_x:r.spot_x + 8].sum() / e.heatmaps[0].sum() for e,(_,r) in zip(es, rows.iterrows())]
    assert np.median(mass) > 0.3 and sum(e.faithful.trusted for e in es) >= 9, (np.round(mass, 2), [str(e.faithful) for e in es])   # the square is 1/16
    for m in learn.model.modules():
        if hasattr(m, 'reset_parameters'): m.reset_parameters()
    rs = [learn.explain(r, target='yes') for _,r in rows.iterrows()]
    assert sum(e.faithful.trusted for e in rs) <= 2
    assert 'do not trust this heatmap' in next(e for e in rs if not e.faithful.trusted).show().get_suptitle()   # and the figure says so
    plt.close('all')

def test_without_captum_it_says_what_to_install(small, monkeypatch):
    monkeypatch.setitem(sys.modules, 'captum.attr', None)
    monkeypatch.setitem(sys.modules, 'captum', None)
    with pytest.raises(ImportError, match=r"needs captum: pip install captum"): small[0].explain(small[1].iloc[0])

@pytest.mark.parametrize('shared', [True, False])
def test_several_images_a_heatmap_each(synth, shared):
    "Two images per row: a heatmap on each image's grid, `None` (and 'no image' drawn) for a missing one; one body for both, or one each."
    path, df = synth('views', n=64, size=16, seed=0)
    dls = DataBlock(blocks=(*ImageBlocks(['fname', 'fname2'], pref=path/'images', cache=ImageCache(16)), MetaBlock(cat_names=['flag']), CategoryBlock),
                    get_y=ColReader('label'), splitter=RandomSplitter(seed=0)).dataloaders(df, bs=16, num_workers=0)
    set_seed(1)                     # untrained: the weights decide which maps are all zero (seed 0 leaves the first image's `yes` map empty)
    learn = meta_cnn_learner(dls, 'resnet18', pretrained=False, shared_body=shared)
    es = [learn.explain(df.iloc[0], target=c, layer='layer1') for c in ('yes', 'no')]
    for e in es: assert [h.shape for h in e.heatmaps] == [(16, 16)]*2 and all((h >= 0).all() for h in e.heatmaps) and len(e.images) == 2
    assert any(e.heatmaps[0].max() > 0 and not np.allclose(e.heatmaps[0], e.heatmaps[1]) for e in es)     # each image its own map (for one class at least: untrained, one may be all zero)
    gap = learn.explain(df.iloc[0].to_dict() | dict(fname2=None), layer='layer1')
    assert gap.heatmaps[1] is None and gap.images[1] is None and gap.heatmaps[0].shape == (16, 16)
    assert isinstance(gap.show(), plt.Figure); plt.close('all')

def test_layer_by_module_or_name(small):
    learn, df = small
    a, b = learn.explain(df.iloc[1], layer=learn.model[0].model.layer2), learn.explain(df.iloc[1], layer='model.layer2')
    np.testing.assert_allclose(a.heatmaps[0], b.heatmaps[0])
    with pytest.raises(ValueError, match="not part of the model's body"): learn.explain(df.iloc[1], layer=nn.Conv2d(3, 3, 1))

def test_results_and_top_losses_draw_heatmaps(small):
    learn, df = small
    axs = learn.show_results(max_n=4, heatmap=True, shuffle=False)
    titles = [row[0].get_title() for row in axs]
    assert len(titles) == 4 and all('/' in t for t in titles)
    interp = MetaInterpretation.from_learner(learn)
    axs = interp.plot_top_losses(3, heatmap=True)
    assert len(axs) == 3 and axs[0][0].get_title().count('/') == 3 and len(axs[0][0].images) == 2      # the image and its heatmap
    with pytest.raises(TypeError, match='MetaInterpretation'): ClassificationInterpretation.from_learner(learn).plot_top_losses(3, heatmap=True)
    plt.close('all')

def test_default_layer_is_the_last_stage_the_model_runs(synth):
    "A timm body runs only its `forward_features`: lcnet's `conv_head` (after the pooling, in the timm model's own head) is not a stage of it."
    path, df = synth('meta', n=32)
    dls = MetaDataLoaders.from_df(df, path, folder='images', fn_col='fname', label_col='label', cat_names=['site'], cont_names=['age'],
                                  seed=0, bs=16, num_workers=0, item_tfms=Resize(32))
    learn = meta_cnn_learner(dls, 'lcnet_050', pretrained=False)
    assert last_stage(learn.model[0], torch.zeros(1, 3, 32, 32)) is learn.model[0].model.blocks
    assert learn.explain(df.iloc[0]).heatmaps[0].shape == (32, 32)
