"""Both apps under load: about 20 clients at once on 127.0.0.1, a fixed count of requests, every answer checked.

Two small models of synthetic tasks whose answers are known are trained and exported with `export_safe`: a one-image
model of the 'meta' task (the label follows from site and age) and a patient-context model of the 'duckling' task
(calibrated, with an operating point). Each is served by `fastai-meta app` in its own process. `--clients` threads, each
with its own `gradio_client.Client`, send `--requests` requests each, all at once: a case drawn at random (a site and
age; a held-out patient's images in a random order). Every answer is compared with the same model's answer computed in
this process beforehand for that exact case (probabilities within 1e-5, the same decision; for a patient, the same
images in the same ranked order), so an answer lost, mixed up with another request's or wrong counts as a failure.
A tenth of the requests are malformed uploads (not an image, an image of 42 megapixels, no image at all), which must be
refused with their message. The server's resident memory is sampled every 0.1 s. Latency is per request, at the client.

Run: .venv/bin/python bench/app_load.py [--clients 20] [--requests 40]
Writes fastai_meta/results/app-load-cpu.{json,md}.
"""
import argparse, json, os, random, socket, subprocess, sys, tempfile, threading, time, urllib.request, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd, psutil
from PIL import Image
from gradio_client import Client, handle_file
from fastai.vision.all import accuracy, resnet18, set_seed
from fastai_meta.all import *
from fastai_meta.app import rank_patient
from fastai_meta.synth import make_synthetic
from lesions import save

def one_image_model(d):
    "A calibrated one-image model of the 'meta' task (site and age decide; the images are noise), exported: (file, images, cases)."
    df = make_synthetic(d/'meta', n=400, task='meta', size=32)
    set_seed(0)
    dls = MetaDataLoaders.from_df(df, d/'meta', folder='images', fn_col='fname', label_col='label', cat_names=['site'], cont_names=['age'],
                                  seed=0, bs=32, num_workers=0, cache=ImageCache(16))
    learn = meta_cnn_learner(dls, 'lcnet_050', pretrained=False, metrics=accuracy, cbs=PreciseBN())
    with learn.no_bar(), learn.no_logging(): learn.fit_one_cycle(6, 1e-2)
    learn.calibrate()
    cases = [(str(d/'meta'/'images'/f), s, a) for f in df.fname[:8] for s,a in (('head', 80), ('leg', 20), ('unknown', None))]
    return learn.export_safe(d/'meta.safetensors'), cases

def context_model(d):
    "A calibrated patient-context model of the 'duckling' task with an operating point, exported: (file, cases: each held-out patient's image files)."
    df = make_synthetic(d/'duck', n=480, task='duckling', size=16, seed=0)
    held = df.patient.isin(df.patient.unique()[-30:])
    learn = context_learner(df[~held].reset_index(drop=True), d/'duck'/'images', label_col='label', context_col='patient', cat_names=[], cont_names=['age'],
                            arch=resnet18, pretrained=False, epochs=2, size=16, n_folds=3, bs=32)
    learn.calibrate(); learn.set_operating_point('yes', 0.9)
    cases = [[str(d/'duck'/'images'/f) for f in g.fname] for _,g in df[held].groupby('patient')]
    return learn.export_safe(d/'duck.safetensors'), cases

def serve(model):
    "`fastai-meta app model` on a free port: (process, url), once it answers."
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    proc = subprocess.Popen([str(Path(sys.executable).parent/'fastai-meta'), 'app', str(model), '--port', str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, 'GRADIO_ANALYTICS_ENABLED': 'False'})
    url = f'http://127.0.0.1:{port}/'
    for _ in range(600):
        try: urllib.request.urlopen(url, timeout=1); return proc, url
        except OSError:
            if proc.poll() is not None: raise RuntimeError(f'{model}: the app exited with {proc.returncode}')
            time.sleep(0.2)
    raise RuntimeError(f'{model}: the app did not answer')

