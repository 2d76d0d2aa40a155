"""Build the documentation site in `_site/` from the notebooks, offline, without quarto.

1. nbdev processes the notebooks (`proc_nbs`, into `_proc/`): `show_doc` cells are executed and
   rendered, `#| hide` cells dropped, backticked names linked to their docs (ours and fastai's).
2. This script turns each processed notebook into a MyST-NB source page: quarto front matter
   becomes the page title, quarto cell options (`echo`, `output`, `include`) become MyST-NB tags,
   `show_doc` output becomes a real section (so it gets an anchor and a place in the page's table
   of contents), and links to this project's own site become relative links.
3. Sphinx (MyST-NB, the Furo theme) renders the pages. Notebooks are rendered with the outputs
   they were saved with: nothing is executed here, so the site builds without data or a GPU
   (refresh the outputs with `make nb-outputs`).

Run: `make docs`, or `python docs/build.py [--out _site]`.
"""
import functools, inspect, argparse, json, re, shutil, subprocess, sys
from pathlib import Path
import yaml

ROOT = Path(__file__).resolve().parents[1]
SITE_URL = 'https://fastai-meta.github.io/fastai_meta/'
NAV = {'Tutorials': 'tutorials/', 'Reference': ''}   # sidebar sections, by folder of the page
# The reference in the order a user meets it: the data, the learner, what it tells, comparing, the stack, deploying, serving
READING_ORDER = ['data', 'columns', 'encoding', 'images', 'show', 'learner', 'model', 'fusion', 'body', 'losses', 'speed',
                 'predict', 'interpret', 'calibrate', 'explain', 'compare', 'report', 'crossfit', 'scores', 'context', 'stack',
                 'stage_two', 'deploy', 'description', 'hub', 'app', 'forms', 'cli', 'commands', 'trackers', 'synth', 'sources']
_re_opt = re.compile(r'^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')

def cell_options(src):
    "Quarto/nbdev `#| key: value` options at the top of a code cell, and the source without them."
    lines, opts = src.splitlines(), {}
    while lines and (m := _re_opt.match(lines[0])):
        opts[m.group(1)] = m.group(2).strip().lower() or 'true'
        lines = lines[1:]
    return opts, '\n'.join(lines)

def _text(x): return ''.join(x) if isinstance(x, list) else (x or '')

_re_source = re.compile(r'^\[source\]\([^)]*\)(\{[^}]*\})?[ \t]*\n', re.MULTILINE)

def _comment_own_line(line):
    """A signature line where nbdev put undocumented parameters before a documented one (`lr=None, folds=5, # folds`),
    split so that the comment sits on its parameter's line alone."""
    code, sep, comment = line.partition(' # ')
    if not sep or not code.startswith('    '): return line
    depth, quote, cut = 0, None, None
    for i,ch in enumerate(code.rstrip().rstrip(',')):              # the last comma outside brackets and quotes
        if quote: quote = None if ch == quote else quote
        elif ch in '\'"': quote = ch
        elif ch in '([{': depth += 1
        elif ch in ')]}': depth -= 1
        elif ch == ',' and depth == 0: cut = i
    if cut is None: return line
    return f"{code[:cut + 1]}\n    {code[cut + 1:].strip()}{sep}{comment}"

