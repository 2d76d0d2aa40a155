"Patient context: the 'duckling' task (only a patient's other images tell) learned, no training context from a model that saw the patient, a one-image patient, errors, the CLI and meta_compare."
import warnings
import copy as pycopy      # fastai.vision.all exports another `copy`
import pytest
from sklearn.metrics import roc_auc_score
from fastai.vision.all import *
from fastai_meta.all import *
from fastai_meta.crossfit import fold_outputs
from fastai_meta.cli import main
from fastai_meta.synth import small_cnn

@pytest.fixture(scope='module')
def duck(synth):
    path, df = synth('duckling', n=480, size=16, seed=0)
    held = df.patient.isin(df.patient.unique()[-30:])
    return path, df[~held].reset_index(drop=True), df[held]

@pytest.fixture(scope='module')
def ctx(duck):
    path, train, _ = duck
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return context_learner(train, path/'images', label_col='label', context_col='patient', cat_names=[], cont_names=['age'],
                               arch=resnet18, pretrained=False, epochs=2, size=16, n_folds=3, bs=32)

def test_duckling_learned_only_with_context(ctx, duck):
    p, y, img = ctx.get_preds(ctx.test_dl(duck[2], with_labels=True), with_image=True)
    auc, auc_img = roc_auc_score(y, p[:, 1]), roc_auc_score(y, img[:, 1])
    assert auc > 0.9 and auc_img < 0.75, (auc, auc_img)           # an image alone is at chance by construction

def test_no_training_context_from_a_model_that_saw_the_patient(ctx, duck):
    train = duck[1]
    folds = ctx.oof.fold.to_numpy()
    assert sorted(set(folds)) == [0, 1, 2]
    for k,l in enumerate(ctx.learners):
        seen = set(l.dls.train_ds.items.patient)                   # what model k trained on, from its own DataLoaders
        mine = train.patient[folds == k]
        assert len(mine) and not seen & set(mine)
        assert set(train.patient[folds != k]) <= seen
        one = train[train.patient == mine.iloc[0]]                  # model k made these rows' features
        probs, emb = fold_outputs(l, l.dls.test_dl(one), embeddings=True)
        test_close(patient_context(one.patient, probs[:, [1]], emb).to_numpy(), ctx.oof.loc[one.index].drop(columns='fold').to_numpy(), eps=1e-4)

def test_one_image_patient(ctx, duck):
    row = duck[2].iloc[3]
    for x in (row, duck[2].iloc[[3]]):
        res = ctx.predict(x)
        assert res.n_images.tolist() == [1] and np.isfinite(res[['p_no', 'p_yes']].to_numpy()).all()
        test_close(res[['p_no', 'p_yes']].sum(axis=1).to_numpy(), [1.])

def test_bad_input_named(ctx, duck, synth):
    test = duck[2].copy()
    test.loc[test.index[2], 'patient'] = None
    with pytest.raises(ValueError, match=f"row {test.index[2]}"): ctx.test_dl(test)
    with pytest.raises(KeyError, match='patient'): ctx.test_dl(duck[2].drop(columns='patient'))
    with pytest.raises(ValueError, match="'maybe'"): ctx.get_preds(ctx.test_dl(duck[2].assign(label='maybe'), with_labels=True))
    path, df = synth('duckling', n=40, size=16, seed=0)
    with pytest.raises(ValueError, match='one image'): context_learner(df.assign(patient=df.fname), path/'images', context_col='patient')
    with pytest.raises(ValueError, match='missing'): context_learner(df.assign(label=None), path/'images', context_col='patient')
    with pytest.raises(ValueError, match=r"one image per row.*melt"):        # several views per row: refused, with how to reshape
        context_learner(df.assign(other=df.fname), path/'images', context_col='patient', fn_col=['fname', 'other'])
    with pytest.raises(ValueError, match=r"one image per row.*explode"):
        context_learner(df.assign(fname=df.fname + ';' + df.fname), path/'images', context_col='patient', image_sep=';')

def test_percentile_in_group():
    np.testing.assert_array_equal(percentile_in_group([0.1, 0.9, 0.5, 0.3, 0.3, 0.7], ['a', 'a', 'a', 'b', 'c', 'c']), [0, 100, 50, np.nan, 0, 100])
    test_eq(percentile_in_group([0.4, 0.4, 0.1], ['a', 'a', 'a']).tolist(), [75., 75., 0.])     # ties share their ranks
    test_eq(np.isnan(percentile_in_group([0.2], ['a'])).tolist(), [True])

