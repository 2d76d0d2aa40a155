"Metadata encoded once per frame, and the image cache: same batches as the default path, and nothing else changes."
import pickle
import numpy as np, pandas as pd, pytest
from fastai.vision.all import *
from fastai_meta.all import *
from fastai_meta.data import EncodedRows
from conftest import meta_dls

def _valid_batch(dls): return dls.valid.new(shuffle=False, drop_last=False).one_batch()

def test_metadata_is_encoded_once_per_frame(synth):
    path, df = synth('meta')
    dls = meta_dls(path, df, 'meta')
    for ds in (dls.train_ds, dls.valid_ds):
        assert isinstance(ds.tls[1].items, EncodedRows)       # the metadata block fetches by index...
        assert isinstance(ds.items, pd.DataFrame)              # ...and the dataset still shows its DataFrame
    enc = dls.meta.encoding
    valid = df.iloc[dls.splits[1]]
    _, meta, _ = _valid_batch(dls)
    test_eq(meta, torch.as_tensor(enc.encode_df(valid.iloc[:len(meta)])))
    rows = valid.iloc[:8]                                      # a frame, and the same rows one by one, agree
    test_eq(dls.test_dl(rows).one_batch()[1], dls.test_dl([r for _,r in rows.iterrows()]).one_batch()[1])
    assert isinstance(dls.test_dl(rows).dataset.tls[1].items, EncodedRows)

def test_custom_metadata_getter_keeps_the_row_path(synth):
    "A getter that is not `noop` sees real rows: no pre-encoding is forced on it."
    path, df = synth('meta', n=64)
    dblock = DataBlock(blocks=(ImageBlock, MetaBlock(cat_names=['site'], cont_names=['age']), CategoryBlock),
                       get_x=[ColReader('fname', pref=path/'images'), lambda r: r[['site', 'age']]], get_y=ColReader('label'),
                       splitter=RandomSplitter(seed=0), item_tfms=Resize(32))
    dls = dblock.dataloaders(df, bs=8, num_workers=0)
    assert isinstance(dls.valid_ds.tls[1].items, pd.DataFrame)
    test_eq(dls.valid.one_batch()[1].shape, (8, 3))           # site, age_na, age

class _ZeroMeta(Transform):
    "An item transform acting on the metadata (as a metadata dropout would)."
    def encodes(self, x:TensorMeta): return x*0

class _Invert(Transform):
    "An item transform acting on (cached, uint8) images."
    def encodes(self, x:TensorImage): return 255 - x

def test_metadata_joins_the_batch_by_index(synth):
    "No item transform acts on the metadata: items skip it and the batch gathers it, equal to the item path."
    path, df = synth('meta', n=96)
    dls = meta_dls(path, df, 'meta', bs=16, item_tfms=Resize(32))
    slow = meta_dls(path, df, 'meta', bs=16, item_tfms=[Resize(32), Transform(noop)])   # an untyped transform could act on it
    assert list(dls.valid._gathered()) == [1] and not slow.valid._gathered()
    fast_b, slow_b = _valid_batch(dls), _valid_batch(slow)
    for a,b in zip(fast_b, slow_b): test_eq(a, b); test_eq(type(a), type(b))
    test_eq(fast_b[1], torch.stack([dls.valid_ds[i][1] for i in range(16)]))
    zeroed = meta_dls(path, df, 'meta', bs=16, item_tfms=[Resize(32), _ZeroMeta()])
    assert not zeroed.valid._gathered() and (_valid_batch(zeroed)[1] == 0).all()   # the transform is applied, not skipped

@pytest.mark.parametrize('workers', [0, 2])
def test_shuffled_batches_keep_rows_together(synth, workers):
    "Each item's metadata, image and label come from the same row, shuffled, in worker processes too."
    path, df = synth('meta', n=96)
    df = df.assign(rowid=np.arange(len(df), dtype='float64'))
    dblock = DataBlock(blocks=(*TabularImageBlock('fname', cont_names=['rowid'], pref=path/'images'), RegressionBlock),
                       get_y=ColReader('rowid'), splitter=RandomSplitter(seed=0), item_tfms=Resize(32))
    dls = dblock.dataloaders(df, bs=16, num_workers=workers)
    enc = dls.meta.encoding
    for xb, mb, yb in list(dls.train)[:2]:
        test_close(mb[:, 1].cpu() * enc.stds[0] + enc.means[0], yb.cpu(), eps=1e-3)