def show_doc_markdown(md):
    "`show_doc`'s markdown with an index entry, an HTML anchor named as nbdev's index names it (`metaencoding.fit`), and its source link under its heading."
    md = md.replace('\n---\n', '\n', 1).lstrip('-\n')
    md = re.sub(r':\s*NoneType\s*=\s*None', '=None', md)    # nbdev names a default's type; `None`'s says nothing
    md = re.sub(r'\bNoneType\b', 'None', md)                   # and in a Union: `Union[Callable, None]`
    md = re.sub(r':\s*(?:function|type|(?:\w+\.)+_?\w*Meta)\s*=', '=', md)   # a default's (meta)class says nothing
    md = re.sub(r'\b(\w+):(?:int|float|str|bool|tuple|list|dict)=', r'\1=', md)   # nbdev's type of a default: `fn_col:int=0` for a column name
    md = re.sub(r'\b(?:collections\.abc|typing)\.', '', md)
    md = re.sub(r'\b(?:fastai|fastcore|pandas|torch)(?:\.\w+)*\.([A-Z]\w*)', r'\1', md)   # `DataFrame`, not `pandas.DataFrame`
    md = re.sub(r'```python\n.*?```', lambda b: '\n'.join(map(_comment_own_line, b.group(0).split('\n'))), md, flags=re.S)
    md = re.sub(r'```python\n.*?```', lambda b: re.sub(r'#[^\n]*', lambda c: c.group(0).replace('`', ''), b.group(0)),
                md, flags=re.S)                                 # a parameter's comment is code there: no Markdown quotes
    head, fence, doc = md.rpartition('```\n')                    # nbdev italicises a docstring's first line only
    md = head + fence + re.sub(r'^\*([^\n]+)\*\n((?:[^\n]+(?:\n|$))+)',
                               lambda d: f"*{d.group(1)} {' '.join(d.group(2).split())}*\n", doc, count=1, flags=re.M)
    src = _re_source.search(md)
    if src: md = md[:src.start()] + md[src.end():]
    m = re.search(r'^#+\s+(\S+).*$', md, re.MULTILINE)
    if not m: return md
    if inspect.isclass(documented(m.group(1))): md = class_signature(md, documented(m.group(1)))
    link = f"\n\n{own_source(m.group(1), src.group(0).strip())}" if src else ''      # quarto floated it right, above the heading; here it follows the heading
    # The anchor and the index entry follow the heading: before it, they would end the previous section, and links would land there.
    # The index entry's target goes on the signature block below it: Sphinx's search shows that block's text as the hit's summary
    # (on an empty target it fails with a console error).
    return (md[:m.end()] + f'\n\n<a id="{m.group(1).lower()}"></a>' + link
            + f'\n\n```{{index}} single: {m.group(1)}\n```\n' + md[m.end():])

def class_signature(md, cls):
    """A class's signature written as a `class`, not the `def` nbdev writes; where nbdev shows only `(*args, **kwargs)`,
    Python's own signature of the class (a `NamedTuple`'s fields) or, where that says nothing either, its bases."""
    name = cls.__name__
    md = md.replace(f"```python\ndef {name}(", f"```python\nclass {name}(", 1)
    vague = f"```python\nclass {name}(\n    *args, **kwargs\n):\n```"
    if vague not in md: return md
    try: sig = str(inspect.signature(cls))
    except ValueError: sig = '(*args, **kwargs)'                 # a builtin's subclass (an exception, a dict)
    if sig in ('(*args, **kwargs)', '()'): sig = f"({', '.join(b.__name__ for b in cls.__bases__ if b is not object)})"
    return md.replace(vague, f"```python\nclass {name}{sig}\n```", 1)

@functools.cache
def _homes():
    "The library's modules (`fastai_meta.all` first), where a documented name may live, then fastai's."
    import importlib, fastai.vision.all, fastai_meta.all
    mods = [fastai_meta.all]
    for f in sorted((ROOT/'fastai_meta').glob('[a-z]*.py')):
        try: mods.append(importlib.import_module(f'fastai_meta.{f.stem}'))
        except ImportError: pass                                         # an optional dependency missing here
    return mods + [fastai.vision.all]

def documented(name):
    "The object `show_doc` documented as `name` (ours, or fastai's where this library patches it); `None` if not found."
    home = next((m for m in _homes() if hasattr(m, name.split('.')[0])), None)
    try: return functools.reduce(getattr, name.split('.'), home)
    except AttributeError: return None

