"`meta_compare`: paired, grouped cross-validation of image only against fusions, the metadata alone and their product."
import json
import numpy as np, pandas as pd, pytest
from PIL import Image
from scipy import stats
from fastai.vision.all import *
from fastai_meta.all import *
from fastai_meta.scores import product_of_experts
from fastai_meta.crossfit import write_json
import fastai_meta.compare as compare
from fastai_meta.cli import main

def _compare(path, df, arch='lcnet_050', **kwargs):
    "`meta_compare` from scratch with a small timm body (lcnet_050: 4x faster to train here than resnet18) on 16-pixel images."
    return meta_compare(df, path, folder='images', group_col='patient', cat_names=['site'], cont_names=['age'], arch=arch,
                        pretrained=False, size=16, **kwargs)

def test_metadata_that_reveals_the_label_gives_an_interval_above_zero(synth):
    "Images are noise and the label follows from age and site: concat's paired lift is large, its whole interval above 0; image only stays near chance."
    path, df = synth('meta', n=200)
    df = df.assign(patient=[f'P{i // 2}' for i in range(len(df))])
    res = _compare(path, df, epochs=5, n_folds=4, bs=16)
    image = res.scores[res.scores.model == compare.IMAGE].balanced_accuracy.mean()
    l = res.lift['concat']['balanced_accuracy']
    print(f"image only {image:.3f}; concat lift {l}")
    assert image <= 0.65 and l['low'] > 0 and l['mean'] >= 0.2 and l['wins'] == 4      # seen at 1 thread: image 0.46, lift +0.44 [+0.22, +0.67]
    assert res.verdict.startswith('the table carries signal on its own: ') and '; the network uses the metadata: concat ' in res.verdict

def _colour_table(path, n=120, size=16, seed=0):
    "Red or blue noise images (the label), with age and site drawn at random: metadata that is pure noise."
    rng = np.random.default_rng(seed)
    (path/'images').mkdir(parents=True, exist_ok=True)
    red = rng.random(n) < 0.5
    for i,r in enumerate(red):
        im = rng.integers(0, 60, (size, size, 3)); im[..., 0 if r else 2] += 180
        Image.fromarray(im.astype('uint8')).save(path/'images'/f'{i}.png')
    return pd.DataFrame(dict(fname=[f'{i}.png' for i in range(n)], label=np.where(red, 'red', 'blue'), site=rng.choice(['head', 'arm', 'leg'], n),
                             age=rng.uniform(20, 80, n).round(), patient=[f'P{i // 2}' for i in range(n)]))

def test_noise_metadata_gives_an_interval_that_covers_zero(tmp_path):
    "The image gives the label away and the metadata is noise: image only is near perfect, concat's interval covers 0, the metadata alone is near chance."
    df = _colour_table(tmp_path)
    res = _compare(tmp_path, df, 'resnet10t', epochs=3, n_folds=3, bs=16)    # lcnet_050 learns colour unevenly (0.59 to 0.98 over folds)
    s = res.scores.groupby('model').balanced_accuracy.mean()
    l = res.lift['concat']['balanced_accuracy']
    print(s.to_dict(), l)
    assert s[compare.IMAGE] >= 0.9 and s[compare.GBM] <= 0.7
    assert l['low'] <= 0 <= l['high'] and 'the network uses the metadata' not in res.verdict
    assert res.verdict.startswith('no clear signal in the table on its own')