@pytest.mark.parametrize('mapped', [False, True], ids=['memory', 'memmap'])
def test_image_cache_gives_the_default_batches(synth, tmp_path, mapped):
    path, df = synth('meta', n=96, size=48)
    kw = dict(path=path, folder='images', fn_col='fname', label_col='label', cat_names=['site'], cont_names=['age', 'noise'],
              seed=0, bs=16, num_workers=0)
    plain = MetaDataLoaders.from_df(df, item_tfms=Resize(32), **kw)
    cache = ImageCache(32, path=tmp_path/'cache' if mapped else None)
    fast = MetaDataLoaders.from_df(df, cache=cache, **kw)
    test_eq(len(cache), len(df))                               # every image decoded once, when the DataLoaders were made
    if mapped: assert list((tmp_path/'cache').glob('*.npy'))
    assert sorted(fast.valid._gathered()) == [0, 1]                 # images and metadata join the batch whole...
    for a,b in zip(_valid_batch(plain), _valid_batch(fast)): test_eq(a, b)   # ...as the same images, metadata and labels
    copy = pickle.loads(pickle.dumps(fast.valid.new(shuffle=False, drop_last=False)))   # as a spawned worker gets it: no images...
    assert sorted(copy._gathered()) == ([0, 1] if mapped else [1])                     # ...unless they are kept on disk
    for a,b in zip(_valid_batch(plain), copy.one_batch()): test_eq(a, b)   # a miss decodes and resizes the same way
    xb, mb, yb = fast.one_batch()
    test_eq(xb.shape, (16, 3, 32, 32)); assert xb.dtype == torch.float32
    assert len(pickle.dumps(fast.new_empty())) < 50_000             # an export carries no images
    fast.show_batch(max_n=2); plt.close('all')
    tensor_tfm = MetaDataLoaders.from_df(df, cache=cache, item_tfms=_Invert(), **kw)     # an item transform on the images...
    assert list(tensor_tfm.valid._gathered()) == [1]                                    # ...keeps them in the items
    test_close(_valid_batch(tensor_tfm)[0], 1 - _valid_batch(fast)[0])                  # (batches are floats in [0, 1])

def test_memmapped_cache_is_kept_across_runs(synth, tmp_path):
    "A second `ImageCache` on the same folder reopens the images: nothing is decoded again, and the batches are the same."
    import shutil
    src, df = synth('meta', n=64, size=48)
    path = tmp_path/'data'; shutil.copytree(src, path)
    kw = dict(path=path, folder='images', fn_col='fname', label_col='label', cat_names=['site'], cont_names=['age'], seed=0, bs=16, num_workers=0)
    first = _valid_batch(MetaDataLoaders.from_df(df, cache=ImageCache(32, path=tmp_path/'cache'), **kw))
    shutil.rmtree(path/'images')                                  # a new run could not decode them again
    again = ImageCache(32, path=tmp_path/'cache')
    test_eq(len(again), len(df))
    dls = MetaDataLoaders.from_df(df, cache=again, **kw)
    for a,b in zip(first, _valid_batch(dls)): test_eq(a, b)
    copy = pickle.loads(pickle.dumps(dls.valid.new(shuffle=False, drop_last=False)))   # a spawned worker reopens them too
    assert sorted(copy._gathered()) == [0, 1]
    with pytest.raises(ValueError, match='cache'): ImageCache(48, path=tmp_path/'cache')   # another size: refused, naming the folder
    next((tmp_path/'cache').glob('*.npy')).unlink()
    with pytest.raises(ValueError, match='damaged'): ImageCache(32, path=tmp_path/'cache')

def test_cached_learner_predicts_after_export(synth, tmp_path):
    path, df = synth('meta', n=64)
    dls = MetaDataLoaders.from_df(df, path, folder='images', fn_col='fname', label_col='label', cat_names=['site'], cont_names=['age'],
                                  seed=0, bs=16, num_workers=0, cache=ImageCache(32))
    learn = meta_cnn_learner(dls, resnet18, pretrained=False)
    with learn.no_bar():
        pred = learn.predict(df.iloc[0])
        learn.export(tmp_path/'m.pkl')
        loaded = load_learner(tmp_path/'m.pkl')
        test_close(loaded.predict(df.iloc[0])[2], pred[2])      # a cache miss decodes and resizes the same way

def test_cache_refuses_points(synth):
    path, df = synth('points', n=32)
    with pytest.raises(ValueError, match='points'):
        MetaDataLoaders.from_df(df, path, folder='images', fn_col='fname', label_col='x', y_block=PointBlock, cat_names=['quadrant'],
                                cache=ImageCache(32), num_workers=0)