def own_source(name, link):
    "The source link of documented `name`, pointed at this library's code where nbdev pointed it at fastai's (a fastai method this library patches, as `DataBlock.datasets`)."
    if 'fastai_meta/' in link: return link
    obj = getattr(documented(name), '__func__', documented(name))   # a patched fastai method (`DataBlock.datasets`) lives in this library
    try: file, line = inspect.getsourcefile(obj), inspect.getsourcelines(obj)[1]
    except Exception: return link
    if not file or Path(file).parent.name != 'fastai_meta': return link
    return re.sub(r'\(https?://[^)]*\)', f'(https://github.com/fastai-meta/fastai_meta/blob/main/fastai_meta/{Path(file).name}#L{line})', link, count=1)

def show_doc_name(md):
    "The documented name of `show_doc`'s markdown (its heading); `None` for other markdown (a benchmark's table, a heading of prose)."
    if not md.lstrip().startswith('---'): return None      # show_doc's markdown opens with a rule
    m = re.search(r'^#+\s+(\S+)', md, re.MULTILINE)
    return m and m.group(1)

# fastai's docs index names that nbdev links to the wrong page here: our fusion `'concat'`, not `torch_core.concat`;
# `encodes`/`setups` of our own transforms, not `tabular.core`'s
WRONG_LINKS = ('concat', 'encodes', 'setups')
_re_wrong_link = re.compile(r'\[`(' + '|'.join(WRONG_LINKS) + r')`\]\(https://docs\.fast\.ai/[^)]*\)')

def unlink_wrong(src): return _re_wrong_link.sub(r'`\1`', src)

_re_attrs = re.compile(r'(\]\([^)\s]+\))\{[^}]*\}')   # quarto's `[text](url){target="_blank" ...}`

_re_api_heading = re.compile(r'^(#{2,4}) `?([A-Za-z_][\w.]*)`?\s*$', re.MULTILINE)   # `### show_batch`: an API entry written by hand

def relink(src, depth):
    "Links to this project's site made relative to a page `depth` folders below the site root; quarto link attributes and wrong fastai links dropped."
    return unlink_wrong(_re_attrs.sub(r'\1', src.replace(SITE_URL, '../'*depth)))

_re_bar = re.compile(r'\d+\.\d+% \[\d+/\d+|^\s*█\s*$|^\s*(Epoch \d+/\d+ :)?\s*$')   # fastprogress's console bars and their leftovers

def terminal_lines(text):
    "What a terminal shows of `text`: each line's last carriage-return segment, progress bars dropped."
    lines = []
    for line in text.split('\n'):
        segs = [x for x in line.split('\r') if x.strip() and not _re_bar.search(x)]
        if segs: lines.append(segs[-1].rstrip())
        elif not line.strip(): lines.append('')         # a blank line: it ends a printed table or paragraph
    return lines

def _html_table(rows):
    head = ''.join(f'<th>{c}</th>' for c in rows[0])
    body = ''.join('<tr>' + ''.join(f'<td>{c}</td>' for c in r) + '</tr>' for r in rows[1:])
    return f'<table class="dataframe epoch-table"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'

# A cell of fastai's console epoch table: a time (`00:01`), a float (fastai prints 6 decimals), or any other word. A value wider
# than its column runs into the next one (`1753.83581500:01`); these patterns split it again.
_re_epoch_cell = re.compile(r'\d+(?::\d\d)+|-?\d+\.\d{6}|\S+')

def split_epoch_tables(lines):
    "`lines` as a list of ('text', lines) and ('table', rows) parts: fastai's console epoch tables (`epoch  train_loss ...`) taken out."
    parts = []
    for l in lines:
        cols = _re_epoch_cell.findall(l) if parts and parts[-1][0] == 'table' else l.split()
        if l.startswith('epoch '): parts.append(('table', [l.split()]))
        elif parts and parts[-1][0] == 'table' and cols and cols[0].isdigit() and len(cols) == len(parts[-1][1][0]): parts[-1][1].append(cols)
        elif parts and parts[-1][0] == 'text': parts[-1][1].append(l)
        else: parts.append(('text', [l]))
    return parts