def _names(files): return [Path(f).name for f in files]

def one_image_reference(model, cases):
    "Each case's answer from the exported model in this process: (probabilities by class, decision)."
    learn = load_safe(model)
    res = {}
    for c in cases:
        r = predict_form(learn, c[0], list(c[1:]))
        res[c] = (dict(zip(r['classes'], r['with_meta'])), r['decision'])
    return res

def context_reference(model, cases):
    "Each patient's ranking from the exported model in this process, for the order its files are sent in: (image names ranked, probabilities in context)."
    learn, lock = load_safe(model), threading.Lock()
    def ref(files):
        with lock: r = rank_patient(learn, files, [None])           # one at a time, as the app itself predicts
        return r.image.tolist(), r['in context'].to_numpy(dtype=float)
    return ref

def bad_uploads(d):
    "Malformed uploads and the words their refusal must contain."
    (d/'notes.png').write_text('not an image')
    Image.new('L', (6500, 6500)).save(d/'huge.png')
    return [(str(d/'notes.png'), 'not an image'), (str(d/'huge.png'), 'megapixels'), (None, 'Upload')]

class Memory(threading.Thread):
    "The resident memory (MB) of process `pid`, sampled every 0.1 s until `stop()`."
    def __init__(self, pid): super().__init__(daemon=True); self.p, self.samples, self.done = psutil.Process(pid), [], threading.Event()
    def run(self):
        while not self.done.is_set(): self.samples.append((time.time(), self.p.memory_info().rss / 2**20)); time.sleep(0.1)
    def stop(self): self.done.set(); self.join()

def load(url, pid, n_clients, n_requests, send, check, bad, seed=0):
    "`n_clients` threads of `n_requests` each, started together; a tenth of the requests malformed (`bad`). Latencies, failures and the server's memory."
    clients = [Client(url, verbose=False) for _ in range(n_clients)]
    for c in clients[:2]: send(c, random.Random(-1))                       # warm up before the clock and the memory baseline
    mem, start, lock = Memory(pid), threading.Barrier(n_clients), threading.Lock()
    rows = []
    def worker(k):
        rng = random.Random(seed * 1000 + k)
        start.wait()
        for i in range(n_requests):
            malformed = (k * n_requests + i) % 10 == 9
            t0 = time.time()
            try:
                if malformed:
                    f, says = rng.choice(bad)
                    try: send(clients[k], rng, f); ok, why = False, 'accepted a malformed upload'
                    except Exception as e: ok, why = says in str(e), str(e)[:200]
                else: ok, why = check(*send(clients[k], rng))
            except Exception as e: ok, why = False, f'{type(e).__name__}: {e}'[:200]
            with lock: rows.append(dict(client=k, malformed=malformed, seconds=time.time() - t0, ok=bool(ok), why=why, t=t0))
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(n_clients)]
    mem.start(); t0 = time.time()
    for t in threads: t.start()
    for t in threads: t.join()
    wall = time.time() - t0
    time.sleep(0.5); mem.stop()
    return pd.DataFrame(rows), mem.samples, wall

def summarise(rows, samples, wall, name):
    "Counts, latency percentiles of the well-formed requests and the memory over the run."
    good = rows[~rows.malformed]
    rss = np.array([m for _,m in samples])
    return dict(app=name, requests=len(rows), answered_correctly=int(good.ok.sum()), well_formed=len(good), malformed=int(rows.malformed.sum()),
                malformed_refused=int(rows[rows.malformed].ok.sum()), failures=rows[~rows.ok].why.head(5).tolist(),
                p50_s=float(good.seconds.quantile(0.5)), p95_s=float(good.seconds.quantile(0.95)), max_s=float(good.seconds.max()), wall_s=wall,
                per_second=len(rows) / wall, rss_mb_quarters=[float(x.mean()) for x in np.array_split(rss, 4)], rss_mb_max=float(rss.max()))

