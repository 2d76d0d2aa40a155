"The app, served by `fastai-meta app` on a free local port: answered through gradio_client, and used in headless Chromium as a person would."
import json, os, shutil, socket, subprocess, sys, time, urllib.request
from contextlib import contextmanager
from pathlib import Path
import pytest
from fastai.vision.all import *
from fastai_meta.all import *
from fastai_meta.forms import form_fields, form_rows
from conftest import fit_quietly
from fastai_meta.cli import main
from PIL import Image
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
    with serve(f) as (url, log): yield url, path/'images'/df.fname[0], log

@contextmanager
def serve(model, *args):
    "Serve the exported `model` with `fastai-meta app` on a free local port: (url, log file), until the block ends."
    port, logf = _free_port(), Path(model).with_suffix('.log')
    log = open(logf, 'w')
    proc = subprocess.Popen([str(Path(sys.executable).parent/'fastai-meta'), 'app', str(model), '--port', str(port), *args], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, 'GRADIO_ANALYTICS_ENABLED': 'False'})
    url = f'http://127.0.0.1:{port}/'
    for _ in range(240):
        try: urllib.request.urlopen(url, timeout=1); break
        except OSError:
            if proc.poll() is not None: break
            time.sleep(0.5)
    else: proc.kill()
    assert proc.poll() is None, logf.read_text()[-3000:]
    try: yield url, logf
    finally: proc.terminate(); proc.wait(30)

def test_the_client_gets_the_metadatas_answer(served):
    url, image, log = served
    c = gradio_client.Client(url, verbose=False)
    probs, decision, effect, shown = c.predict(gradio_client.handle_file(str(image)), 'head', 80, api_name='/predict')   # the label's score: +3.5
    conf = {d['label']: d['confidence'] for d in probs['confidences']}
    assert probs['label'] == 'yes' and conf['yes'] > 0.8 and 'Decision: **yes**' in decision
    w, h = PILImage.create(shown['path'] if isinstance(shown, dict) else shown).size     # the explanation: images and bars side by side
    assert w > 1.5*h > 150
    assert '| yes |' in effect and 'with none' in effect
    probs, decision, *_ = c.predict(gradio_client.handle_file(str(image)), 'leg', 20, api_name='/predict')      # -3.5
    assert probs['label'] == 'no' and 'Decision: **no**' in decision
    probs, decision, *_ = c.predict(gradio_client.handle_file(str(image)), 'unknown', None, api_name='/predict')   # every value missing
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
        page.wait_for_selector('#explanation img', timeout=60000)
        shown = page.locator('#explanation img').bounding_box()
        page.screenshot(path=str(tmp_path/'app.png'), full_page=True)
        browser.close()
    assert 'Decision: yes' in decision and 'with none' in effect
    assert shown['width'] > 600, shown        # across the page, not squeezed into the right-hand column (about 540 px)

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
    enc = learn.dls.meta.encoding
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
    res = predict_form(learn, path/'images'/df.fname[0], values)
    assert res['kind'] == kind and len(res['with_meta']) == len(res['without_meta'])
    if kind == 'points': assert len(res['points']) == 1 and res['image'].size == (24, 24)
    assert isinstance(meta_app(learn), gr.Blocks)
    assert not list((ROOT/'fastai_meta').glob('*.pyi'))          # building an app writes nothing into the package

def _bad_uploads(folder):
    "Three uploads the apps must refuse, with what their messages say: not an image, an empty list (None here), an image too big to decode."
    (folder/'notes.png').write_text('not an image')
    Image.new('L', (6500, 6500)).save(folder/'huge.png')           # 42 megapixels: tiny on disk, 42 MB decoded
    return [(folder/'notes.png', 'not an image'), (folder/'huge.png', 'megapixels')]

def test_the_app_refuses_bad_uploads_and_keeps_serving(served, tmp_path):
    url, image, _ = served
    c = gradio_client.Client(url, verbose=False)
    for f, says in _bad_uploads(tmp_path):
        with pytest.raises(Exception, match=says): c.predict(gradio_client.handle_file(str(f)), 'head', 80, api_name='/predict')
    with pytest.raises(Exception, match='Upload an image'): c.predict(None, 'head', 80, api_name='/predict')
    assert c.predict(gradio_client.handle_file(str(image)), 'head', 80, api_name='/predict')[0]['label'] == 'yes'

@pytest.fixture(scope='module')
def served_context(synth, tmp_path_factory):
    "A patient-context model of the 'duckling' task, trained, calibrated and given an operating point by `fastai-meta train`, served by `fastai-meta app`: (url, folder, new patients)."
    path, df = synth('duckling', n=480, size=16, seed=0)
    held = df.patient.isin(df.patient.unique()[-30:])
    d = tmp_path_factory.mktemp('context-app')
    df[~held].to_csv(d/'train.csv', index=False)
    assert main(['train', str(d/'train.csv'), str(path/'images'), '--label', 'label', '--cat', '--cont', 'age', '--context-col', 'patient', '--context-folds', '3',
                 '--arch', 'resnet18', '--epochs', '2', '--size', '16', '--out', str(d/'c.safetensors'), '--calibrate', '--operating-point', 'yes=0.9']) == 0
    with serve(d/'c.safetensors') as (url, _): yield url, path/'images', df[held]

