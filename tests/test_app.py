"The app, served by `fastai-meta app` on a free local port: answered through gradio_client, and used in headless Chromium as a person would."
import os, shutil, socket, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest
from fastai.vision.all import *
from fastai_meta.all import *
from conftest import fit_quietly
from test_docs import _browser_or_skip, CHROMIUM_ARGS

gradio_client = pytest.importorskip('gradio_client')
ROOT = Path(__file__).resolve().parents[1]

def _free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@pytest.fixture(scope='module')
def served(synth, tmp_path_factory):
    "A model of the 'meta' task (label from site and age; images are noise), calibrated, exported and served by the CLI: (url, image, output)."
    path, df = synth('meta', n=400)
    set_seed(0)                                          # before the DataLoaders: their shuffling is seeded when they are made
    dls = MetaDataLoaders.from_df(df, path, folder='images', fn_col='fname', label_col='label', cat_names=['site'], cont_names=['age'],
                                  seed=0, bs=32, num_workers=0, cache=ImageCache(16))     # the images are noise: small, decoded once
    learn = meta_cnn_learner(dls, 'lcnet_050', pretrained=False, metrics=accuracy, cbs=PreciseBN())     # a small body: the metadata decides
    assert fit_quietly(learn, 6)[1] > 0.8
    learn.calibrate()
    f = learn.export_safe(tmp_path_factory.mktemp('app')/'m.safetensors')
    port = _free_port()
    log = open(f.parent/'app.log', 'w')
    proc = subprocess.Popen([str(Path(sys.executable).parent/'fastai-meta'), 'app', str(f), '--port', str(port)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, 'GRADIO_ANALYTICS_ENABLED': 'False'})
    url = f'http://127.0.0.1:{port}/'
    for _ in range(240):
        try: urllib.request.urlopen(url, timeout=1); break
        except OSError:
            if proc.poll() is not None: break
            time.sleep(0.5)
    else: proc.kill()
    assert proc.poll() is None, (f.parent/'app.log').read_text()[-3000:]
    yield url, path/'images'/df.fname[0], f.parent/'app.log'
    proc.terminate(); proc.wait(30)

def test_the_client_gets_the_metadatas_answer(served):
    url, image, log = served
    c = gradio_client.Client(url, verbose=False)
    probs, decision, effect = c.predict(gradio_client.handle_file(str(image)), 'head', 80, api_name='/predict')   # the label's score: +3.5
    conf = {d['label']: d['confidence'] for d in probs['confidences']}
    assert probs['label'] == 'yes' and conf['yes'] > 0.8 and 'Decision: **yes**' in decision
    assert '| yes |' in effect and 'with none' in effect
    probs, decision, _ = c.predict(gradio_client.handle_file(str(image)), 'leg', 20, api_name='/predict')      # -3.5
    assert probs['label'] == 'no' and 'Decision: **no**' in decision
    probs, decision, _ = c.predict(gradio_client.handle_file(str(image)), 'unknown', None, api_name='/predict')   # every value missing
    assert 'Decision:' in decision
    assert 'http://127.0.0.1:' in log.read_text() and 'this machine only' in log.read_text()

def test_a_person_uploads_fills_and_reads(served, tmp_path):
    exe, sync_playwright = _browser_or_skip()
    url, image, _ = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={'width': 1200, 'height': 900})
        page.goto(url, wait_until='networkidle')
        page.set_input_files('#image input[type=file]', str(image))
        page.locator('#field-site input').click()
        page.get_by_role('option', name='head', exact=True).click()
        page.locator('#field-age input').fill('80')
        page.locator('#predict').click()
        page.wait_for_function("document.querySelector('#decision') && document.querySelector('#decision').innerText.includes('Decision')", timeout=60000)
        decision, effect = page.locator('#decision').inner_text(), page.locator('#effect').inner_text()
        page.screenshot(path=str(tmp_path/'app.png'), full_page=True)
        browser.close()
    assert 'Decision: yes' in decision and 'with none' in effect

def test_the_form_follows_the_metadata(synth):
    "A boolean column becomes yes/no/unknown, a category a list with unknown, a quantity a number box; unknown and empty become gaps."
    path, df = synth('xor', n=64)
    dls = MetaDataLoaders.from_df(df, path, folder='images', fn_col='fname', label_col='label', cat_names=['flag'], cont_names=['noise'],
                                  seed=0, bs=16, num_workers=0)
    learn = meta_cnn_learner(dls, 'resnet10t', pretrained=False)
    fields = form_fields(learn)
    assert [(c, k, ch) for c,k,ch,_ in fields] == [('flag', 'yes/no', ['yes', 'no', 'unknown']), ('noise', 'number', None)]
    rows = form_rows(learn, path/'images'/df.fname[0], ['yes', None])
    assert rows.flag.tolist() == ['True', None] and rows.noise.isna().all()
    enc = meta_encode(learn.dls).encoding
    assert enc.encode_df(rows)[0, 0] == enc.vocabs['flag'].index('True')

@pytest.mark.parametrize('kind', ['regression', 'points'])
def test_values_and_points_get_an_answer_and_an_app(synth, kind):
    "Regression shows its value(s), keypoints the image with its points; both with and without the metadata."
    import gradio as gr
    if kind == 'points':
        path, df = synth('points', n=48)
        dls = DataLoaders.from_dblock(DataBlock(blocks=(*TabularImageBlock('fname', ['quadrant'], ['dx', 'dy'], pref=path/'images'), PointBlock),
                                                get_y=point_getter, splitter=RandomSplitter(seed=0), item_tfms=Resize(24)), df, bs=16, num_workers=0)
        values = ['tl', 0.1, None]
    else:
        path, df = synth('meta', n=64)
        dls = MetaDataLoaders.from_df(df.assign(noise=df.noise.fillna(0.)), path, folder='images', fn_col='fname', label_col='noise',
                                      y_block=RegressionBlock, cat_names=['site'], cont_names=['age'], seed=0, bs=16, num_workers=0)
        values = ['head', 40]
    learn = meta_cnn_learner(dls, 'resnet10t', pretrained=False)
    res = explain(learn, path/'images'/df.fname[0], values)
    assert res['kind'] == kind and len(res['with_meta']) == len(res['without_meta'])
    if kind == 'points': assert len(res['points']) == 1 and res['image'].size == (24, 24)
    assert isinstance(meta_app(learn), gr.Blocks)
