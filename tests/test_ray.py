"Folds on Ray Core: the same runs as a serial run (the command line's compare and a context model), a worker killed mid-job retried, a stopped driver resumed from its `RunStore`, a failing job named."
import json, os, sys, warnings
import pytest
from fastai.vision.all import *
from fastai_meta.all import *
from fastai_meta.crossfit import Job, run_jobs, RunStore, Serial, RayRunner, runner_for
from fastai_meta.cli import main

ray = pytest.importorskip('ray')
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])     # this module's job functions travel by value: workers cannot import tests/

@pytest.fixture(scope='module')
def two_workers():
    "A local Ray of 2 one-CPU workers (one thread each), shut down after this module."
    runner = RayRunner(workers=2)
    runner.start()
    yield runner
    ray.shutdown()

def test_cli_compare_with_two_workers_gives_the_serial_table(synth, two_workers, tmp_path):
    "`fastai-meta compare ... --workers 2`: the same runs (every held-out probability) and the same report (verdict and table) as the serial command."
    path, df = synth('meta', n=80, size=16)
    df.assign(patient=[f'P{i // 2}' for i in range(len(df))]).to_csv(tmp_path/'t.csv', index=False)
    args = ['compare', str(tmp_path/'t.csv'), str(path/'images'), '--label', 'label', '--group-col', 'patient', '--cat', 'site', '--cont', 'age',
            '--arch', 'lcnet_050', '--size', '16', '--bs', '16', '--epochs', '2', '--folds', '2']
    for name, extra in (('serial', []), ('ray', ['--workers', '2'])): assert main(args + ['--out', str(tmp_path/name)] + extra) == 0
    serial, on_ray = (json.loads((tmp_path/n/'compare.json').read_text()) for n in ('serial', 'ray'))
    assert on_ray['runs'] == serial['runs'] and len(serial['runs']) == 4
    assert (tmp_path/'ray'/'compare.md').read_text() == (tmp_path/'serial'/'compare.md').read_text()
    assert len({round(p[1], 3) for r in serial['runs'].values() for p in r['probs']}) > 10      # real outputs, not a constant

def test_context_learner_on_ray_predicts_as_the_serial_one(synth, two_workers):
    "The context model's networks trained on Ray, sent back as weights and rebuilt here: the same predictions as the serial model's."
    path, df = synth('duckling', n=96, size=16, seed=0)
    kw = dict(label_col='label', context_col='patient', cat_names=[], cont_names=['age'], arch='lcnet_050', pretrained=False, epochs=1, size=16, n_folds=2, bs=16)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        serial, on_ray = context_learner(df, path/'images', **kw), context_learner(df, path/'images', runner=two_workers, **kw)
    a, b = (l.get_preds(l.test_dl(df))[0] for l in (serial, on_ray))
    test_close(a, b, eps=1e-6)
    assert a.std(0).max() > 0                                           # the models' outputs vary by row

def _noisy(df, valid):
    "A stand-in training: a seeded random output per held-out row."
    return dict(probs=np.random.rand(int(valid.sum()), 2).round(6).tolist())

def _dies_once(df, valid, marker):
    "A training whose worker dies the first time (the process ends mid-job), then runs as `_noisy`."
    if not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)
    return _noisy(df, valid)

def _fails(df, valid):
    if valid[0]: raise ValueError("column 'age' has text in row 3")
    return _noisy(df, valid)

def _jobs(fit, n=4):
    folds = np.arange(40) % n
    return [Job(f'0/{k}/m', fit, folds, k) for k in range(n)]

def test_killed_worker_is_retried_with_the_same_result(tmp_path, two_workers):
    df = pd.DataFrame(dict(x=range(40)))
    serial = run_jobs(df, _jobs(_noisy))
    again = run_jobs(df, _jobs(partial(_dies_once, marker=str(tmp_path/'died'))), runner=two_workers)
    assert (tmp_path/'died').exists() and again == serial

class _Stops(RayRunner):
    "A driver stopped (Ctrl-C) after `after` jobs have ended."
    def __init__(self, after): super().__init__(workers=2); self.after = after
    def __call__(self, df, jobs, quiet=False):
        for i,(job, run) in enumerate(super().__call__(df, jobs, quiet)):
            if i == self.after: raise KeyboardInterrupt
            yield job, run

class _Counts(Serial):
    def __call__(self, df, jobs, quiet=False):
        self.ran = [j.key for j in jobs]
        yield from super().__call__(df, jobs, quiet)

def test_stopped_driver_resumes_from_the_store(tmp_path, two_workers):
    df, settings = pd.DataFrame(dict(x=range(40))), dict(task='noise')
    with pytest.raises(KeyboardInterrupt): run_jobs(df, _jobs(_noisy), RunStore(tmp_path/'runs.json', settings), runner=_Stops(after=2))
    kept = RunStore(tmp_path/'runs.json', settings)
    ended = set(kept.runs)
    assert len(ended) == 2                                              # the jobs that ended before the stop, written as each ended
    counts = _Counts()
    resumed = run_jobs(df, _jobs(_noisy), kept, runner=counts)
    assert sorted(counts.ran) == sorted({j.key for j in _jobs(_noisy)} - ended)   # only the others ran
    assert resumed == run_jobs(df, _jobs(_noisy))

def test_failing_job_stops_the_run_named(two_workers):
    with pytest.raises(ValueError, match="text in row 3") as e: run_jobs(pd.DataFrame(dict(x=range(40))), _jobs(_fails), runner=two_workers)
    assert "'0/0/m'" in ''.join(getattr(e.value, '__notes__', [])) + str(e.value)

def test_runner_from_the_command_line_options():
    assert isinstance(runner_for(), Serial) and isinstance(runner_for(workers=1), Serial)
    r = runner_for(workers=4, gpus_per_job=0.5)
    assert isinstance(r, RayRunner) and (r.workers, r.gpus_per_job, r.address) == (4, 0.5, None)
    assert runner_for(ray_address='auto').address == 'auto'
