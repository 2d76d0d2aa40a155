"Channels-last and mixed precision on the learner's device (`to_fast`): same accuracy as float32, float32 inference, a fixed rule that repeats across processes."
import subprocess
import pytest
from fastai.vision.all import *
from fastai_meta.all import *
from fastai_meta.speed import FastTraining, cpu_bf16_supported, has_depthwise
from conftest import meta_dls, fit_quietly

GPU = torch.cuda.is_available()

class Dtypes(Callback):
    "The dtype of the body's first conv output, per training and per inference batch."
    def before_fit(self):
        self.seen = getattr(self, 'seen', {True: set(), False: set()})
        self.hook = self.model[0][0].register_forward_hook(lambda m,i,o: self.seen[m.training].add(o.dtype))
    def after_fit(self): self.hook.remove()

class TrainLosses(Callback):
    "Every training batch's loss (fastai's `validate` clears the recorder's)."
    def before_fit(self): self.losses = getattr(self, 'losses', [])
    def after_batch(self):
        if self.training: self.losses.append(self.learn.loss.detach().float())

def xor_learner(path, df, fast, **kw):
    set_seed(0, reproducible=True)
    return meta_cnn_learner(meta_dls(path, df, 'xor', device='cuda' if GPU else 'cpu'), resnet18, pretrained=False, ps=0.1,
                            meta_ps=0.1, metrics=accuracy, fast=fast, **kw)