def test_paired_stats_against_a_hand_computation():
    d, frac = [0.03, -0.01, 0.05, 0.02, 0.04], 0.2
    n, mean, var = 5, 0.026, np.var(d, ddof=1)
    half = stats.t.ppf(0.975, n - 1) * np.sqrt((1/n + frac/(1 - frac)) * var)        # Nadeau and Bengio's corrected variance
    r = paired_stats(d, test_frac=frac)
    test_close([r['mean'], r['low'], r['high']], [mean, mean - half, mean + half], eps=1e-12)
    test_eq((r['wins'], r['n']), (4, 5))
    plain = paired_stats(d)
    test_close(plain['high'] - plain['mean'], 2.7764451051977987 * np.sqrt(var/n), eps=1e-9)   # t(4) at 0.975, by hand
    assert np.isnan(paired_stats([0.1])['low']) and paired_stats([np.nan, 0.1, 0.2])['n'] == 2
    p = product_of_experts([[0.8, 0.2]], [[0.5, 0.5]], [0.5, 0.5])
    test_close(p, [[0.8, 0.2]])                                                       # an uninformative expert changes nothing

def _fake_train(calls, stop_at=None):
    "A stand-in for training: fusions know the label (0.9), image only does not (0.5); raises KeyboardInterrupt on call `stop_at`."
    def train(name, df, valid, a):
        calls.append(name)
        if stop_at is not None and len(calls) == stop_at: raise KeyboardInterrupt
        y = (df[a.spec['label_col']][valid] == 'yes').to_numpy()
        p = np.where(y, 0.9, 0.1) if name != compare.IMAGE else np.full(len(y), 0.5)
        run = dict(probs=np.stack([1 - p, p], 1).tolist(), vocab=['no', 'yes'])
        if name != compare.IMAGE: run['columns'] = [['site'], ['age']]
        return run
    return train

def test_an_interrupted_run_resumes(synth, tmp_path, monkeypatch):
    "Stopped after 3 of 6 runs, a second call with the same settings trains only the other 3 and gives what one uninterrupted run gives; other settings are refused."
    path, df = synth('meta', n=120)
    df = df.assign(patient=[f'P{i // 2}' for i in range(len(df))])
    calls = []
    monkeypatch.setattr(compare, '_train', _fake_train(calls, stop_at=4))
    with pytest.raises(KeyboardInterrupt): _compare(path, df, n_folds=3, out=tmp_path/'a')
    test_eq(len(json.loads((tmp_path/'a'/'compare.json').read_text())['runs']), 3)
    monkeypatch.setattr(compare, '_train', _fake_train(calls))
    res = _compare(path, df, n_folds=3, out=tmp_path/'a')
    test_eq(len(calls), 4 + 3)                                                        # the 4th was interrupted, so trained again
    whole = _compare(path, df, n_folds=3, out=tmp_path/'b')
    test_eq(res.verdict, whole.verdict); test_eq(res.lift, whole.lift)
    saved = json.loads((tmp_path/'a'/'compare.json').read_text())
    test_eq(saved['lift']['concat']['balanced_accuracy'], [res.lift['concat']['balanced_accuracy'][k] for k in ('mean', 'low', 'high')])
    assert all((tmp_path/'a'/f'compare.{e}').exists() for e in ('md', 'png'))
    with pytest.raises(ValueError, match="other settings.*epochs"): _compare(path, df, n_folds=3, epochs=2, out=tmp_path/'a')

def test_bad_input_is_refused_clearly(synth, tmp_path, capsys):
    path, df = synth('meta', n=64)
    with pytest.raises(ValueError, match='regression'): meta_compare(df.assign(y=np.linspace(0, 1, len(df))), path, label_col='y', task='classification')
    with pytest.raises(ValueError, match="Group column 'patient' is missing"):
        meta_compare(df.assign(patient=[None] + ['P'] * (len(df) - 1)), path, folder='images', group_col='patient')
    df.to_csv(tmp_path/'t.csv', index=False)
    assert main(['compare', str(tmp_path/'t.csv'), str(path/'images'), '--label', 'label', '--group-col', 'patient_id']) == 2
    assert "group column 'patient_id' not in" in capsys.readouterr().err

