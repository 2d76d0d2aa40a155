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
    path, df = synth('meta', n=200)
    dls = MetaDataLoaders.from_df(df, path, folder='images', fn_col='fname', label_col='label', cat_names=['site'], cont_names=['age'],
                                  seed=0, bs=32, num_workers=0)
    set_seed(0)
    learn = meta_cnn_learner(dls, 'resnet10t', pretrained=False, metrics=accuracy, cbs=PreciseBN())
    fit_quietly(learn, 6)
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
    probs, decision, effect = c.predict(gradio_client.handle_file(str(image)), 'head', 75, api_name='/predict')
    conf = {d['label']: d['confidence'] for d in probs['confidences']}
    assert probs['label'] == 'yes' and conf['yes'] > 0.8 and 'Decision: **yes**' in decision
    assert '| yes |' in effect and 'with none' in effect
    probs, decision, _ = c.predict(gradio_client.handle_file(str(image)), 'leg', 25, api_name='/predict')
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
        page.locator('#field-age input').fill('75')
        page.locator('#predict').click()
        page.wait_for_function("document.querySelector('#decision') && document.querySelector('#decision').innerText.includes('Decision')", timeout=60000)
        decision, effect = page.locator('#decision').inner_text(), page.locator('#effect').inner_text()
        page.screenshot(path=str(tmp_path/'app.png'), full_page=True)
        browser.close()
    assert 'Decision: yes' in decision and 'with none' in effect
    if os.environ.get('FASTAI_META_SCREENSHOT'): shutil.copy(tmp_path/'app.png', os.environ['FASTAI_META_SCREENSHOT'])
