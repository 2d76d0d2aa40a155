"Model: `create_meta_model`'s parts, shapes and splitter groups, and `MetaModel`'s contract, on small inputs."
import numpy as np, pandas as pd, pytest
from fastai.vision.all import *
from fastai_meta.all import *
from fastai_meta.learner import described_args
from fastai_meta.model import MetaBranch, TargetScale
from conftest import meta_dls

def test_parts_sit_where_fastai_s_splitters_look(synth):
    path, df = synth('meta', n=64, size=16)
    dls = meta_dls(path, df, 'meta', bs=8)
    m = create_meta_model(dls, resnet18, pretrained=False)
    assert isinstance(m, MetaModel) and isinstance(m[1], MetaBranch) and isinstance(m[2], ConcatFusion)
    x, meta, _ = dls.one_batch()
    test_eq(m.eval()(x, meta).shape, (8, 2))
    test_eq(m[1](meta).shape[1], m[1].n_out)
    groups = model_meta[resnet18]['split'](m)
    test_eq(sum(len(list(g)) for g in groups), len(list(m.parameters())))      # every parameter in one group
    assert all(p in set(groups[-1]) for p in m[1].parameters())                # the metadata branch trains with the head

def test_the_metadata_reaches_the_output(synth):
    "Two rows with the same image and different metadata give different outputs; with the same metadata, the same."
    path, df = synth('meta', n=64, size=16)
    dls = meta_dls(path, df, 'meta', bs=8)
    m = create_meta_model(dls, resnet18, pretrained=False).eval()
    x, meta, _ = dls.one_batch()
    same = x[:1].expand(2, -1, -1, -1)
    with torch.no_grad():
        a = m(same, meta[:2]); b = m(same, meta[[0, 0]])
    assert (a[0] - a[1]).abs().max() > 1e-4 and (b[0] - b[1]).abs().max() < 1e-6

def test_the_build_arguments_are_recorded_once(synth):
    path, df = synth('meta', n=64, size=16)
    learn = meta_cnn_learner(meta_dls(path, df, 'meta', bs=8), resnet18, pretrained=False, ps=0.1, meta_layers=(32,), wide=True)
    types = described_args()
    assert {'ps', 'meta_layers', 'wide', 'image_pool', 'fast', 'arc_m'} <= set(types) and not {'dls', 'arch', 'weights_path'} & set(types)
    test_eq((learn.meta_args['ps'], learn.meta_args['meta_layers'], learn.meta_args['wide']), (0.1, (32,), True))
    assert all(isinstance(learn.meta_args[k], t) for k,t in types.items()), {k: learn.meta_args[k] for k in types}
    assert isinstance(learn, MetaLearner) and 'wide' in learn.model._modules

def test_image_pool_masks_missing_images():
    h = torch.tensor([[[1., 1.], [3., 5.]], [[2., 2.], [100., 100.]]])
    present = torch.tensor([[True, True], [True, False]])
    for how, want in (('mean', [[2., 3.], [2., 2.]]), ('max', [[3., 5.], [2., 2.]])):
        test_close(ImagePool(2, 2, how)(h, present), torch.tensor(want))
    w = ImagePool(2, 2, 'attention').weights(h, present)
    test_close(w[1], torch.tensor([1., 0.]))                                 # a missing image gets no weight
    test_eq(ImagePool(2, 2, 'concat')(h, present)[1].tolist(), [2., 2., 0., 0., 1., 0.])
    slots = ImagePool(2, 2, 'slots')
    test_close(slots(h, present), ImagePool(2, 2, 'mean')(h, present))         # starts as a plain mean...
    with torch.no_grad(): slots.slot_scale[1] = -1.                          # ...and can learn to weigh each input on its own
    test_close(slots(h, torch.ones(2, 2, dtype=torch.bool)), h[:, 0] / 2)

def test_slots_let_the_metadata_pick_the_image():
    "With the metadata's width, 'slots' starts as a plain mean whatever the metadata, and a linear map of the metadata features can pick one image per row."
    h, both = torch.tensor([[[1., 2.], [10., 20.]], [[1., 2.], [10., 20.]]]), torch.ones(2, 2, dtype=torch.bool)
    u = torch.tensor([[1.], [-1.]])                                          # one metadata feature: +1 picks image 1, -1 image 2
    pool = ImagePool(2, 2, 'slots', n_meta=1)
    test_close(pool(h, both, u), ImagePool(2, 2, 'mean')(h, both))
    with torch.no_grad(): pool.slot_film.weight[:] = torch.tensor([[1.], [1.], [-1.], [-1.]])   # image 1's weights +u, image 2's -u
    test_close(pool(h, both, u), torch.tensor([[1., 2.], [10., 20.]]))       # each row reads the image its metadata picks

def test_target_scale_round_trips():
    s = TargetScale(torch.tensor([10_000.]), torch.tensor([2_000.]))
    test_close(s(s.standardise(torch.tensor([[12_000.]]))), torch.tensor([[12_000.]]))
    r = TargetScale(torch.tensor([50.]), torch.tensor([10.]), y_range=(0., 100.))
    out = r(torch.tensor([[-50.], [50.]]))
    assert (out >= 0).all() and (out <= 100).all()
