"Every fusion strategy builds, backpropagates into the metadata branch, freezes right and learns tasks that need the metadata."
from functools import partial
import numpy as np, pytest
from fastai.vision.all import *
from fastai_meta.all import *
from fastai_meta.fusion import fusions, FiLMFusion, CSFFusion
from fastai_meta.model import Fusion
from conftest import COLS, meta_dls, fit_quietly

FUSIONS = list(fusions)

def _points_dls(path, df, size):
    return DataLoaders.from_dblock(DataBlock(blocks=(*TabularImageBlock('fname', *COLS['points'], pref=path/'images'), PointBlock),
                                             get_y=point_getter, splitter=RandomSplitter(seed=0), item_tfms=Resize(size)), df, bs=32, num_workers=0)

@pytest.mark.parametrize('size', [32, 48])
@pytest.mark.parametrize('arch', [resnet18, 'resnet18'], ids=['torchvision', 'timm'])
@pytest.mark.parametrize('fusion', FUSIONS)
def test_fusion_builds_backprops_and_freezes(synth, fusion, arch, size, tmp_path):
    path, df = synth('meta', n=64)
    dls = meta_dls(path, df, 'meta', bs=8, item_tfms=Resize(size))
    wp = tmp_path/'w.pth'
    torch.save(resnet18().state_dict(), wp) if not isinstance(arch, str) else None
    learn = meta_cnn_learner(dls, arch, fusion=fusion, pretrained=not isinstance(arch, str), weights_path=None if isinstance(arch, str) else wp)
    if isinstance(arch, str): learn.freeze()   # timm without weights: freeze by hand to check the split
    x, meta, y = dls.one_batch()
    model = learn.model.train()
    out = model(x, meta)
    test_eq(out.shape, (8, 2))
    learn.loss_func(out, y).backward()
    assert learn.model[1].embeds[0].weight.grad.abs().sum() > 0                   # gradients reach the metadata branch
    for p in list(model[2].parameters()) + list(model[3].parameters()): assert p.requires_grad
    assert not all(p.requires_grad for p in model[0].parameters())                # the body is frozen...
    test_eq(sum(len(g) for g in learn.opt.param_lists), len(list(model.parameters())))  # ...and every parameter is in a group

@pytest.mark.parametrize('fusion', FUSIONS)
def test_fusion_learns_label_from_metadata(synth, fusion):
    "timm resnet10t (a third of resnet18's time here), 32 px: the label depends only on the metadata."
    path, df = synth('meta')
    set_seed(0, reproducible=True)
    acc = fit_quietly(meta_cnn_learner(meta_dls(path, df, 'meta'), 'resnet10t', fusion=fusion, pretrained=False, ps=0.1, meta_ps=0.1, metrics=accuracy), 6)[1]
    print(f'{fusion}: accuracy {acc:.3f}')
    assert acc >= 0.7                  # seen 0.84-0.96 over fusions at 1 and 2 threads; chance: 0.50 ± 0.06 on 80 rows

@pytest.mark.parametrize('fusion', ['csf'])     # the staged fusion; concat: test_learner's augmented keypoint test; every fusion learns labels above
def test_fusion_learns_keypoints_from_metadata(synth, fusion):
    "timm resnet10t (half resnet18's time here), 32 px: the keypoint's place is in the metadata."
    path, df = synth('points', size=32)
    set_seed(0, reproducible=True)
    dls = _points_dls(path, df, 32)
    mse = fit_quietly(meta_cnn_learner(dls, 'resnet10t', fusion=fusion, pretrained=False, ps=0.1, meta_ps=0.1, y_range=(-1, 1)), 10)[0]
    y = torch.cat([b[2] for b in dls.valid]).view(-1, 2)
    baseline = ((y - y.mean(0))**2).mean().item()                                # predicting the mean point
    print(f'{fusion}: keypoint MSE {mse:.4f}, baseline {baseline:.4f}')
    assert mse < 0.5 * baseline                  # seen 0.06-0.08 x baseline at 1 and 2 threads

def test_fusion_options_and_custom_fusion(synth):
    path, df = synth('meta', n=64)
    dls = meta_dls(path, df, 'meta', bs=8)
    learn = meta_cnn_learner(dls, resnet18, fusion=partial(FiLMFusion, stages=[-1], concat_meta=False), pretrained=False)
    test_eq(list(learn.model[2].films), ['4'])
    test_eq(learn.model[2].n_out, 1024)
    class Gate(Fusion):
        def __init__(self, channels, n_meta, pool=True, concat_pool=True):
            self.setup_pool(channels[-1], n_meta, pool, concat_pool)
            self.gate = nn.Linear(n_meta, channels[-1])
        def forward(self, x, u): return self.pooled(x * torch.sigmoid(self.gate(u))[:, :, None, None], u)
    learn = meta_cnn_learner(dls, resnet18, fusion=Gate, pretrained=False)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    with pytest.raises(ValueError, match='Unknown fusion'): meta_cnn_learner(dls, resnet18, fusion='late', pretrained=False)
    with pytest.raises(TypeError, match='not an instance'): meta_cnn_learner(dls, resnet18, fusion=Gate([512], 10), pretrained=False)