def main(a):
    d = Path(tempfile.mkdtemp())
    bad, results = bad_uploads(d), []
    model, cases = one_image_model(d)
    refs = one_image_reference(model, cases)
    def send_one(c, rng, bad_file=False):
        case = rng.choice(cases)
        f = case[0] if bad_file is False else bad_file
        probs, decision, *_ = c.predict(handle_file(f) if f else None, case[1], case[2], api_name='/predict')
        return case, probs, decision
    def check_one(case, probs, decision):
        p, dec = refs[case]
        got = {x['label']: x['confidence'] for x in probs['confidences']}
        ok = probs['label'] == dec and f'Decision: **{dec}**' in decision and all(abs(got[k] - v) < 1e-5 for k,v in p.items())
        return ok, '' if ok else f'{case}: got {got}, {decision!r}; expected {p}, {dec}'
    proc, url = serve(model)
    try: results.append(summarise(*load(url, proc.pid, a.clients, a.requests, send_one, check_one, bad), 'one image (meta_app)'))
    finally: proc.terminate(); proc.wait(30)
    model, patients = context_model(d)
    ref = context_reference(model, patients)
    def send_patient(c, rng, bad_file=False):
        files = rng.choice(patients)[:]
        rng.shuffle(files)
        if bad_file is not False: files = [files[0], bad_file] if bad_file else []
        gallery, summary, ranking, _ = c.predict([handle_file(f) for f in files], None, None, api_name='/rank')
        return files, gallery, ranking
    def check_patient(files, gallery, ranking):
        names, p = ref(files)
        h = ranking['headers']
        got, gp = [r[h.index('image')] for r in ranking['data']], np.array([r[h.index('in context')] for r in ranking['data']], dtype=float)
        ok = got == names and len(gallery) == len(files) and np.abs(gp - p.round(3)).max() < 1e-6
        return ok, '' if ok else f'sent {_names(files)}: got {got} {gp}; expected {names} {p}'
    proc, url = serve(model)
    try: results.append(summarise(*load(url, proc.pid, a.clients, a.requests, send_patient, check_patient, bad), "a patient's images (context_app)"))
    finally: proc.terminate(); proc.wait(30)
    res = dict(device='cpu', settings=vars(a), cpu_count=os.cpu_count(), results=results)
    save('app-load-cpu', res, to_markdown(res))

def to_markdown(res):
    a = res['settings']
    lines = [f"# Both apps under load ({res['device']}, {res['cpu_count']} cores)", '',
             f"{a['clients']} clients at once on 127.0.0.1, {a['requests']} requests each; every tenth a malformed upload (not an image, an image of "
             "42 megapixels, no image). A well-formed request is correct when its answer equals the same model's answer computed beforehand "
             "in the benchmark's process for that exact case (probabilities within 1e-5, the same decision; for a patient, the same images in "
             "the same ranked order). Latency: seconds per request at the client, queue included. Memory: the server's resident set, "
             "mean over each quarter of the run.", '',
             '| app | well-formed requests correct | malformed refused with their message | p50 s | p95 s | max s | requests/s | memory by quarter, MB | peak MB |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in res['results']:
        lines.append(f"| {r['app']} | {r['answered_correctly']} of {r['well_formed']} | {r['malformed_refused']} of {r['malformed']} | {r['p50_s']:.2f} | "
                     f"{r['p95_s']:.2f} | {r['max_s']:.2f} | {r['per_second']:.1f} | {' → '.join(f'{m:.0f}' for m in r['rss_mb_quarters'])} | {r['rss_mb_max']:.0f} |")
    fails = [f for r in res['results'] for f in r['failures']]
    lines += ['', 'Failures: ' + ('none.' if not fails else '; '.join(fails)), '']
    return '\n'.join(lines)

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--clients', type=int, default=20); p.add_argument('--requests', type=int, default=40)
    main(p.parse_args())
