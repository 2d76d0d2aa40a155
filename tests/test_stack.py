"The stack: it learns a table-decided task the networks miss, is never worse than its best part where it chose, predicts values, exports without pickle and loads in a fresh process, trains and predicts from the CLI, and joins meta_compare."
import json, subprocess, sys, warnings
import pytest
from sklearn.metrics import balanced_accuracy_score
from fastai.vision.all import *
from fastai_meta.all import *
from fastai_meta.compare import GBM
from fastai_meta.stage_two import stack_loss
from fastai_meta.cli import main

@pytest.fixture(scope='module')
def table_task(synth):
    path, df = synth('meta', n=300, size=16, seed=0)
    return path, df[:240].reset_index(drop=True), df[240:]

@pytest.fixture(scope='module')
def stack(table_task):
    path, train, _ = table_task
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return stack_learner(train, path/'images', cat_names=['site'], cont_names=['age'], arch=resnet18, pretrained=False, size=16, epochs=2, n_folds=3)

def test_stack_learns_what_the_table_decides(stack, table_task):
    p, y, net = stack.get_preds(stack.test_dl(table_task[2], with_labels=True), with_network=True)
    acc, acc_net = (balanced_accuracy_score(y, q.argmax(1)) for q in (p, net))
    assert acc >= 0.85 and acc > acc_net + 0.1, (acc, acc_net)          # the images are noise: only the table's rule tells
    w = dict(zip(stack.two.names, stack.two.weights))
    assert w.get('table', 0) + w.get('linear', 0) + w.get('boosted', 0) > 0.5, w

def test_stage_two_never_worse_than_its_best_candidate_where_it_chose(stack):
    loss = stack_loss('classification')
    outs = stack.candidate_outputs
    mix = sum(w * outs[n] for n,w in zip(stack.two.names, stack.two.weights))
    assert loss(stack.targets, mix) <= min(loss(stack.targets, o) for o in outs.values()) + 1e-9
    held = balanced_accuracy_score(stack.targets, stack.held_out.argmax(1))      # each fold under weights chosen without it
    assert held > 0.85, held

def test_ensemble_selection_picks_the_informative_candidate():
    rng = np.random.default_rng(1)
    y = rng.normal(size=400)
    good, bad = (y + rng.normal(scale=0.1, size=400))[:, None], rng.normal(size=(400, 1))
    w = ensemble_selection([bad, good], y, stack_loss('regression'))
    assert w[1] >= 0.9 and abs(w.sum() - 1) < 1e-9

def test_export_without_pickle_loads_in_a_fresh_process(stack, table_task, tmp_path):
    path, _, test = table_task
    stack.export_safe(tmp_path/'s.safetensors')
    test.to_csv(tmp_path/'t.csv', index=False)
    code = (f"import pandas as pd; from fastai_meta.deploy import load_safe; l = load_safe({str(tmp_path/'s.safetensors')!r}); "
            f"print(l.get_preds(pd.read_csv({str(tmp_path/'t.csv')!r}))[0].numpy().round(5).tolist())")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True, cwd=path/'images').stdout
    test_close(np.array(json.loads(out.strip().splitlines()[-1])), stack.get_preds(test)[0].numpy(), eps=1e-4)

def test_calibrate_and_operating_point_travel_with_the_export(stack, table_task, tmp_path):
    stack.calibrate(); op = stack.set_operating_point('yes', 0.9)
    try:
        l = load_safe(stack.export_safe(tmp_path/'c.safetensors'))
        test_eq((l.temperature, l.decision['threshold']), (stack.temperature, op['threshold']))
        test_eq(l.predict(table_task[2]).prediction.tolist(), stack.predict(table_task[2]).prediction.tolist())
    finally: stack.temperature, stack.decision = None, None

