"The Hub without pickle: `save_pretrained` -> `from_pretrained` in a fresh process, from a folder and from a repo id in a local hub cache (HF_HUB_OFFLINE=1)."
import json, os, shutil, subprocess, sys
import numpy as np, pytest
from fastai.vision.all import *
from fastai_meta.all import *
from conftest import meta_dls

# Run in a new process: pickle and torch.load raise if called, then the learner is loaded and its probabilities printed as JSON.
FRESH = """
import json, pickle, sys, torch
import pandas as pd
from fastai_meta.hub import from_pretrained
def refuse(*a, **k): raise AssertionError('something was unpickled')
pickle.load = pickle.loads = pickle.Unpickler = torch.load = refuse       # after the imports, which subclass pickle.Unpickler
learn = from_pretrained(sys.argv[1], revision=sys.argv[2] or None)
df = pd.read_csv(sys.argv[3])
with learn.no_bar(): print(json.dumps(learn.get_preds(dl=learn.dls.test_dl(df))[0].tolist()))
"""

def _fresh(name, df, tmp_path, revision='', **env):
    "The probabilities of the learner `from_pretrained(name)` gives on `df`, in a new process with `env` added."
    df.to_csv(tmp_path/'rows.csv', index=False)
    res = subprocess.run([sys.executable, '-c', FRESH, str(name), revision, str(tmp_path/'rows.csv')], capture_output=True, text=True,
                         env=os.environ | env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return np.array(json.loads(res.stdout.strip().splitlines()[-1]))

@pytest.fixture(scope='module')
def saved(synth, tmp_path_factory):
    "A trained, calibrated learner with an operating point, saved with `save_pretrained`: (learn, df, folder)."
    path, df = synth('meta', n=400, size=16)
    dls = meta_dls(path, df, 'meta', bs=32)
    learn = meta_cnn_learner(dls, 'lcnet_050', pretrained=False, metrics=accuracy, ps=0.1, cbs=PreciseBN())
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(6, 1e-2)
    learn.calibrate(); learn.set_operating_point('yes', sensitivity=0.9)
    folder = learn.save_pretrained(tmp_path_factory.mktemp('saved')/'model', data='synthetic', license='apache-2.0')
    return learn, df, folder

def _probs(learn, df):
    with learn.no_bar(): return learn.get_preds(dl=learn.dls.test_dl(df))[0].numpy()

def test_the_folder_holds_the_weights_the_description_and_a_card(saved):
    learn, df, folder = saved
    test_eq(sorted(p.name for p in folder.iterdir()), ['README.md', 'config.json', 'model.safetensors'])
    desc = json.loads((folder/'config.json').read_text())
    test_eq(desc['meta']['cat_names'], ['site']); test_eq(desc['target']['vocab'], ['no', 'yes'])
    card = (folder/'README.md').read_text()
    assert card.startswith('---\n') and 'library_name: fastai_meta' in card and 'license: apache-2.0' in card
    for s in ('`site`', '`age`', '`age_na`', 'temperature of', 'Operating point: `yes`', '| accuracy |', 'synthetic', 'not a medical device', 'from_pretrained'):
        assert s in card, s
    before = [list(v) for v in learn.recorder.values]
    assert validation_metrics(learn)['n_valid'] == len(learn.dls.valid_ds)
    test_eq([list(v) for v in learn.recorder.values], before)     # the card's metrics keep the recorder's history

def test_a_fresh_process_reproduces_the_predictions_without_unpickling(saved, tmp_path):
    learn, df, folder = saved
    test_close(_fresh(folder, df, tmp_path), _probs(learn, df), eps=1e-5)

def test_a_repo_id_from_a_local_hub_cache_offline(saved, tmp_path):
    "The hub's own cache layout (models--org--name/snapshots/<commit>, refs/main), HF_HUB_OFFLINE=1: by repo id, and by revision."
    learn, df, folder = saved
    commit = 'a' * 40
    repo = tmp_path/'hub'/'models--someone--meta-demo'
    shutil.copytree(folder, repo/'snapshots'/commit)
    (repo/'refs').mkdir(); (repo/'refs'/'main').write_text(commit)
    env = dict(HF_HUB_OFFLINE='1', HF_HUB_CACHE=str(tmp_path/'hub'))
    want = _probs(learn, df)
    test_close(_fresh('someone/meta-demo', df, tmp_path, **env), want, eps=1e-5)
    test_close(_fresh('someone/meta-demo', df, tmp_path, revision=commit, **env), want, eps=1e-5)
    res = subprocess.run([sys.executable, '-c', "from fastai_meta.hub import from_pretrained; from_pretrained('someone/other')"],
                         capture_output=True, text=True, env=os.environ | env, timeout=300)
    assert res.returncode != 0 and 'offline' in res.stderr.lower(), res.stderr[-2000:]     # not in the cache: the hub says it is offline

def test_a_context_model_goes_through_the_hub_folder(synth, tmp_path):
    path, df = synth('duckling', n=120, size=16)
    ctx = context_learner(df, path/'images', label_col='label', context_col='patient', cat_names=[], cont_names=['age'],
                          arch='lcnet_050', pretrained=False, epochs=1, size=16, n_folds=2)
    folder = ctx.save_pretrained(tmp_path/'ctx')
    assert 'patient context' in (folder/'README.md').read_text()
    test_close(from_pretrained(folder).get_preds(df)[0], ctx.get_preds(df)[0], eps=1e-5)