def test_mixed_precision_matches_fp32_and_predicts_in_fp32(synth, tmp_path):
    "bf16 autocast + channels-last (forced, on the CPU too) learns the xor task; inference and exports stay float32."
    path, df = synth('xor', size=16)                 # bf16 is emulated, slowly, on a CPU without its instructions
    learn = xor_learner(path, df, fast=True)
    learn.to_fast(amp=True).add_cbs([Dtypes(), TrainLosses()])
    acc = fit_quietly(learn, 5)[1]
    amp = torch.bfloat16 if not GPU or torch.cuda.is_bf16_supported() else torch.float16
    print(f'{amp} + channels_last: accuracy {acc:.3f}')
    # training autocast (float32 too where a step's gradients were not finite: that fit goes on in float32, saying so)
    assert learn.dtypes.seen[True] in ({amp}, {amp, torch.float32}) and learn.dtypes.seen[False] == {torch.float32}
    # every loss finite, but for the one batch whose step the guard skipped if bfloat16 failed here (then float32 on)
    bad = int((~torch.isfinite(torch.stack(learn.train_losses.losses))).sum())
    assert bad == 0 or (bad == 1 and learn.fast_training.amp_dtype is None), bad
    assert all(p.dtype == torch.float32 for p in learn.model.parameters())       # master weights stay float32
    assert learn.model[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert acc >= 0.9                     # chance 0.5; in float32 this task reaches 0.99 (interpret page)
    rows = df.iloc[:64]
    with learn.no_bar(): probs, _ = learn.get_preds(dl=learn.dls.test_dl(rows))
    learn.remove_cbs([learn.dtypes, learn.train_losses])
    learn.export(tmp_path/'m.pkl')
    loaded = load_learner(tmp_path/'m.pkl', cpu=True)
    with loaded.no_bar():
        _, _, p1 = loaded.predict(rows.iloc[0])
        probs2, _ = loaded.get_preds(dl=loaded.dls.test_dl(rows))
    assert p1.dtype == torch.float32 and probs2.dtype == torch.float32
    test_close(probs2, probs.cpu(), eps=1e-4)       # the loaded learner predicts as the trained one did, in float32
    traced = export_torchscript(learn, tmp_path/'m.pt')
    x, m = learn.dls.valid.one_batch()[:2]
    with torch.no_grad(): test_close(traced(x.as_subclass(Tensor), m.as_subclass(Tensor)), learn.model.eval()(x, m), eps=1e-4)

class SpoilGrads(Callback):
    """Non-finite gradients on one training batch in bfloat16 (after the first): what a bfloat16 kernel gave here once.
    None if the fit already went to float32 (that kernel did it again): float32 steps are not guarded, as in fastai."""
    order = 5
    def before_fit(self): self.done = False
    def after_backward(self):
        if self.done or self.train_iter < 1 or self.learn.fast_training.amp_dtype != torch.bfloat16: return
        next(self.model.parameters()).grad[0] = float('nan'); self.done = True

def test_non_finite_bf16_step_is_skipped_and_the_fit_goes_on_in_fp32(synth):
    "A bfloat16 step whose gradients are not finite is skipped with a warning; the learner goes on in float32, its weights finite."
    if GPU: pytest.skip('the fallback is for bfloat16 on the CPU')
    path, df = synth('xor', size=16)
    learn = xor_learner(path, df, fast=True)
    learn.to_fast(amp=True).add_cbs([Dtypes(), TrainLosses(), SpoilGrads()])
    with pytest.warns(UserWarning, match='non-finite gradients.*float32'): acc = fit_quietly(learn, 5)[1]
    assert learn.dtypes.seen[True] == {torch.bfloat16, torch.float32} and learn.fast_training.amp_dtype is None
    assert all(p.isfinite().all() for p in learn.model.parameters())
    assert acc >= 0.9                     # chance 0.5

def test_seeded_training_repeats_across_processes(tmp_path):
    "Two processes, started together, train bit-identical models from one seed, with the rule's autocast and with the other precision."
    make_synthetic(tmp_path, n=64, task='xor', size=32, seed=1).to_pickle(tmp_path/'df.pkl')
    worker = str(Path(__file__).parent/'repro_worker.py')
    procs = [subprocess.Popen([sys.executable, worker, str(tmp_path), str(tmp_path/f'run{i}.pt')], stderr=subprocess.PIPE, text=True) for i in (0, 1)]
    for p in procs: assert p.wait(timeout=600) == 0, p.stderr.read()[-3000:]
    a, b = (torch.load(tmp_path/f'run{i}.pt') for i in (0, 1))
    expected = str(torch.bfloat16 if cpu_bf16_supported() else None)    # resnet18 has no depthwise convolutions
    assert a['dtype'] == b['dtype'] == expected and {a['other_dtype'], b['other_dtype']} == {str(torch.bfloat16 if expected == 'None' else None)}
    for k in ('rule', 'other'):
        assert all(torch.equal(a[k][n], b[k][n]) for n in a[k]), f'{k}: the two processes trained different weights'
    assert any(not torch.equal(a['rule'][n], a['other'][n]) for n in a['rule'])     # the two precisions train differently: the check can fail

def test_rule_keeps_depthwise_bodies_in_float32(synth):
    "EfficientNet's depthwise convolutions train slower in bf16 on a CPU: `to_fast` keeps float32 for them, bf16 for ResNet where the CPU has it."
    import timm
    path, df = synth('xor', n=96)
    learn = meta_cnn_learner(meta_dls(path, df, 'xor', device='cpu'), 'tf_efficientnet_lite0', pretrained=False, fast=True)
    fit_quietly(learn, 1)
    assert learn.fast_training.amp_dtype is None and has_depthwise(learn.model)
    assert amp_rule(timm.create_model('tf_efficientnet_lite0'), 'cpu', bf16=True) is None
    assert amp_rule(resnet18(), 'cpu', bf16=True) == torch.bfloat16 and amp_rule(resnet18(), 'cpu', bf16=False) is None

def test_vision_learner_to_fast_and_deferring_to_fastai_amp(synth):
    "fastai's own learners get the same path in one call; with fastai's `to_fp16()` it keeps only the memory format."
    path, df = synth('xor', n=96)
    dls = ImageDataLoaders.from_df(df, path, folder='images', fn_col='fname', label_col='label', bs=16, num_workers=0, seed=0)
    learn = vision_learner(dls, resnet18, pretrained=False).to_fast(amp=True)
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    assert learn.model[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert learn.fast_training.amp_dtype is not None
    learn.to_fp16()
    with learn.no_bar(), learn.no_logging(): learn.fit(1)
    assert learn.fast_training.amp_dtype is None                                         # fastai's MixedPrecision decides
    learn.to_fp32()
    assert not learn.cbs.filter(lambda c: isinstance(c, MixedPrecision))                 # to_fp32 removes both

def test_exports_when_library_is_pickled_by_value(synth, tmp_path):
    "A learner trained with `to_fast` exports even when cloudpickle copies the library's code by value, as it does for a notebook's own definitions (nbdev-test runs the source notebooks and other notebooks in one process)."
    import cloudpickle, fastai_meta
    mods = [m for n, m in sys.modules.items() if n.startswith('fastai_meta.') and n.count('.') == 1]
    path, df = synth('xor', n=96)
    learn = xor_learner(path, df, fast=True)
    fit_quietly(learn, 1)
    for m in mods: cloudpickle.register_pickle_by_value(m)
    try: learn.export(tmp_path/'m.pkl')
    finally:
        for m in mods: cloudpickle.unregister_pickle_by_value(m)
    loaded = load_learner(tmp_path/'m.pkl', cpu=True)
    assert type(loaded.fast_training).__name__ == 'FastTraining'
    with loaded.no_bar(): assert loaded.predict(df.iloc[0])[2].shape == (2,)

def test_meta_cnn_learner_trains_channels_last_in_float32_by_default(synth):
    "The default `fast='channels_last'`: the faster memory format, no autocast, whatever the CPU; a wrong value is refused."
    path, df = synth('xor', n=96)
    dls = meta_dls(path, df, 'xor', bs=16, device='cpu')
    learn = meta_cnn_learner(dls, resnet18, pretrained=False).add_cb(Dtypes())
    fit_quietly(learn, 1)
    assert learn.model[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert learn.fast_training.amp_dtype is None and learn.dtypes.seen[True] == {torch.float32}
    assert not meta_cnn_learner(dls, resnet18, pretrained=False, fast=False).cbs.filter(lambda c: isinstance(c, FastTraining))
    with pytest.raises(ValueError, match="'channels_last'"): meta_cnn_learner(dls, resnet18, pretrained=False, fast='bf16')