def clean_outputs(outs):
    "Outputs with fastprogress's console bars removed, and fastai's epoch tables as HTML tables, as docs.fast.ai shows them."
    res = []
    for o in outs:
        if o.get('output_type') != 'stream': res.append(o); continue
        if o.get('name') == 'stderr': continue     # warnings from dependencies and download logs are not content
        for kind, part in split_epoch_tables(terminal_lines(_text(o.get('text')))):
            if kind == 'text':
                if any(l.strip() for l in part): res.append(dict(o, text='\n'.join(part).rstrip('\n') + '\n'))   # no blank box
            else: res.append(dict(output_type='display_data', metadata={}, data={'text/html': _html_table(part), 'text/plain': '\n'.join('  '.join(r) for r in part)}))
    return res

def clean_saved_outputs(paths):
    "Rewrite the notebooks at `paths` with `clean_outputs` applied to their saved outputs (run by `make nb-outputs`)."
    for p in paths:
        nb = json.loads(Path(p).read_text())
        for c in nb['cells']:
            if c.get('outputs'): c['outputs'] = clean_outputs(c['outputs'])
        Path(p).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')

def convert(nb, depth):
    "A processed notebook as a MyST-NB page: title from the front matter, quarto options as tags."
    cells, fm, documented = [], {}, set()
    shown = {show_doc_name(_text(o.get('data', {}).get('text/markdown'))).lower() for c in nb['cells'] if c['cell_type'] == 'code'
             for o in c.get('outputs', []) if 'text/markdown' in o.get('data', {}) and show_doc_name(_text(o['data']['text/markdown']))}
    for cell in nb['cells']:
        src = _text(cell['source'])
        if cell['cell_type'] == 'raw' and src.startswith('---'):
            fm = yaml.safe_load(src.strip().strip('-')) or {}
            head = f"# {fm.get('title', '')}\n\n" + (f"> {fm['description']}\n" if fm.get('description') else '')
            cells.append(dict(cell_type='markdown', metadata={}, source=relink(head, depth)))
            continue
        if cell['cell_type'] == 'markdown':
            if src.startswith('<!-- WARNING'): continue
            src = _re_api_heading.sub(lambda m: m.group(0) if m.group(2).lower() in shown else f'{m.group(0)}\n\n<a id="{m.group(2).lower()}"></a>', src)
            cells.append(dict(cell_type='markdown', metadata={}, source=relink(src, depth)))
            continue
        if cell['cell_type'] != 'code': continue
        opts, src = cell_options(src)
        if opts.get('include') == 'false': continue
        outs = clean_outputs(cell.get('outputs', []))
        mds = [_text(o.get('data', {}).get('text/markdown')) for o in outs if 'text/markdown' in o.get('data', {})]
        if opts.get('output') == 'asis':        # what the cell printed is markdown too (quarto's `output: asis`), blank lines kept
            mds += [_text(o.get('text')) for o in cell.get('outputs', []) if o.get('output_type') == 'stream' and o.get('name') == 'stdout']
        if opts.get('output') == 'asis' and mds and opts.get('echo') != 'false':    # the code shown, its output as markdown
            cells.append(dict(cell_type='code', metadata={'tags': ['remove-output']}, source=src, outputs=[], execution_count=None))
            opts['echo'] = 'false'
        if opts.get('echo') == 'false' and opts.get('output') == 'asis' and mds:   # show_doc and tables: real markdown
            names = {show_doc_name(m) for m in mds} - {None}
            if names and names <= documented: continue     # nbdev documents a patched method twice (`Learner.to_fast` vs `to_fast`)
            documented |= names
            md = '\n\n'.join(show_doc_markdown(m) if show_doc_name(m) else m for m in mds)
            md = re.sub(r'^# (?=\S)', '### ', md, flags=re.MULTILINE)   # a benchmark's own title, inside the page: never a page of its own
            cells.append(dict(cell_type='markdown', metadata={}, source=relink(md, depth)))
            continue
        tags = (['remove-input'] if opts.get('echo') == 'false' else []) + (['remove-output'] if opts.get('output') == 'false' else [])
        if not src.strip() and not outs: continue
        for o in outs:
            if 'text/markdown' in o.get('data', {}): o['data']['text/markdown'] = relink(_text(o['data']['text/markdown']), depth)
        cells.append(dict(cell_type='code', metadata={'tags': tags} if tags else {}, source=src, outputs=outs, execution_count=None))
    for i,c in enumerate(cells): c['id'] = f'c{i}'
    nb = dict(nb, cells=cells, nbformat=4, nbformat_minor=5)
    nb['metadata'] = {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'},
                      'language_info': {'name': 'python'}}
    return nb, fm

