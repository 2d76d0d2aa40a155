"Channels-last and mixed precision on the learner's device (`to_fast`): same accuracy as float32, float32 inference, a measured choice."
import pytest
from fastai.vision.all import *
from fastai_meta.all import *
from fastai_meta.speed import _amp_choices
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
    "bf16 autocast + channels-last (forced, on the CPU too) learns the xor task as well as float32; inference and exports stay float32."
    path, df = synth('xor')
    acc32 = fit_quietly(xor_learner(path, df, fast=False), 8)[1]
    learn = xor_learner(path, df, fast=True)
    learn.to_fast(amp=True).add_cbs([Dtypes(), TrainLosses()])
    acc = fit_quietly(learn, 8)[1]
    amp = torch.bfloat16 if not GPU or torch.cuda.is_bf16_supported() else torch.float16
    print(f'{amp} + channels_last: accuracy {acc:.3f}, float32 {acc32:.3f}')
    assert learn.dtypes.seen[True] == {amp} and learn.dtypes.seen[False] == {torch.float32}   # training autocast, validation float32
    assert torch.isfinite(torch.stack(learn.train_losses.losses)).all()
    assert all(p.dtype == torch.float32 for p in learn.model.parameters())       # master weights stay float32
    assert learn.model[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert acc >= 0.9 and abs(acc - acc32) <= 0.1
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

@pytest.mark.skipif(GPU or not cpu_bf16_supported(), reason='measuring only happens on a CPU with native bfloat16')
def test_choice_is_measured_and_remembered(synth):
    "On a bf16 CPU, the first training batches time float32 and bf16 in turn; the faster is kept, and remembered for the same model and shape."
    path, df = synth('xor', n=160)
    _amp_choices.clear()
    learn = xor_learner(path, df, fast=True).add_cb(Dtypes())
    fit_quietly(learn, 2)
    trial = learn.amp_trial
    assert set(trial) == {'float32', 'bfloat16'} and all(t > 0 for t in trial.values())
    expected = torch.bfloat16 if trial['float32'] >= 1.1 * trial['bfloat16'] else None
    assert learn.fast_training.amp_dtype == expected
    assert learn.dtypes.seen[True] == {torch.float32, torch.bfloat16}                  # both were tried, on real batches
    again = xor_learner(path, df, fast=True).add_cb(Dtypes())
    fit_quietly(again, 1)
    assert again.fast_training.amp_dtype == expected and not hasattr(again, 'amp_trial')
    assert again.dtypes.seen[True] == {expected or torch.float32}                      # no trial the second time

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
