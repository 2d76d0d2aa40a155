"Pickle-free export: `load_safe` rebuilds each kind of learner with the original's predictions, reads nothing with pickle, and refuses files it cannot trust."
import hashlib, json, pickle, re, warnings
from unittest import mock
import numpy as np, pandas as pd, pytest, torch
from fastai.vision.all import *
from fastai_meta.all import *
from fastai_meta.description import digest
from fastai_meta.learner import described_args
from fastai_meta.cli import main
from safetensors.torch import load_file, save_file
from conftest import COLS, meta_dls, fit_quietly

def _points(path, df):
    return DataLoaders.from_dblock(DataBlock(blocks=(*TabularImageBlock('fname', *COLS['points'], pref=path/'images'), PointBlock),
                                             get_y=point_getter, splitter=RandomSplitter(seed=0), item_tfms=Resize(24)), df, bs=16, num_workers=0)

def _kind(kind, synth):
    "A small learner of `kind`, its rows with gaps and an unseen category to predict, and the rows' labels readable?"
    if kind == 'points':
        path, df = synth('points', n=48)
        return meta_cnn_learner(_points(path, df), 'resnet10t', pretrained=False), df.iloc[:6].assign(quadrant=[None, 'nowhere', *df.quadrant[2:6]])
    path, df = synth('meta', n=64)
    df = df.assign(tags=df.label + np.where(np.arange(len(df)) % 3 == 0, ';x', ''))      # several labels per row
    new = df.iloc[:6].assign(site=[None, 'elbow', 'head', 'arm', 'leg', 'back'], age=[np.nan, 30, np.nan, 70, 50, 20])
    kw = dict(folder='images', fn_col='fname', cat_names=['site'], seed=0, bs=16, num_workers=0, item_tfms=Resize(24))
    if kind == 'regression':
        dls = MetaDataLoaders.from_df(df.assign(noise=df.noise.fillna(0.)), path, label_col='noise', y_block=RegressionBlock, cont_names=['age'], **kw)
        return meta_cnn_learner(dls, resnet18, pretrained=False, y_range=(-4, 4), fusion='film'), new
    if kind == 'multilabel':
        dls = MetaDataLoaders.from_df(df, path, label_col='tags', label_delim=';', cont_names=['age', 'noise'], **kw)
        return meta_cnn_learner(dls, 'resnet10t', pretrained=False, fusion=partial(CSFFusion, stages=[-1])), new
    dls = MetaDataLoaders.from_df(df, path, label_col='label', cont_names=['age', 'noise'], batch_tfms=aug_transforms(), **kw)
    return meta_cnn_learner(dls, 'resnet10t', pretrained=False, arcface=kind == 'arcface', fusion='metablock' if kind == 'arcface' else 'concat'), new

@pytest.mark.parametrize('kind', ['category', 'arcface', 'multilabel', 'regression', 'points'])
def test_load_safe_predicts_as_the_original(synth, tmp_path, kind):
    learn, new = _kind(kind, synth)
    fit_quietly(learn, 1)
    if kind in ('category', 'multilabel'):
        learn.calibrate()
        learn.set_operating_point('yes', sensitivity=0.9)
    f = learn.export_safe(tmp_path/'m.safetensors')              # checks the file against the learner itself, too
    with mock.patch.object(pickle, 'loads', side_effect=AssertionError('unpickled')), \
         mock.patch.object(pickle, 'load', side_effect=AssertionError('unpickled')), \
         mock.patch.object(torch, 'load', side_effect=AssertionError('torch.load')):
        loaded = load_safe(f)
    (p0, _, d0), (p1, _, d1) = (l.get_preds(dl=l.dls.test_dl(new), with_decoded=True) for l in (learn, loaded))
    np.testing.assert_allclose(p1.numpy(), p0.numpy(), atol=1e-5)
    assert torch.equal(d0, d1)
    r0, r1 = learn.predict(new.iloc[1]), loaded.predict(new.iloc[1])
    assert str(r0[0]) == str(r1[0])
    if kind in ('category', 'multilabel'):
        assert 'temp' in loaded.model._modules and isinstance(loaded.loss_func, OperatingPoint)
        assert loaded.loss_func.threshold == learn.loss_func.threshold
    if kind == 'category':            # ONNX carries the temperature too
        ort = pytest.importorskip('onnxruntime')
        img, meta = (t.as_subclass(Tensor) for t in loaded.dls.test_dl(new).one_batch())
        export_onnx(loaded, tmp_path/'m.onnx', dl=loaded.dls.test_dl(new))
        out = ort.InferenceSession(str(tmp_path/'m.onnx')).run(None, {'image': img.numpy(), 'meta': meta.numpy()})[0]
        np.testing.assert_allclose(torch.tensor(out).softmax(1).numpy(), p0.numpy(), atol=1e-4)
    if kind != 'points':          # labels read by a column: the loaded learner scores labelled rows too
        assert len(loaded.get_preds(dl=loaded.dls.test_dl(new, with_labels=True))[1]) == len(new)

@pytest.fixture(scope='module')
def exported(synth, tmp_path_factory):
    path, df = synth('meta', n=64)
    learn = meta_cnn_learner(meta_dls(path, df, 'meta', bs=16), 'resnet10t', pretrained=False)
    f = learn.export_safe(tmp_path_factory.mktemp('safe')/'m.safetensors')
    from safetensors import safe_open
    with safe_open(str(f), 'pt') as h: desc = json.loads(h.metadata()['fastai_meta'])
    return f, desc, load_file(f)

def _write(f, desc, tensors, checksum=None):
    d = json.dumps(desc)
    save_file(tensors, str(f), metadata={'fastai_meta': d, 'checksum': checksum or digest(d, tensors)})
    return f

