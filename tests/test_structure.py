"The house reads top-down: each module imports only the stages below it, at the top of the file, by public names; fastai's own methods stay fastai's."
import ast, subprocess, sys
from pathlib import Path
import pytest

PKG = Path(__file__).resolve().parents[1]/'fastai_meta'
# The stages, bottom up (nbs/contributing.md draws them): a module may import only the modules listed before it (synth, the
# synthetic data sets, imports none).
STAGES = ['sources', 'synth', 'columns', 'encoding', 'images', 'show', 'data', 'model', 'fusion', 'body', 'losses', 'speed', 'learner', 'interpret', 'trackers', 'calibrate',
          'crossfit', 'scores', 'context', 'stage_two', 'stack', 'predict', 'explain', 'report', 'compare', 'description', 'deploy', 'hub', 'forms', 'app', 'commands', 'cli']
APART = {'all': set(STAGES), '__init__': set(), '_modidx': set()}   # `all` gathers the stages

def _imports(tree):
    "(module, names, line, at top level) of each import of a package module in `tree`."
    top = set(map(id, tree.body))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or '').startswith('fastai_meta')):
            mod = (node.module or '').removeprefix('fastai_meta').lstrip('.') or '__init__'
            yield mod.split('.')[0], [a.name for a in node.names], node.lineno, id(node) in top
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith('fastai_meta'): yield (a.name.split('.')[1:] or ['__init__'])[0], [], node.lineno, id(node) in top

def _modules(): return {f.stem: ast.parse(f.read_text()) for f in PKG.glob('*.py')}

def test_every_module_has_a_stage():
    assert set(_modules()) == set(STAGES) | set(APART)

def test_imports_run_down_the_stages_only_at_the_top_of_a_module():
    bad = []
    for name, tree in _modules().items():
        below = APART[name] if name in APART else set(STAGES[:STAGES.index(name)])
        for mod, names, line, top in _imports(tree):
            if mod == '__init__' and names == ['__version__']: continue        # the version string
            if mod not in below: bad.append(f'{name}.py:{line} imports {mod} (not below it)')
            if not top: bad.append(f'{name}.py:{line} imports {mod} inside a function')
    assert not bad, '\n'.join(bad)

def test_no_private_name_is_borrowed_from_another_module():
    borrowed = [f'{name}.py:{line} takes {n} from {mod}' for name, tree in _modules().items() for mod, names, line, _ in _imports(tree)
                for n in names if n.startswith('_') and n != '__version__']
    assert not borrowed, '\n'.join(borrowed)

def test_no_private_name_is_imported_from_a_dependency():
    "fastai's, timm's or any library's private helpers are not imported: they change without notice."
    taken = [f'{name}.py:{n.lineno} takes {a.name} from {n.module}' for name, tree in _modules().items() for n in ast.walk(tree)
             if isinstance(n, ast.ImportFrom) and n.level == 0 and not (n.module or '').startswith('fastai_meta')
             for a in n.names if a.name.startswith('_')]
    assert not taken, '\n'.join(taken)

def test_modules_stay_small():
    long = {f.name: n for f in PKG.glob('*.py') if f.stem != '_modidx' and (n := len(f.read_text().splitlines())) > 420}
    assert not long, f'modules over ~400 lines: {long}'

def test_lines_stay_readable():
    "At most 5 % of the package's non-blank lines are over 120 characters (fastai's reference files: 2.6 %)."
    lines = [l for f in PKG.glob('*.py') if f.stem != '_modidx' for l in f.read_text().splitlines() if l.strip()]
    long = sum(len(l) > 120 for l in lines)
    assert long <= 0.05 * len(lines), f'{long} of {len(lines)} lines are over 120 characters'

def test_no_call_passes_more_than_five_arguments_by_position():
    "A long argument list is passed by keyword: reorder a parameter and a positional value would land in the wrong slot, silently."
    long = [f'{name}.py:{n.lineno} {ast.unparse(n.func)}' for name, tree in _modules().items() for n in ast.walk(tree)
            if isinstance(n, ast.Call) and sum(not isinstance(a, ast.Starred) for a in n.args) > 5]
    assert not long, '\n'.join(long)

def test_one_import_gives_what_a_user_calls():
    "`fastai_meta.all` names what a user calls (at most 101 names, half its first count), no constant and no star import."
    names = [a.asname or a.name for n in ast.parse((PKG/'all.py').read_text()).body if isinstance(n, ast.ImportFrom) for a in n.names]
    assert '*' not in names and len(names) <= 101, len(names)
    assert not [n for n in names if n.isupper()]

def test_fastai_methods_stay_fastai_s():
    "A plain `vision_learner` in a process that imported the library runs fastai's own `fine_tune` and `predict`; a `DataBlock` without a `MetaBlock` takes fastai's own `datasets`."
    code = ("from fastai.vision.all import *\n"
            "before = (Learner.fine_tune, Learner.predict, DataBlock.datasets)\n"
            "import fastai_meta.all\n"
            "from fastai_meta.learner import MetaLearner\n"
            "assert (Learner.fine_tune, Learner.predict) == before[:2]\n"
            "assert DataBlock.datasets._fastai_datasets is before[2]\n"
            "import unittest.mock as um\n"
            "with um.patch('fastai_meta.data._datasets', wraps=before[2]) as fastai_s:\n"
            "    DataBlock(blocks=(CategoryBlock,), get_x=noop).datasets(['a', 'b'])\n"
            "assert fastai_s.call_count == 1\n"
            "assert MetaLearner.fine_tune is not Learner.fine_tune and MetaLearner.predict is not Learner.predict\n"
            "print('ok')")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().endswith('ok'), out.stderr[-2000:]
