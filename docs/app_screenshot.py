"""The app page's screenshot: a small HAM10000 model, calibrated, with a melanoma operating point, served by
`fastai-meta app` and used in headless Chromium as a person would (upload, fill the form, read the answer and its explanation).

Needs HAM10000 where `data_path('ham10000')` finds it, and Debian's Chromium. Writes nbs/images/app.png and, for the
page's prose, what it trained and read in nbs/images/app.json (a few minutes on a 2-core CPU).
Run: .venv/bin/python docs/app_screenshot.py
"""
import json, socket, subprocess, sys, tempfile, time, urllib.request, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd
from fastai.vision.all import accuracy, set_seed
from fastai_meta.all import *

ROOT = Path(__file__).resolve().parents[1]
HAM = data_path('ham10000')

def train(tmp, per_class=150, size=96):
    "A concat model of HAM10000 (at most `per_class` images per diagnosis, lesion-grouped split), calibrated, melanoma at 95 % sensitivity."
    df = pd.read_csv(HAM/'metadata.csv').replace('unknown', np.nan).sample(frac=1, random_state=0)
    df = df[df.groupby('dx').cumcount() < per_class].reset_index(drop=True)
    set_seed(0, reproducible=True)
    dls = MetaDataLoaders.from_df(df, HAM, folder='images', fn_col='image_id', suff='.jpg', label_col='dx', cat_names=['sex', 'localization'],
                                  cont_names=['age'], group_col='lesion_id', seed=0, cache=ImageCache(size), bs=32, num_workers=0)
    learn = meta_cnn_learner(dls, 'tf_efficientnet_lite0', weights_path=offline_weights(), metrics=accuracy)
    with learn.no_bar(): learn.fine_tune(3, 3e-3)
    facts = dict(per_class=per_class, size=size, epochs=3, n_valid=len(learn.dls.valid_ds), accuracy=float(learn.validate()[1]))
    cal, op = learn.calibrate(), learn.set_operating_point('mel', 0.95)
    facts.update(temperature=cal.temperature, threshold=float(learn.loss_func.threshold), n_classes=len(learn.dls.vocab))
    print(facts, cal, op, sep='\n')
    valid = learn.dls.valid.items
    case = valid[(valid.dx == 'mel') & valid.sex.notna() & valid.localization.notna() & valid.age.notna()].iloc[0]
    facts.update(case=dict(image_id=case.image_id, dx=case.dx, sex=case.sex, localization=case.localization, age=float(case.age)))
    return learn.export_safe(tmp/'ham10000.safetensors'), case, facts

def shoot(model, case, out):
    "Serve `model` with the CLI on a free port; upload `case`'s image, fill its metadata, predict, and save the page to `out`."
    from playwright.sync_api import sync_playwright
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    proc = subprocess.Popen([str(Path(sys.executable).parent/'fastai-meta'), 'app', str(model), '--port', str(port)])
    try:
        url = f'http://127.0.0.1:{port}/'
        for _ in range(240):
            try: urllib.request.urlopen(url, timeout=1); break
            except OSError: time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path='/usr/bin/chromium', args=['--no-sandbox', '--disable-gpu'])
            page = browser.new_page(viewport={'width': 956, 'height': 900})     # the docs' column: the shot is shown at its own size
            page.goto(url, wait_until='networkidle')
            page.set_input_files('#image input[type=file]', str(HAM/'images'/f'{case.image_id}.jpg'))
            for col in ('sex', 'localization'):
                page.locator(f'#field-{col} input').click()
                page.get_by_role('option', name=str(case[col]), exact=True).click()
            page.locator('#field-age input').fill(str(int(case.age)))
            page.locator('#predict').click()
            page.wait_for_function("document.querySelector('#decision').innerText.includes('Decision')", timeout=60000)
            page.wait_for_selector('#explanation img', timeout=60000)          # the heatmap and the metadata's bars
            read = dict(decision=page.locator('#decision').inner_text(), effect=page.locator('#effect').inner_text())
            print(read['decision'], read['effect'], sep='\n')
            page.wait_for_timeout(2000)                       # let the probabilities finish their fade-in
            page.screenshot(path=str(out), full_page=True)
            browser.close()
        return read
    finally: proc.terminate(); proc.wait(30)

if __name__ == '__main__':
    with tempfile.TemporaryDirectory() as d:
        model, case, facts = train(Path(d))
        print(f'case: {case.image_id}, {case.dx}, {case.sex}, {case.localization}, {case.age:.0f}')
        facts.update(shoot(model, case, ROOT/'nbs'/'images'/'app.png'))
        (ROOT/'nbs'/'images'/'app.json').write_text(json.dumps(facts, indent=1) + '\n')