def test_one_call_ranks_a_patients_images_odd_one_first(served_context):
    url, images, test = served_context
    c = gradio_client.Client(url, verbose=False)
    odd = test.patient[test.label == 'yes'].unique()[:3]
    for pid in odd:
        rows = test[test.patient == pid].sample(frac=1, random_state=1)            # the upload order is not the answer
        files = [gradio_client.handle_file(str(images/f)) for f in rows.fname]
        gallery, summary, ranking, why = c.predict(files, None, None, api_name='/rank')
        names = [Path(g['image']['path'] if isinstance(g['image'], dict) else g['image']).name for g in gallery]
        test_eq(len(names), len(rows))
        top = ranking['data'][0][ranking['headers'].index('image')]
        assert sorted(r[ranking['headers'].index('image')] for r in ranking['data']) == sorted(rows.fname)    # every image, once: none lost or mixed up
        assert rows.set_index('fname').label[top] == 'yes', (pid, ranking)               # the odd one first
        assert gallery[0]['caption'].startswith(f'#1 {top}') and 'most suspicious' in gallery[0]['caption']
        w, h = PILImage.create(why['path'] if isinstance(why, dict) else why).size
        assert w > 2*h/len(rows) > 100                                                   # an explanation per image, one above the other
        assert f'Most suspicious: {top}' in summary and 'calibrated by temperature scaling' in summary and "operating point: **yes**" in summary
        p = [r[ranking['headers'].index('in context')] for r in ranking['data']]
        assert p == sorted(p, reverse=True) and ranking['data'][0][ranking['headers'].index('percentile in patient')] == 100

def test_context_app_one_image_per_image_table_and_bad_input(served_context, tmp_path):
    url, images, test = served_context
    c = gradio_client.Client(url, verbose=False)
    one = gradio_client.handle_file(str(images/test.fname.iloc[0]))
    gallery, summary, ranking, why = c.predict([one], None, 50, api_name='/rank')
    assert len(gallery) == 1 and 'no patient context' in summary and 'no context' in gallery[0]['caption']
    two = [one, gradio_client.handle_file(str(images/test.fname.iloc[1]))]
    table = dict(headers=['image', 'age'], data=[['a', '30'], ['b', '']])
    assert len(c.predict(two, table, 50, api_name='/rank')[0]) == 2
    with pytest.raises(Exception, match=r"row 2 .*'age'.*not a number"): c.predict(two, dict(headers=['image', 'age'], data=[['a', ''], ['b', 'old']]), 50, api_name='/rank')
    with pytest.raises(Exception, match="column"): c.predict(two, dict(headers=['image', 'site'], data=[['a', 'x']]), 50, api_name='/rank')
    with pytest.raises(Exception, match='Upload the patient'): c.predict([], None, 50, api_name='/rank')
    for f, says in _bad_uploads(tmp_path):
        with pytest.raises(Exception, match=says): c.predict([one, gradio_client.handle_file(str(f))], None, 50, api_name='/rank')
    assert len(c.predict(two, None, 50, api_name='/rank')[0]) == 2         # still serving

def test_a_person_ranks_a_patients_images(served_context, tmp_path):
    exe, sync_playwright = _browser_or_skip()
    url, images, test = served_context
    pid = test.patient[test.label == 'yes'].iloc[0]
    rows = test[test.patient == pid]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={'width': 1200, 'height': 1000})
        page.goto(url, wait_until='networkidle')
        page.set_input_files('#images input[type=file]', [str(images/f) for f in rows.fname])
        names = json.dumps(list(rows.fname))
        page.wait_for_function(f"{names}.every(n => document.querySelector('#per-image').innerText.includes(n))", timeout=60000)   # a row per upload
        assert page.locator('#field-age input').get_attribute('placeholder') == 'not recorded'        # an empty number box does not read 0
        page.locator('#rank').click()
        page.wait_for_function("document.querySelector('#summary') && document.querySelector('#summary').innerText.includes('Most suspicious')", timeout=60000)
        summary = page.locator('#summary').inner_text()
        n = page.locator('#gallery img').count()
        page.screenshot(path=str(tmp_path/'context-app.png'), full_page=True)
        browser.close()
    odd = rows.fname[rows.label == 'yes'].iloc[0]
    assert f'Most suspicious: {odd}' in summary and n >= len(rows)

def test_serving_wrote_nothing_into_the_package(served, served_context):
    "Gradio writes a .pyi stub beside the module of any component subclass; the apps subclass none."
    assert not list((ROOT/'fastai_meta').glob('*.pyi'))