def test_regression_stack_beats_a_network_that_cannot_see_the_answer(synth):
    path, df = synth('meta', n=240, size=16, seed=2)
    rng = np.random.default_rng(0)
    df = df.dropna(subset=['age']).assign(score=lambda d: d.age + rng.normal(scale=2, size=len(d)))     # the table holds the target, nearly
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn = stack_learner(df, path/'images', label_col='score', cat_names=['site'], cont_names=['age'], arch=resnet18, pretrained=False,
                              size=16, epochs=1, n_folds=3, meta_layers=(8,))
    held = np.abs(learn.held_out[:, 0] - learn.targets).mean()
    net = np.abs(learn.candidate_outputs['network'][:, 0] - learn.targets).mean()
    assert held < 0.5 * net and held < 4, (held, net)
    test_eq(list(learn.predict(df.head(3)).columns), ['prediction', 'prediction (network)'])
    with pytest.raises(ValueError, match='classif'): learn.calibrate()

def test_bad_input_is_named(table_task):
    path, train, _ = table_task
    with pytest.raises(ValueError, match='candidate'): stack_learner(train, path/'images', candidates=('table', 'forest'), arch=resnet18, pretrained=False)
    with pytest.raises(KeyError, match="'nope'"): stack_learner(train, path/'images', group_col='nope', arch=resnet18, pretrained=False)

def test_cli_train_stack_then_predict(table_task, tmp_path, capsys):
    path, train, test = table_task
    train.to_csv(tmp_path/'train.csv', index=False); test.to_csv(tmp_path/'test.csv', index=False)
    assert main(['train', str(tmp_path/'train.csv'), str(path/'images'), '--label', 'label', '--cat', 'site', '--cont', 'age', '--stack',
                 '--folds', '2', '--arch', 'resnet18', '--size', '16', '--epochs', '1', '--out', str(tmp_path/'s.safetensors')]) == 0
    assert 'Stack: 2 networks' in capsys.readouterr().out
    assert main(['predict', str(tmp_path/'s.safetensors'), str(tmp_path/'test.csv'), str(path/'images'), '--out', str(tmp_path/'p.csv')]) == 0
    p = pd.read_csv(tmp_path/'p.csv')
    assert len(p) == len(test) and p.error.isna().all() and {'prediction', 'p_yes', 'p_yes (network)'} <= set(p.columns)

def test_compare_scores_the_stack_and_names_the_call(table_task):
    path, train, _ = table_task
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        res = meta_compare(train.assign(g=np.arange(len(train)) // 2), path/'images', group_col='g', fusions=('concat', 'stack'), n_folds=2,
                           context_folds=2, cat_names=['site'], cont_names=['age'], arch=resnet18, pretrained=False, size=16, epochs=1)
    s = res.scores.groupby('model').balanced_accuracy.mean()
    assert s['stack'] > 0.8 and s['stack'] > s['image only'] + 0.2, s
    assert 'train it with `' in res.verdict
    assert res.how_to_train('stack').startswith('`stack_learner(df') and res.how_to_train(GBM) == res.how_to_train('stack')

def test_the_app_serves_a_stack(stack, table_task, tmp_path):
    gradio_client = pytest.importorskip('gradio_client')
    from test_app import serve
    path, _, test = table_task
    with serve(stack.export_safe(tmp_path/'s.safetensors')) as (url, log):
        c = gradio_client.Client(url, verbose=False)
        image = gradio_client.handle_file(str(path/'images'/test.fname.iloc[0]))
        probs, decision, effect, network = c.predict(image, 'head', 80, api_name='/predict')       # the rule's score: +3.5
        assert probs['label'] == 'yes' and 'Decision: **yes**' in decision and 'with none' in effect and 'networks alone' in network
        probs, decision, *_ = c.predict(image, 'leg', 20, api_name='/predict')                      # -3.5
        assert probs['label'] == 'no'

def test_save_pretrained_writes_a_card_and_loads_back(stack, table_task, tmp_path):
    folder = stack.save_pretrained(tmp_path/'hub', license='cc-by-nc-4.0')
    card = (folder/'README.md').read_text()
    assert 'a stack: 3 image + metadata networks' in card and 'Not calibrated' in card
    test_close(from_pretrained(folder).get_preds(table_task[2])[0], stack.get_preds(table_task[2])[0], eps=1e-4)