def test_class_scores_of_several_classes_from_rounded_probabilities():
    "Seven classes, probabilities rounded as `compare.json` keeps them (rows no longer sum to exactly 1): a finite AUC, and recall per class."
    rng = np.random.default_rng(0)
    vocab = [f'c{i}' for i in range(7)]
    y = np.array(vocab)[np.arange(140) % 7]
    p = rng.dirichlet(np.ones(7), 140); p[np.arange(140), np.arange(140) % 7] += 1
    p = np.round(p / p.sum(1, keepdims=True), 5)
    s = class_scores(y, p, vocab)
    assert np.isfinite(s['roc_auc']) and s['roc_auc'] > 0.8 and set(s['recall']) == set(vocab)
    assert np.isnan(class_scores(y[:2], p[:2, :], vocab)['roc_auc'])          # two rows, two classes of seven: no AUC, no error

def _rare_train(name, df, valid, a):
    "A stand-in for training on a rare class: 'concat' ranks every positive first but never reaches 0.5 (as a calibrated model of a rare class does); image only knows nothing (0.1 for every row)."
    y = (df[a.spec['label_col']][valid] == 'yes').to_numpy()
    p = np.where(y, 0.3, 0.05) + np.linspace(0, 0.01, len(y)) if name != compare.IMAGE else np.full(len(y), 0.1)
    return dict(probs=np.stack([1 - p, p], 1).tolist(), vocab=['no', 'yes'], **({'columns': [['site'], ['age']]} if name != compare.IMAGE else {}))

def test_the_verdict_tells_the_signal_apart_from_the_networks_use_of_it(synth, monkeypatch):
    "The table alone learns the label (gradient boosting, fitted for real); the network gets it right in half the folds: the verdict says the table carries signal and that the network's use of the metadata is unclear."
    path, df = synth('meta', n=200)
    df = df.assign(patient=[f'P{i // 2}' for i in range(len(df))])
    calls = {}
    def half_right(name, df, valid, a):
        k = calls[name] = calls.get(name, -1) + 1
        y = (df[a.spec['label_col']][valid] == 'yes').to_numpy()
        p = np.where(y, 0.9, 0.1) if name != compare.IMAGE and k % 2 == 0 else np.full(len(y), 0.5) + np.linspace(0, 0.01, len(y))
        return dict(probs=np.stack([1 - p, p], 1).tolist(), vocab=['no', 'yes'], **({'columns': [['site'], ['age']]} if name != compare.IMAGE else {}))
    monkeypatch.setattr(compare, '_train', half_right)
    res = _compare(path, df, n_folds=4, metric='balanced_accuracy')
    assert res.lift[compare.GBM]['balanced_accuracy']['low'] > 0.2 and res.lift['concat']['balanced_accuracy']['low'] < 0
    assert res.verdict.startswith(f'the table carries signal on its own: {compare.GBM} +')
    assert '; no clear use of the metadata by the network: concat +' in res.verdict

def test_a_rare_class_is_judged_by_a_threshold_free_score_and_fair_thresholds(synth, monkeypatch):
    "10 % positives: the verdict leads with ROC AUC, names the model that wins on it, takes balanced accuracy at each model's own threshold (not argmax, where 'concat' would predict one class), and says who predicts one class."
    path, df = synth('meta', n=200)
    rng = np.random.default_rng(0)
    df = df.assign(patient=[f'P{i // 2}' for i in range(len(df))], label=np.where(rng.random(len(df)) < 0.1, 'yes', 'no'))
    monkeypatch.setattr(compare, '_train', _rare_train)
    res = _compare(path, df, n_folds=4)
    assert res.headline == 'roc_auc' and 'Headline: roc auc' in res.verdict and 'threshold-free' in res.verdict
    assert '; the network uses the metadata: concat ' in res.verdict and 'best roc auc: concat' in res.verdict
    s = res.scores.groupby('model')[['roc_auc', 'balanced_accuracy', 'average_precision']].mean()
    assert s.loc['concat', 'roc_auc'] > 0.99 and s.loc['concat', 'balanced_accuracy'] > 0.95      # at its own threshold; argmax would give 0.5
    assert res.one_class(compare.IMAGE) == 4 and 'one class predicted for every row by image only' in res.verdict
    assert 'image only, balanced accuracy' not in res.to_markdown() and 'roc auc, image only' in res.to_markdown()   # subgroups by the headline
    with pytest.raises(ValueError, match='metric'): meta_compare(df, path, metric='f1')