def test_cli_train_and_predict(duck, tmp_path, capsys):
    path, train, test = duck
    train.to_csv(tmp_path/'train.csv', index=False)
    assert main(['train', str(tmp_path/'train.csv'), str(path/'images'), '--label', 'label', '--cat', '--cont', 'age', '--context-col', 'patient',
                 '--context-folds', '2', '--arch', 'resnet18', '--epochs', '1', '--size', '16', '--out', str(tmp_path/'c.safetensors'),
                 '--calibrate', '--operating-point', 'yes=0.9']) == 0
    out = capsys.readouterr().out
    assert 'logistic regression on' in out and "Calibrated on rows neither stage trained on" in out and "Operating point: 'yes'" in out
    assert load_safe(tmp_path/'c.safetensors').decision['cls'] == 'yes'
    test = test.sample(frac=1, random_state=0)          # each patient's rows spread across the table
    test.loc[test.index[0], 'patient'] = None
    test.to_csv(tmp_path/'test.csv', index=False)
    assert main(['predict', str(tmp_path/'c.safetensors'), str(tmp_path/'test.csv'), str(path/'images'), '--out', str(tmp_path/'p.csv')]) == 1
    out = pd.read_csv(tmp_path/'p.csv')
    assert len(out) == len(test) and out.error.notna().tolist() == [True] + [False]*(len(test) - 1)
    rest = test.patient.iloc[1:]
    assert out.prediction[1:].isin(['no', 'yes']).all() and (out.n_images[1:].to_numpy() == rest.map(rest.value_counts()).to_numpy()).all()
    test_eq(list(out.columns), ['row', 'prediction', 'n_images', 'p_no', 'p_yes', 'p_no (image only)', 'p_yes (image only)', 'percentile in patient (yes)', 'error'])
    learn, who = load_safe(tmp_path/'c.safetensors', images=path/'images'), rest.iloc[0]
    mine = test.patient.eq(who).to_numpy()
    alone = learn.predict(test[mine])                   # the patient's rows alone, as the scattered table grouped them
    test_close(out.loc[mine, ['p_yes', 'p_yes (image only)', 'percentile in patient (yes)']].to_numpy(dtype=float),
               alone[['p_yes', 'p_yes (image only)', 'percentile in patient (yes)']].to_numpy(dtype=float), eps=1e-5)
    pct = out.loc[mine, 'percentile in patient (yes)'].to_numpy(dtype=float)
    assert pct.min() == 0 and pct.max() == 100 and out.loc[mine, 'p_yes'].to_numpy(dtype=float).argmax() == pct.argmax()

def test_meta_compare_lists_context(duck):
    path, train, _ = duck
    train = train[train.patient.isin(train.patient.unique()[:50])]
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        res = meta_compare(train, path, folder='images', label_col='label', group_col='patient', cat_names=[], cont_names=['age'],
                           fusions=("concat", "context"), arch=resnet18, pretrained=False, epochs=1, size=16, n_folds=2, context_folds=2)
    assert 'context' in res.models and res.lift['context']['roc_auc']['mean'] > 0.2, res.summary()
    assert 'patient context' in res.verdict

def test_calibration_and_operating_point_on_rows_neither_stage_trained_on(ctx, duck, tmp_path):
    "`calibrate` and `set_operating_point` on the stage two cross-fitted over the image models' patient folds (or on held-out patients); exports keep both."
    c = pycopy.copy(ctx)                                   # the fixture stays uncalibrated for the other tests
    p, y = c.held_out_probs()
    test_eq(len(p), len(duck[1])); test_close(p.sum(1), 1, eps=1e-6)
    assert roc_auc_score(y, p[:, 1]) > 0.85               # out of fold, still the duckling task learned
    cal = c.calibrate()
    assert cal.n == len(duck[1]) and cal.nll_after <= cal.nll_before + 1e-9 and c.temperature == cal.temperature
    op = c.set_operating_point('yes', sensitivity=0.9)
    assert op['sensitivity'] >= 0.9 and 0 < op['threshold'] < 1
    res = c.predict(duck[2])
    assert ((res.p_yes >= op['threshold']) == (res.prediction == 'yes')).all()
    loaded = load_safe(c.export_safe(tmp_path/'c.safetensors'))
    test_eq(loaded.temperature, c.temperature); test_eq(loaded.decision, c.decision)
    test_close(loaded.get_preds(duck[2])[0], c.get_preds(duck[2])[0], eps=1e-5)
    with pytest.raises(ValueError, match='df='): loaded.calibrate()          # an export keeps no out-of-fold table
    assert loaded.calibrate(df=duck[2]).n == len(duck[2])                      # held-out patients instead
    with pytest.raises(ValueError, match='not a class'): c.set_operating_point('maybe')

def test_explain_names_the_context(ctx, duck):
    "The odd image of a patient (the 'duckling' task): its context term 'unlike the other images' raises p(yes) the most; asked for 'no', the same term lowers it."
    test = duck[2]
    odd = test[test.label == 'yes'].head(4)
    es = [ctx.explain(r, rows=test) for _,r in odd.iterrows()]
    assert all(e.context.index[0] == 'unlike the other images' and e.context.iloc[0] > 0.2 for e in es), [e.context.round(3).to_dict() for e in es]
    e = es[0]
    assert e.heatmaps[0].shape == (16, 16) and list(e.meta.index) == ['age'] and set(e.image_probs) == {'no', 'yes'}
    p = ctx.predict(test)
    test_close(e.probs['yes'], p.loc[odd.index[0], 'p_yes'], eps=1e-5)                                    # the prediction in context, as `predict`
    o = ctx.explain(odd.iloc[0], rows=test, target='no')
    assert o.target == 'no' and o.context['unlike the other images'] < -0.2
    alone = ctx.explain(odd.iloc[0])                                                                        # no rows: one image, no context
    test_close(alone.probs['yes'], ctx.predict(odd.iloc[0]).p_yes.iloc[0], eps=1e-5)
    assert isinstance(e.show(), plt.Figure); plt.close('all')
    with pytest.raises(ValueError, match="'maybe' is not a class"): ctx.explain(odd.iloc[0], rows=test, target='maybe')

def test_explain_patient_is_explain_of_each_row(ctx, duck):
    "`explain_patient` explains every row in its order, as `explain` of each row among its patient's rows does."
    test = duck[2]
    rows = pd.concat([test[test.patient == p] for p in test.patient.unique()[:2]]).sample(frac=1, random_state=0)    # two patients, mixed
    es = ctx.explain_patient(rows, target='yes')
    assert len(es) == len(rows)
    for e,(_,r) in zip(es, rows.iterrows()):
        one = ctx.explain(r, rows=rows, target='yes')
        test_close(e.probs['yes'], one.probs['yes'], eps=1e-6)
        test_close(e.context.sort_index().to_numpy(), one.context.sort_index().to_numpy(), eps=1e-6)