@pytest.mark.parametrize('change, says', [
    (lambda d: d.update(arch=dict(source='timm', name='os.system')), "not a model of timm or torchvision"),
    (lambda d: d.update(arch=dict(source='builtins', name='eval')), "not a model of timm or torchvision"),
    (lambda d: d.update(fusion=dict(name='evil', kwargs={})), "Unknown fusion 'evil'"),
    (lambda d: d.update(fusion=dict(name='film', kwargs=dict(__class__='os.system'))), "has no argument(s) ['__class__']"),
    (lambda d: d['learner'].update(ps='x'), "are not ones this format describes"),
    (lambda d: d['item_tfms'].append(dict(name='Pipeline', args={})), "not a transform this format describes"),
    (lambda d: d['learner'].update(init='os.system'), "['init'] are not ones this format describes"),
    (lambda d: d['learner'].update(n_out='2'), "['n_out'] are not ones this format describes"),
    (lambda d: d.update(loss=dict(name='CrossEntropyLossFlat', args=dict(weight='x'))), "not a transform this format describes"),
    (lambda d: d.update(version=99), "reads up to 1: upgrade"),
    (lambda d: d['meta'].update(fills=[]), "metadata description is inconsistent"),
    (lambda d: d['learner'].update(n_out=3), "weights do not fit"),
], ids=['timm-name', 'other-source', 'fusion', 'fusion-arg', 'ps', 'transform', 'argument', 'argument-type', 'loss-arg', 'version', 'encoding', 'shape'])
def test_a_description_that_names_unknown_code_is_refused(exported, tmp_path, change, says):
    f, desc, tensors = exported
    d = json.loads(json.dumps(desc))
    change(d)
    with pytest.raises(UnsafeFile, match=re.escape(says)): load_safe(_write(tmp_path/'bad.safetensors', d, tensors))

def test_a_changed_or_unpinned_file_is_refused(exported, tmp_path):
    f, desc, tensors = exported
    d = dict(desc, meta=dict(desc['meta'], means=[m + 1 for m in desc['meta']['means']]))        # edited, checksum not recomputed
    with pytest.raises(UnsafeFile, match='changed after export'):
        load_safe(_write(tmp_path/'a.safetensors', d, tensors, checksum=digest(json.dumps(desc), tensors)))
    t = dict(tensors); k = next(iter(t)); t[k] = t[k] + 1                                        # weights changed
    with pytest.raises(UnsafeFile, match='changed after export'):
        load_safe(_write(tmp_path/'b.safetensors', desc, t, checksum=digest(json.dumps(desc), tensors)))
    save_file(tensors, str(tmp_path/'c.safetensors'))                                            # weights only
    with pytest.raises(UnsafeFile, match='no fastai_meta description'): load_safe(tmp_path/'c.safetensors')
    (tmp_path/'d.safetensors').write_bytes(pickle.dumps({'a': 1}))                               # not safetensors at all
    with pytest.raises(UnsafeFile, match='not a safetensors file'): load_safe(tmp_path/'d.safetensors')
    sha = hashlib.sha256(Path(f).read_bytes()).hexdigest()
    assert load_safe(f, sha256=sha) is not None
    with pytest.raises(UnsafeFile, match='not the expected'): load_safe(f, sha256='0'*64)

def test_export_safe_refuses_what_it_cannot_describe(synth, tmp_path):
    path, df = synth('meta', n=64)
    dls = meta_dls(path, df, 'meta', bs=16)
    class MyFusion(ConcatFusion): pass
    for learn, says in [(meta_cnn_learner(dls, 'resnet10t', pretrained=False, fusion=MyFusion), 'is not one of'),
                        (meta_cnn_learner(dls, 'resnet10t', pretrained=False, loss_func=nn.CrossEntropyLoss()), 'cannot be described')]:
        with pytest.raises(UnsafeFile, match=says): learn.export_safe(tmp_path/'m.safetensors')
        assert not (tmp_path/'m.safetensors').exists()

def test_cli_predicts_with_a_safe_file(exported, synth, tmp_path, capsys):
    f, _, _ = exported
    path, df = synth('meta', n=64)
    df.drop(columns='label').to_csv(tmp_path/'new.csv', index=False)
    assert main(['predict', str(f), str(tmp_path/'new.csv'), str(path/'images'), '--out', str(tmp_path/'p.csv')]) == 0
    assert pd.read_csv(tmp_path/'p.csv').prediction.isin(['yes', 'no']).all()
    _write(tmp_path/'bad.safetensors', dict(json.loads(json.dumps(exported[1])), arch=dict(source='timm', name='nope')), exported[2])
    assert main(['predict', str(tmp_path/'bad.safetensors'), str(tmp_path/'new.csv'), str(path/'images')]) == 2
    assert 'refused the model' in capsys.readouterr().err

def test_every_build_argument_is_described_or_said_not_to_be():
    "`described_args` reads the annotated arguments: a new one without a type would silently be left out of every export."
    elsewhere = {'dls', 'arch', 'fusion', 'pretrained', 'weights', 'weights_path', 'init',     # described on their own
                 'normalize', 'loss_func', 'splitter', 'cbs', 'meta_dropout'}                  # or training only
    params = {p for f in (create_meta_model, meta_cnn_learner)
              for p in f.__code__.co_varnames[:f.__code__.co_argcount + f.__code__.co_kwonlyargcount]}
    left_out = params - set(described_args()) - elsewhere
    assert not left_out, f'arguments an export would drop: {sorted(left_out)} (annotate them, or add them above)'
    assert elsewhere <= params, sorted(elsewhere - params)
