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
    assert {'fastai_meta/results/PROVENANCE.md', 'fastai_meta/results/compare-ham10000-cpu.md'} <= names   # what the docs show

def test_version(capsys):
    try: main(['--version'])
    except SystemExit as e: assert e.code == 0
    assert capsys.readouterr().out.strip() == f'fastai-meta {fastai_meta.__version__}'

def test_every_imported_package_is_declared():
    "Each third-party package the library imports is a declared dependency (or an extra's), and the installed set is consistent (`pip check`)."
    import ast, tomllib
    declared = {d.split('>')[0].split('<')[0].split('=')[0].split('[')[0].strip().lower().replace('-', '_')
                for ds in [tomllib.loads((ROOT/'pyproject.toml').read_text())['project']['dependencies']] +
                          list(tomllib.loads((ROOT/'pyproject.toml').read_text())['project']['optional-dependencies'].values()) for d in ds}
    names = {'sklearn': 'scikit_learn', 'PIL': 'pillow', 'plum': 'plum_dispatch'}
    stdlib = set(sys.stdlib_module_names)
    used = set()
    for f in (ROOT/'fastai_meta').glob('*.py'):
        for node in ast.walk(ast.parse(f.read_text())):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module] if isinstance(node, ast.ImportFrom) and not node.level else []
            used |= {m.split('.')[0] for m in mods if m}
    used = {names.get(m, m).lower() for m in used if m not in stdlib and m != 'fastai_meta'}
    assert used <= declared, f'imported but not declared: {sorted(used - declared)}'
    out = subprocess.run([sys.executable, '-m', 'pip', 'check'], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:]