def test_unstageable_arch_fails_clearly(synth):
    path, df = synth('meta', n=64)
    dls = meta_dls(path, df, 'meta', bs=8, item_tfms=Resize(32))
    with pytest.raises(ValueError, match='stage'):
        meta_cnn_learner(dls, 'vit_tiny_patch16_224', fusion='csf', pretrained=False)

def test_self_contrastive_guidance(synth, tmp_path):
    path, df = synth('meta')
    set_seed(0, reproducible=True)
    learn = meta_cnn_learner(meta_dls(path, df, 'meta'), resnet18, pretrained=False, ps=0.1, meta_ps=0.1, contrastive=0.1, metrics=accuracy)
    assert 'proj' in learn.model._modules and any(isinstance(cb, SelfContrastive) for cb in learn.cbs)
    acc = fit_quietly(learn, 6)[1]
    print(f'self-contrastive: accuracy {acc:.3f}, last guidance loss {learn.guidance_loss.item():.3f}')
    assert acc >= 0.7 and learn.guidance_loss.item() > 0   # seen 0.85-0.975 (1 and 2 threads); chance 0.50 ± 0.06
    x, meta, _ = learn.dls.one_batch()
    test_eq(learn.model.eval()(x, meta).shape, (32, 2))                            # plain output outside training
    learn.export(tmp_path/'guided.pkl')
    loaded = load_learner(tmp_path/'guided.pkl')
    with learn.no_bar(), loaded.no_bar(): test_close(loaded.predict(df.iloc[0])[2], learn.predict(df.iloc[0])[2])

def test_arcface_head_and_embeddings(synth):
    path, df = synth('meta')
    set_seed(0, reproducible=True)
    learn = meta_cnn_learner(meta_dls(path, df, 'meta'), resnet18, pretrained=False, ps=0.1, meta_ps=0.1, arcface=True, emb_dim=64, metrics=accuracy)
    assert isinstance(learn.loss_func, ArcFaceLoss)
    acc = fit_quietly(learn, 8, 1e-2)[1]
    tr, ytr = learn.get_embeddings(learn.dls.train.new(shuffle=False, drop_last=False))
    va, yva = learn.get_embeddings()
    test_close(va.norm(dim=1), torch.ones(len(va)), eps=1e-4)
    nn_acc = (ytr[(va @ tr.T).argmax(1)] == yva).float().mean().item()            # retrieval: nearest training embedding
    print(f'arcface: accuracy {acc:.3f}, nearest-neighbour retrieval accuracy {nn_acc:.3f}')
    assert acc >= 0.7 and nn_acc >= 0.7                    # chance: 0.50 ± 0.06 on 80 rows
    with learn.no_bar(): assert learn.predict(df.iloc[0])[0] in ('yes', 'no')

@pytest.mark.parametrize('fusion', FUSIONS)
def test_meta_importance_runs_for_every_fusion(synth, fusion):
    path, df = synth('meta', n=64)
    learn = meta_cnn_learner(meta_dls(path, df, 'meta', bs=8), resnet18, fusion=fusion, pretrained=False, metrics=accuracy)
    res = learn.meta_importance(n_repeats=1, show=False)
    test_eq(list(res.feature), ['site', 'age', 'noise', 'all metadata missing', 'no image'])
    assert res.score_drop.notna().all()

@pytest.mark.parametrize('fusion', ['concat', 'metanet', 'metablock'])
def test_late_fusions_on_a_body_that_pools_itself(synth, fusion):
    "A timm ViT hands over pooled (B, C) features: the late fusions take them as they are."
    path, df = synth('meta', n=64)
    learn = meta_cnn_learner(meta_dls(path, df, 'meta', bs=4, item_tfms=Resize(224)), 'vit_tiny_patch16_224', fusion=fusion, pretrained=False)
    x, meta, y = learn.dls.one_batch()
    out = learn.model.train()(x, meta)
    test_eq(out.shape, (4, 2))
    learn.loss_func(out, y).backward()
    assert learn.model[1].embeds[0].weight.grad.abs().sum() > 0
