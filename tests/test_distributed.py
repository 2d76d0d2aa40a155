"fastai's distributed training (Accelerate DDP) with two CPU processes on gloo: metadata shards with its images, weights stay equal."
import json, subprocess, sys
import pytest, torch
from fastai_meta.synth import make_synthetic

def test_two_process_ddp_keeps_image_and_metadata_together(tmp_path):
    make_synthetic(tmp_path, n=64, task='meta', size=32).to_pickle(tmp_path/'df.pkl')
    worker = str(__import__('pathlib').Path(__file__).parent/'ddp_worker.py')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29533', worker, str(tmp_path), str(tmp_path)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    seen = [json.loads((tmp_path/f'seen{r}.json').read_text()) for r in (0, 1)]
    for s in seen: assert s['wrong'] == 0 and s['n'] == 24          # every image came with its own metadata row
    assert not set(seen[0]['keys']) & set(seen[1]['keys'])          # the processes saw different samples
    w0, w1 = (torch.load(tmp_path/f'weights{r}.pt') for r in (0, 1))
    params = [k for k in w0 if not any(b in k for b in ('running_', 'num_batches'))]
    assert all(torch.equal(w0[k], w1[k]) for k in params)           # gradients were averaged: equal weights
    init = torch.load(tmp_path/'init0.pt')
    assert sum(not torch.equal(w0[k], init[k]) for k in params) > len(params) // 2   # and they did train
