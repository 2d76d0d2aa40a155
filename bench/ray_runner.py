"""Folds in parallel on Ray: a small `meta_compare` run one job after another and as Ray tasks, on this CPU.

The synthetic `'meta'` task (`make_synthetic`, `--n` rows, two rows per patient, patient-grouped folds): image only and
concat, 3 folds, ResNet-18 from scratch, 3 epochs, at each of `--sizes` pixels: 6 jobs. `serial` runs them in this
process with all of the machine's threads (torch's default), then with one thread; `ray` as `RayRunner(workers=W)` tasks
of one thread each (W = the CPU count), on workers started beforehand. Wall times, the speed-up over the default serial
run, and the largest difference between the Ray table's scores and each serial table's. Then the task overhead: 24 jobs that train nothing, on warm workers, per job.

Run: .venv/bin/python bench/ray_runner.py [--n 240] [--sizes 32 64]   Writes fastai_meta/results/ray-runner-cpu.{json,md}.
"""
import argparse, json, os, tempfile, time, warnings
from pathlib import Path
warnings.filterwarnings('ignore')
import numpy as np, pandas as pd, ray, torch
from fastai.vision.all import *
from fastai_meta.all import *
from lesions import save
from fastai_meta.crossfit import Job, run_jobs, RayRunner

COLS = ['accuracy', 'balanced_accuracy', 'roc_auc']
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])        # `_nothing` travels by value

def _nothing(df, valid): return dict(probs=np.random.rand(int(valid.sum()), 2).tolist())

def timed(f):
    t = time.perf_counter(); res = f()
    return res, time.perf_counter() - t

def main(a):
    workers = os.cpu_count()
    runner = RayRunner(workers=workers)
    _, start = timed(runner.start)
    jobs, table = [Job(f'{k}', _nothing, np.arange(48) % 24, k) for k in range(24)], pd.DataFrame(dict(x=range(48)))
    _, warm = timed(lambda: run_jobs(table, jobs[:workers], runner=runner))      # each worker imports the library once
    rows = []
    for size in a.sizes:
        path = Path(tempfile.mkdtemp())
        df = make_synthetic(path, n=a.n, task='meta', size=size, seed=0).assign(patient=lambda d: [f'P{i // 2}' for i in range(len(d))])
        kw = dict(path=path, folder='images', group_col='patient', cat_names=['site'], cont_names=['age'], arch='resnet18',
                  pretrained=False, size=size, n_folds=3, epochs=3)
        serial, t_serial = timed(lambda: meta_compare(df, **kw))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        one, t_one = timed(lambda: meta_compare(df, **kw))                    # one thread, as each Ray job has
        torch.set_num_threads(threads)
        on_ray, t_ray = timed(lambda: meta_compare(df, runner=runner, **kw))
        diff = lambda r: float(np.abs(r.scores[COLS].to_numpy() - on_ray.scores[COLS].to_numpy()).max())
        rows.append(dict(size=size, jobs=6, serial_s=round(t_serial, 1), serial_1_thread_s=round(t_one, 1), ray_s=round(t_ray, 1),
                         speedup=round(t_serial / t_ray, 2), diff_from_serial=diff(serial), diff_from_serial_1_thread=diff(one)))
        print(rows[-1], flush=True)
    _, t = timed(lambda: run_jobs(table, jobs, runner=runner))
    res = dict(cpu=os.cpu_count(), torch_threads=torch.get_num_threads(), ray=ray.__version__, workers=workers, ray_start_s=round(start, 1), workers_warm_s=round(warm, 1),
               overhead_per_job_s=round(t / len(jobs), 3), compares=rows)
    save('ray-runner-cpu', res)
    md = [f"# Ray runner against serial, on a {res['cpu']}-core CPU", '',
          f"`meta_compare` (image only and concat, 3 folds, {a.n} rows, ResNet-18 from scratch, 3 epochs): serial with "
          f"{res['torch_threads']} threads (and with 1), Ray with {workers} workers of one thread. Ray started in {res['ray_start_s']} s and its workers imported the library in "
          f"{res['workers_warm_s']} s, once per session (neither counted); "
          f"a job that trains nothing costs {res['overhead_per_job_s']} s on warm workers.", '',
          pd.DataFrame(rows).to_markdown(index=False)]
    save('ray-runner-cpu', md='\n'.join(md) + '\n')

if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--n', type=int, default=240)
    p.add_argument('--sizes', type=int, nargs='+', default=[32, 64])
    main(p.parse_args())
