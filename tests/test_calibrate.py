"Temperature scaling recovers a known temperature, ECE matches a hand computation, the operating point is the highest threshold that meets the target."
import warnings
import numpy as np, pandas as pd, pytest, torch
from fastai.vision.all import *
from fastai_meta.all import *
from fastai_meta.calibrate import calibration_error
from conftest import meta_dls

def _sampled(n=4000, c=4, seed=0, multi=False):
    "Logits `z` and targets drawn from them (softmax, or independent sigmoids)."
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g) * 1.5
    y = torch.bernoulli(torch.sigmoid(z), generator=g) if multi else torch.multinomial(z.softmax(1), 1, generator=g)[:, 0]
    return z, y

@pytest.mark.parametrize('multi', [False, True], ids=['softmax', 'sigmoid'])
@pytest.mark.parametrize('t', [0.5, 2.5])
def test_fit_temperature_recovers_a_known_temperature(multi, t):
    z, y = _sampled(multi=multi)
    assert abs(fit_temperature(z * t, y, multi=multi) - t) < 0.15 * t
    assert abs(fit_temperature(z, y, multi=multi) - 1) < 0.15        # calibrated logits are left alone

def test_a_temperature_at_the_bound_warns():
    z, _ = _sampled(n=500, c=3)
    with pytest.warns(UserWarning, match='at the edge'): fit_temperature(z, z.argmin(1))     # logits that point away from the answer

def test_calibration_error_against_a_hand_computation():
    z, y = _sampled(n=1000, c=3, seed=1)
    p = (2 * z).softmax(1)
    conf, pred = p.max(1)
    hit = (pred == y).float()
    bins = np.searchsorted(np.linspace(0, 1, 16)[1:-1], conf.numpy(), side='left')     # torchmetrics' bins: (lo, hi]
    ece = sum((bins == b).sum() / len(y) * abs(hit.numpy()[bins == b].mean() - conf.numpy()[bins == b].mean()) for b in np.unique(bins))
    assert abs(calibration_error(p, y) - ece) < 2e-3
    m_conf, m_acc, counts = reliability(p, y)
    assert counts.sum() == len(y) and (m_conf > m_acc).mean() > 0.5            # doubled logits: over-confident in most bins

def test_operating_point_is_the_highest_threshold_that_meets_the_target():
    rng = np.random.default_rng(0)
    y = torch.tensor(rng.integers(0, 3, 600))
    p = torch.tensor(rng.dirichlet([1, 1, 1], 600)).float()
    p[:, 1] = torch.where(y == 1, p[:, 1] * 0.5 + 0.5, p[:, 1] * 0.7)          # class 1 is findable
    p = p / p.sum(1, keepdim=True)
    op = operating_point(p, y, 1, sensitivity=0.9)
    pos = (y == 1).numpy(); s = p[:, 1].numpy()
    sens = lambda t: (s[pos] >= t).mean()
    assert sens(op['threshold']) >= 0.9 and abs(sens(op['threshold']) - op['sensitivity']) < 1e-9
    higher = np.unique(s)[np.unique(s) > op['threshold']]
    assert len(higher) == 0 or sens(higher.min()) < 0.9                          # nothing higher would do
    assert abs(op['specificity'] - (s[~pos] < op['threshold']).mean()) < 1e-9
    assert op['sensitivity_ci'][0] < op['sensitivity'] <= op['sensitivity_ci'][1]
    with pytest.raises(ValueError, match='positives and negatives'): operating_point(p, torch.zeros(600, dtype=torch.long), 1)

def test_operating_point_decodes_the_class_at_its_threshold():
    op = OperatingPoint(CrossEntropyLossFlat(), idx=2, threshold=0.2)
    p = torch.tensor([[0.7, 0.1, 0.2], [0.5, 0.4, 0.1], [0.1, 0.3, 0.6]])
    assert op.decodes(p).tolist() == [2, 0, 2]
    ml = OperatingPoint(BCEWithLogitsLossFlat(), idx=0, threshold=0.9, multi=True)
    assert ml.decodes(torch.tensor([[0.8, 0.6], [0.95, 0.1]])).tolist() == [[False, True], [True, False]]

def test_calibrate_holds_the_temperature_in_the_model(synth):
    path, df = synth('meta', n=64)
    learn = meta_cnn_learner(meta_dls(path, df, 'meta', bs=16), 'resnet10t', pretrained=False)
    with learn.no_bar():
        raw = learn.get_preds(act=noop)[0]
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')                     # an untrained model: its temperature may sit at a bound
            c1 = learn.calibrate(); c2 = learn.calibrate()
        assert c1.temperature == c2.temperature                 # refitted from the raw logits, not compounded
        probs = learn.get_preds()[0]
    np.testing.assert_allclose(probs.numpy(), (raw / c1.temperature).softmax(1).numpy(), atol=1e-5)
    report = learn.meta_report(['site'], metrics=[ExpectedCalibrationError()])
    assert set(report.column) == {'(all)', 'site'} and report.ece.between(0, 1).all()

def test_calibrate_refuses_regression(synth):
    path, df = synth('meta', n=64)
    dls = MetaDataLoaders.from_df(df.assign(noise=df.noise.fillna(0.)), path, folder='images', fn_col='fname', label_col='noise',
                                  y_block=RegressionBlock, cat_names=['site'], cont_names=['age'], seed=0, bs=16, num_workers=0)
    learn = meta_cnn_learner(dls, 'resnet10t', pretrained=False)
    with pytest.raises(ValueError, match='classifiers'): learn.calibrate()

def test_reliability_in_bins_of_equal_counts():
    "`strategy='quantile'` (what `Calibration.plot` draws): every bin holds as many rows, and the points still show over-confidence."
    z, y = _sampled(n=1000, c=3, seed=1)
    p = (2 * z).softmax(1)
    m_conf, m_acc, counts = reliability(p, y, n_bins=10, strategy='quantile')
    assert counts.sum() == len(y) and counts.min() >= 95 and counts.max() <= 105 and len(m_conf) == 10
    assert (m_conf > m_acc).mean() > 0.5 and (np.diff(m_conf) > 0).all()