def test_a_regression_is_compared_on_its_errors(synth):
    "A value that the metadata sets (a price from age and site, the images noise): MAE, RMSE, MAPE and R² per model; the table model and the fusion beat image only, and the verdict says so in the target's units."
    path, df = synth('meta', n=200)
    df = df.assign(patient=[f'P{i // 2}' for i in range(len(df))],
                   price=10_000 + 2_000 * (df.age.fillna(50) - 50) / 17 + 2_500 * df.site.isin(['head', 'arm']))
    res = _compare(path, df, label_col='price', n_folds=3, epochs=3)
    assert isinstance(res, RegressionResult) and res.headline == 'mae' and set(res.models) == {compare.IMAGE, 'concat', compare.TABLE, compare.AVERAGE}
    s = res.scores.groupby('model')[['mae', 'rmse', 'mape', 'r2']].mean()
    print(s)
    assert s.loc[compare.TABLE, 'mae'] < 0.5 * s.loc[compare.IMAGE, 'mae'] and s.loc['concat', 'mae'] < s.loc[compare.IMAGE, 'mae']
    assert res.lift['concat']['mae']['mean'] > 0 and res.lift[compare.TABLE]['r2']['mean'] > 0.3
    l = res.lift['concat']['mae']                                        # the verdict leads with the network, and claims only what its interval shows
    signal = res.lift[compare.TABLE]['mae']                              # the table's own lift: the metadata carries signal
    assert signal['low'] > 0 and res.verdict.startswith(f'the table carries signal on its own: {compare.TABLE} ')
    assert ('; the network uses the metadata: concat ' if l['low'] > 0 else '; no clear use of the metadata by the network: concat ') in res.verdict
    assert 'Headline: mae' in res.verdict and 'mae, image only' in res.to_markdown()
    assert not re.search(r'\de[+-]\d', res.verdict), res.verdict      # errors in the thousands read as numbers, not 1.52e+03
    v = res.versus(compare.TABLE, 'concat')                              # the table is what this task needs; the verdict says so where the interval shows it
    assert v['mean'] > 0 and (v['low'] > 0) == ('beats the best fusion, concat' in res.verdict)
    best = res.scores.groupby('model').mae.mean().idxmin()
    calls = {compare.IMAGE: '`image_learner(dls, arch)`', 'concat': "`meta_cnn_learner(dls, arch, fusion='concat')` or `fastai-meta train --fusion concat`"}
    stack = "`stack_learner(df, group_col='patient')` or `fastai-meta train --stack --group-col patient`"   # the table alone is delivered by the stack
    assert f'train it with {calls.get(best, stack)}' in res.verdict
    with pytest.raises(ValueError, match="'context' model classifies"): _compare(path, df, label_col='price', fusions=('concat', 'context'))

def test_several_images_per_row_are_compared(synth):
    "Two images per row and a label that `flag` sets: image only sees the same two images with nothing in its metadata and stays near chance; concat reads the flag."
    path, df = synth('views', n=240, size=16, seed=0)
    df = df.assign(patient=[f'P{i}' for i in range(len(df))], label=np.where(df.flag.astype(bool), 'yes', 'no'))
    res = meta_compare(df, path, folder='images', fn_col=['fname', 'fname2'], group_col='patient', cat_names=['flag'], cont_names=[],
                       arch='lcnet_050', pretrained=False, size=16, bs=16, epochs=4, n_folds=3)
    s = res.scores.groupby('model').balanced_accuracy.mean()
    print(s)
    assert s[compare.IMAGE] < 0.7 and s['concat'] > 0.9, s
    assert res.settings['fn_col'] == ['fname', 'fname2'] and compare.IMAGE in res.models