def toctree(caption, pages):
    return f"```{{toctree}}\n:caption: {caption}\n:hidden:\n\n" + '\n'.join(pages) + '\n```\n'

def build_sources(proc, src):
    "Write the Sphinx source folder `src` from nbdev's `proc` folder; return the pages by section."
    if src.exists(): shutil.rmtree(src)
    src.mkdir(parents=True)
    pages = {k: [] for k in NAV}
    for fn in sorted(proc.rglob('*.ipynb')):
        nb = json.loads(fn.read_text())
        rel = fn.relative_to(proc)
        fm = yaml.safe_load(_text(nb['cells'][0]['source']).strip().strip('-')) if nb['cells'] and nb['cells'][0]['cell_type'] == 'raw' else {}
        name = Path(fm.get('output-file', rel.with_suffix('.html').name)).with_suffix('')
        out = rel.parent/name
        page, _ = convert(nb, len(out.parts) - 1)
        (src/out).parent.mkdir(parents=True, exist_ok=True)
        (src/out).with_suffix('.ipynb').write_text(json.dumps(page))
        if str(out) != 'index':
            section = 'Tutorials' if out.parts[0] == 'tutorials' else 'Reference'
            pages[section].append(str(out))
    rank = {p: i for i,p in enumerate(READING_ORDER)}
    pages['Reference'].sort(key=lambda p: rank.get(p, len(rank)))
    for md in (ROOT/'nbs').glob('*.md'): shutil.copy(md, src/md.name)
    shutil.copy(ROOT/'CHANGELOG.md', src/'changelog.md')        # the changelog, one file in the repository's root
    if (ROOT/'nbs'/'images').exists(): shutil.copytree(ROOT/'nbs'/'images', src/'images')     # figures the pages link to (the app's screenshot)
    index = src/'index.ipynb'
    nb = json.loads(index.read_text())
    nav = [toctree(k, v) for k,v in pages.items() if v] + [toctree('Project', [p.stem for p in sorted((ROOT/'nbs').glob('*.md'))] + ['changelog', 'genindex'])]
    nb['cells'].append(dict(cell_type='markdown', metadata={}, source='\n'.join(nav)))
    index.write_text(json.dumps(nb))
    return pages

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--out', default=str(ROOT/'_site'), help='where the HTML site goes')
    p.add_argument('--skip-proc', action='store_true', help="reuse `_proc/` from an earlier run")
    p.add_argument('--clean-outputs', nargs='*', metavar='NB', help='only strip progress bars from these notebooks\' saved outputs')
    a = p.parse_args(argv)
    if a.clean_outputs is not None: return clean_saved_outputs(a.clean_outputs or sorted(ROOT.glob('nbs/**/*.ipynb')))
    if not a.skip_proc:
        from nbdev.serve import proc_nbs
        proc_nbs(path=str(ROOT/'nbs'), n_workers=2)
    src = ROOT/'_docs'/'src'
    build_sources(ROOT/'_proc', src)
    out = Path(a.out)
    if out.exists(): shutil.rmtree(out)
    cmd = [sys.executable, '-m', 'sphinx', '-q', '-b', 'html', '-c', str(ROOT/'docs'), '-j', '2', str(src), str(out)]
    subprocess.run(cmd, check=True, cwd=ROOT)
    (out/'.nojekyll').touch()
    print(f'Site written to {out}/index.html')

if __name__ == '__main__': main()
