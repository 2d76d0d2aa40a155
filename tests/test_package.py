"The wheel a clone builds: its licence and classifiers, the package's modules, no tests, notebooks or benchmarks; and `--version`."
import subprocess, sys, zipfile
from pathlib import Path
import fastai_meta
from fastai_meta.cli import main

ROOT = Path(__file__).resolve().parents[1]

def test_the_wheel_carries_its_licence(tmp_path):
    out = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', str(tmp_path), str(ROOT)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    z = zipfile.ZipFile(next(tmp_path.glob('fastai_meta-*.whl')))
    names = set(z.namelist())
    meta = z.read(next(n for n in names if n.endswith('.dist-info/METADATA'))).decode()
    assert any(n.endswith('.dist-info/licenses/LICENSE') for n in names) and 'Apache License' in z.read(next(n for n in names if n.endswith('licenses/LICENSE'))).decode()
    assert 'License-Expression: Apache-2.0' in meta and 'Classifier: Intended Audience :: Science/Research' in meta
    assert {f'fastai_meta/{m}.py' for m in ('learner', 'compare', 'crossfit', 'sources', 'cli')} <= names
    assert not any(n.startswith(('tests/', 'nbs/', 'bench/')) for n in names)

def test_version(capsys):
    try: main(['--version'])
    except SystemExit as e: assert e.code == 0
    assert capsys.readouterr().out.strip() == f'fastai-meta {fastai_meta.__version__}'