def test_cli_compares_a_regression(synth, tmp_path, capsys):
    path, df = synth('meta', n=120)
    df.assign(patient=[f'P{i // 2}' for i in range(len(df))], price=10_000 + 2_000 * (df.age.fillna(50) - 50) / 17).to_csv(tmp_path/'t.csv', index=False)
    args = ['compare', str(tmp_path/'t.csv'), str(path/'images'), '--label', 'price', '--group-col', 'patient', '--cat', 'site', '--cont', 'age',
            '--arch', 'lcnet_050', '--size', '16', '--epochs', '1', '--folds', '2', '--out', str(tmp_path/'cmp')]
    assert main(args + ['--task', 'regression', '--metric', 'rmse']) == 0
    out = capsys.readouterr().out
    assert 'Headline: rmse' in out and 'table only (gradient boosting)' in out and (tmp_path/'cmp'/'compare.md').exists()
    assert main(args + ['--metric', 'roc_auc', '--out', str(tmp_path/'c2')]) == 2 and 'for a regression' in capsys.readouterr().err

def test_learner_arguments_reach_every_network(synth, tmp_path):
    "`ps` (the head's dropout) reaches image only (fastai's `vision_learner`) and the fusion, is recorded in the settings and the settings line, and an unknown argument is refused by name."
    path, df = synth('meta', n=48)
    df = df.assign(patient=[f'P{i // 2}' for i in range(len(df))])
    seen = []
    class Dropouts(Callback):
        def before_fit(self): seen.append((type(self.learn).__name__, {round(m.p, 3) for m in self.learn.model.modules() if isinstance(m, nn.Dropout)}))
    res = _compare(path, df, n_folds=2, epochs=1, bs=16, ps=0.123, cbs=Dropouts(), out=tmp_path)
    test_eq(sorted({k for k,_ in seen}), ['Learner', 'MetaLearner'])              # image only, then the fusion, on each fold
    assert len(seen) == 4 and all(0.123 in p for _,p in seen), seen
    test_eq(res.settings['learner'], {'ps': 0.123})
    assert 'ps=0.123' in (tmp_path/'compare.md').read_text()
    with pytest.raises(TypeError, match=r"\['pss'\]"): _compare(path, df, n_folds=2, epochs=1, pss=0.1)

def test_tta_is_a_setting_of_the_comparison(synth, monkeypatch):
    "`meta_compare(tta=True)` predicts every network with `learn.tta` (and says so in its settings); without it, never."
    path, df = synth('meta', n=48)
    df = df.assign(patient=[f'P{i // 2}' for i in range(len(df))])
    calls = []
    tta = Learner.tta
    monkeypatch.setattr(Learner, 'tta', lambda self, *a, **k: calls.append(type(self).__name__) or tta(self, *a, **k))
    res = _compare(path, df, n_folds=2, epochs=1, bs=16, tta=True, batch_tfms=aug_transforms(size=16))
    test_eq(sorted(calls), ['Learner', 'Learner', 'MetaLearner', 'MetaLearner'])    # image only and concat, on each fold
    assert res.settings['tta'] and 'test-time augmentation' in res._how()
    calls.clear(); plain = _compare(path, df, n_folds=2, epochs=1, bs=16, batch_tfms=aug_transforms(size=16))
    assert not calls and 'tta' not in plain.settings

def test_saved_results_are_standard_json(tmp_path):
    "A score with no value (average precision of 7 classes, an interval of one fold) is saved as null, not as NaN."
    write_json(tmp_path/'r.json', dict(a=float('nan'), b=[1.0, float('inf')], c={'d': np.float64('nan'), 'e': 'x'}))
    def refuse(c): raise ValueError(c)
    test_eq(json.loads((tmp_path/'r.json').read_text(), parse_constant=refuse), dict(a=None, b=[1.0, None], c={'d': None, 'e': 'x'}))
