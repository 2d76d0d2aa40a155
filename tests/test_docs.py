"The docs site: built from the notebooks by `make docs`'s script, then opened in headless Chromium."
import base64, functools, html as html_lib, http.server, importlib, json, os, re, shutil, subprocess, sys, threading
from pathlib import Path
from urllib.parse import urljoin, urlparse, unquote
import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = ['sources', 'columns', 'encoding', 'images', 'show', 'data', 'model', 'fusion', 'body', 'losses', 'speed', 'learner',
           'interpret', 'trackers', 'calibrate', 'crossfit', 'scores', 'context', 'stage_two', 'stack', 'predict', 'explain', 'report',
           'compare', 'commands', 'cli', 'synth', 'description', 'deploy', 'hub', 'forms', 'app']
NOTEBOOKS = sorted((ROOT/'nbs').glob('*.ipynb')) + sorted((ROOT/'nbs'/'tutorials').glob('*.ipynb'))
TUTORIALS = ['ham10000', 'keypoints', 'choosing_a_fusion', 'migrating', 'several_images', 'ugly_duckling']
CHROMIUM_ARGS = ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
                 '--disable-sync', '--no-first-run', '--disable-quic']

WIDER_THAN_COLUMN = """els => els.filter(e => e.scrollWidth > e.clientWidth + 1)
    .map(e => e.innerText.split('\\n').reduce((a, b) => b.length > a.length ? b : a, ''))"""

def _browser_or_skip():
    "Path of a Chromium and playwright's API, or skip (fail where FASTAI_META_REQUIRE_BROWSER is set, as in CI)."
    exe = shutil.which('chromium') or shutil.which('chromium-browser')
    try: from playwright.sync_api import sync_playwright
    except ImportError: sync_playwright = None
    why = 'no Chromium installed (Debian: apt-get install chromium)' if not exe else 'playwright is not installed' if not sync_playwright else None
    if why:
        if os.environ.get('FASTAI_META_REQUIRE_BROWSER'): pytest.fail(f'the docs browser test must run here, but {why}')
        pytest.skip(why)
    return exe, sync_playwright

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "Build the site once into a temporary folder and serve it on localhost: (folder, base URL)."
    exe, sync_playwright = _browser_or_skip()
    out = tmp_path_factory.mktemp('site')
    res = subprocess.run([sys.executable, str(ROOT/'docs'/'build.py'), '--out', str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    handler = functools.partial(_QuietHandler, directory=str(out))
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield out, f'http://127.0.0.1:{srv.server_port}/', browser
        browser.close()
    srv.shutdown()

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args): pass

def _open(browser, url):
    "Load `url`; return the page and the console errors and uncaught exceptions it raised."
    page, errors = browser.new_page(), []
    page.on('console', lambda m: errors.append(m.text) if m.type == 'error' else None)
    page.on('pageerror', lambda e: errors.append(str(e)))
    page.on('requestfailed', lambda r: errors.append(f'request failed: {r.url}'))
    resp = page.goto(url, wait_until='networkidle')
    assert resp.ok, f'{url}: HTTP {resp.status}'
    return page, errors

def test_pages_load_without_console_errors_and_links_resolve(site):
    out, base, browser = site
    pages = ['index.html', *[f'{m}.html' for m in MODULES], *[f'tutorials/{t}.html' for t in TUTORIALS], 'contributing.html']
    for p in pages: assert (out/p).exists(), f'{p} was not built'
    broken = []
    for p in pages:
        page, errors = _open(browser, base + p)
        assert not errors, f'{p}: console errors {errors}'
        text = page.inner_text('body')
        bar = re.search(r'█|\d+\.\d+% \[\d+/\d+', text)
        assert bar is None, f'{p}: progress-bar text on the page: {text[max(0, bar.start()-60):bar.end()+60]!r}'
        run_together = re.search(r'\d\.\d{6}\d+:\d\d', text)     # an epoch row whose value overflowed its column, printed as text
        assert run_together is None, f'{p}: an epoch row printed as text: {run_together.group(0)}'
        wide = page.eval_on_selector_all('article pre', WIDER_THAN_COLUMN)      # at playwright's 1280 x 720
        assert not wide, f'{p}: code wider than the column, its end hidden: {wide[:3]}'
        page_wide = page.evaluate('document.documentElement.scrollWidth - window.innerWidth')
        assert page_wide <= 0, f'{p}: the page is {page_wide} px wider than the window: it scrolls sideways'
        nav = page.eval_on_selector_all('.sidebar-tree a', 'els => els.map(e => e.getAttribute("href"))')
        assert len(nav) >= len(pages) - 1, f'{p}: the sidebar lists {len(nav)} pages'
        for href in page.eval_on_selector_all('a[href]', 'els => els.map(e => e.href)'):
            u = urlparse(href)
            if not href.startswith(base): continue                       # external: docs.fast.ai, GitHub
            target = out/unquote(u.path[1:] or 'index.html')
            if target.is_dir(): target = target/'index.html'
            if not target.exists(): broken.append(f'{p} -> {href}'); continue
            if u.fragment and target.suffix == '.html' and f'id="{u.fragment}"' not in target.read_text():
                broken.append(f'{p} -> {href} (no such anchor)')
        page.close()
    assert not broken, '\n'.join(sorted(set(broken)))

def test_every_public_symbol_has_its_entry(site):
    out, base, browser = site
    missing = []
    for m in MODULES:
        html = (out/f'{m}.html').read_text()
        for name in importlib.import_module(f'fastai_meta.{m}').__all__:
            if name.isupper(): continue                                    # constants (FORMAT, IMAGE): named in the prose, no entry
            if f'id="{name.lower()}"' not in html: missing.append(f'{m}.{name}')
    assert not missing, f'no show_doc entry on the module page for: {missing}'

def test_links_to_fastai_docs(site):
    out, *_ = site
    assert 'https://docs.fast.ai/' in (out/'data.html').read_text()

def test_search_finds_meta_cnn_learner(site):
    out, base, browser = site
    page, errors = _open(browser, base + 'search.html?q=meta_cnn_learner')
    page.wait_for_selector('#search-results li a', timeout=15000)
    hits = page.eval_on_selector_all('#search-results li a', 'els => els.map(e => e.getAttribute("href"))')
    assert any(h.startswith('learner.html') for h in hits), hits
    assert not errors, errors

def test_tutorials_show_images(site):
    out, base, browser = site
    for t in ['tutorials/keypoints', 'tutorials/choosing_a_fusion', 'tutorials/ham10000', 'tutorials/several_images', 'tutorials/ugly_duckling', 'app', 'calibrate', 'images']:    # the app page: its screenshot
        page, errors = _open(browser, base + f'{t}.html')
        sizes = page.eval_on_selector_all('img', 'els => els.map(e => [e.naturalWidth, e.naturalHeight])')
        assert any(w > 100 and h > 100 for w,h in sizes), f'{t}: no image rendered ({sizes})'
        page.close()

def test_ham10000_shows_its_images_with_their_attribution(site):
    "The tutorial keeps a batch and the top losses of real HAM10000 images (CC BY-NC 4.0 allows a few in non-commercial docs) and says whose they are."
    out, *_ = site
    nb = json.loads((ROOT/'nbs'/'tutorials'/'01_ham10000.ipynb').read_text())
    for call in ('dls.show_batch(', 'interp.plot_top_losses('):
        c = next(c for c in nb['cells'] if c['cell_type'] == 'code' and call in ''.join(c['source']))
        assert any('image/png' in o.get('data', {}) for o in c['outputs']), f'{call}: no image in the saved outputs'
    for page in ('ham10000', 'several_images'):
        text = (out/'tutorials'/f'{page}.html').read_text()
        assert text.count('CC BY-NC 4.0') >= 2 and 'Tschandl' in text and 'doi.org/10.1038/sdata.2018.161' in text, page
    text = (out/'tutorials'/'ugly_duckling.html').read_text()
    assert text.count('CC BY-NC 4.0') >= 2 and 'Rotemberg' in text and 'doi.org/10.1038/s41597-021-00815-z' in text

def test_each_entry_once_and_in_the_index(site):
    "nbdev documents a patched method twice (`Learner.to_fast` and `to_fast`); the site shows it once, and the general index lists it."
    out, *_ = site
    for m in MODULES:
        ids = re.findall(r'<a id="([^"]+)"></a>', (out/f'{m}.html').read_text())
        assert len(ids) == len(set(ids)), f'{m}.html: entries shown twice: {sorted(i for i in set(ids) if ids.count(i) > 1)}'
    index = (out/'genindex.html').read_text()
    for name in ('meta_cnn_learner', 'MetaBlock', 'Learner.to_fast', 'amp_rule'): assert f'>{name}<' in index, f'{name} not in genindex.html'

def test_footer_names_the_repository_and_licence(site):
    out, *_ = site
    for page in ('index.html', 'learner.html', 'tutorials/ham10000.html'):
        html = (out/page).read_text()
        assert 'https://github.com/fastai-meta/fastai_meta' in html and 'Apache-2.0' in html, page

def test_no_wrong_fastai_links(site):
    "`concat` is our fusion, not fastai's `torch_core.concat`."
    out, *_ = site
    for p in [f'{m}.html' for m in MODULES] + [f'tutorials/{t}.html' for t in TUTORIALS]:
        assert 'torch_core.html#concat' not in (out/p).read_text(), p

def test_no_tutorial_reads_this_project_s_folders():
    "A tutorial's code finds its data with `data_path` (a user has no ../shared), and every real-data tutorial says where to download it."
    for f in sorted((ROOT/'nbs'/'tutorials').glob('*.ipynb')):
        cells = json.loads(f.read_text())['cells']
        code = '\n'.join(''.join(c['source']) for c in cells if c['cell_type'] == 'code')
        assert 'shared' not in code.replace('shared_body', ''), f"{f.name} reads the project's shared folder"
        if 'data_path(' in code:
            prose = '\n'.join(''.join(c['source']) for c in cells if c['cell_type'] == 'markdown')
            assert 'doi.org/10.7910/DVN/DBW86T' in prose or 'isic-archive.com' in prose, f'{f.name} does not say where to download its data'

def _epoch_losses(nb):
    "The validation losses of each epoch table in the saved outputs of notebook `nb`."
    for c in nb['cells']:
        for o in c.get('outputs', []):
            html = ''.join(o.get('data', {}).get('text/html', ''))
            for tb in re.findall(r'<table.*?</table>', html, re.S):
                rows = [re.findall(r'<t[hd][^>]*>(.*?)</t[hd]>', r, re.S) for r in re.findall(r'<tr[^>]*>(.*?)</tr>', tb, re.S)]
                head = next((r for r in rows if 'valid_loss' in r), None)
                if head: yield [float(x) for r in rows if r is not head and len(r) == len(head)
                                for x in [r[head.index('valid_loss')].strip()] if re.fullmatch(r'[-+0-9.eE]+', x)]

def test_no_epoch_table_looks_broken():
    "No page shows a model whose validation loss jumps (up to over 3x the epoch before and above 1, or up past 5): an example must look as it learns."
    bad = []
    for f in NOTEBOOKS:
        for v in _epoch_losses(json.loads(f.read_text())):
            if any(b > a and (b > 5 or (b > 1 and b > 3*a)) for a,b in zip(v, v[1:])): bad.append(f'{f.name}: {v}')
    assert not bad, '\n'.join(bad)

def test_one_heading_per_symbol_and_our_source_links(site):
    "A reference page heads each symbol once (no prose heading repeating `show_doc`'s), and every source link of this library's symbols points at this library's code."
    out, *_ = site
    for m in MODULES:
        html = (out/f'{m}.html').read_text()
        heads = [re.sub(r'<[^>]+>|¶|#', '', h).strip() for h in re.findall(r'<h[1-4][^>]*>(.*?)</h[1-4]>', html, re.S)]
        twice = [a for a,b in zip(heads, heads[1:]) if a == b]
        assert not twice, f'{m}.html: headings doubled: {twice}'
        other = [u for u in re.findall(r'href="([^"]+)"[^>]*>\s*source\s*<', html) if 'github.com/fastai-meta/fastai_meta' not in u]
        assert not other, f"{m}.html: source links away from this library's code: {other}"

def _code_cells(shown=True):
    "(notebook, source, cell) of each code cell of the notebooks; with `shown`, only those whose code a reader sees."
    for f in NOTEBOOKS:
        for c in json.loads(f.read_text())['cells']:
            src = ''.join(c['source'])
            if c['cell_type'] != 'code' or shown and re.search(r'^#\|\s*(hide|export|echo:\s*false)', src, re.M): continue
            yield f, src, c

def test_saved_outputs_hold_no_progress_bars():
    "Saved outputs are as `docs/build.py --clean-outputs` leaves them: no fastprogress bar frames (█, `12.00% [3/25`)."
    bars = [f'{f.name}: {c.get("id")}' for f, _, c in _code_cells(shown=False) for o in c.get('outputs', [])
            if re.search(r'█|\d+\.\d+% \[\d+/\d+', ''.join(o.get('text', '')) + ''.join(o.get('data', {}).get('text/plain', '')))]
    assert not bars, bars

def test_shown_code_uses_the_public_api():
    "No shown code cell (neither hidden nor the library's own exported source) calls one of the library's private functions or classes."
    private = set()
    for f in (ROOT/'fastai_meta').glob('*.py'):
        private |= {m.group(1) for m in re.finditer(r'^(?:def|class)\s+(_[A-Za-z]\w*)|^(_[A-Za-z]\w*)\s*=', f.read_text(), re.M) if m.group(1)}
    bad = [f'{f.name}: {n}' for f, src, _ in _code_cells() for n in private
           if re.search(r'(?<![\w.])' + re.escape(n) + r'\b', src)]
    assert not bad, bad

def test_shown_code_fits_the_column():
    "A code line a reader sees is at most 120 characters, what the site's column shows whole (the browser test checks it)."
    long = [f'{f.name}: {l[:60]}...' for f, src, _ in _code_cells() for l in src.split('\n') if len(l) > 120]
    assert not long, long

def test_readme_quotes_the_demo_as_the_cli_page_shows_it():
    "The README's demo output is the command-line page's saved one, not an older run's."
    shown = [''.join(o.get('text', '')) for c in json.loads((ROOT/'nbs'/'04_cli.ipynb').read_text())['cells']
             for o in c.get('outputs', []) if 'lift from metadata' in ''.join(o.get('text', ''))]
    quoted = re.search(r'command-line page[^`]*```\n(.*?)```', (ROOT/'README.md').read_text(), re.S)
    assert shown and quoted and quoted.group(1).strip() == shown[0].strip(), (quoted and quoted.group(1), shown)

def test_every_result_says_where_it_came_from():
    "Each shipped results file has its row in PROVENANCE.md (the script, the commit, the command), and each row's files exist."
    res = ROOT/'fastai_meta'/'results'
    rows = [l.split('|')[1] for l in (res/'PROVENANCE.md').read_text().splitlines() if l.startswith('| `')]
    named = {n for r in rows for n in re.findall(r'`([^`]+)`', r)}
    files = {f.name for f in res.iterdir() if f.is_file() and f.name != 'PROVENANCE.md'}
    assert not files - named, f'results without a provenance row: {sorted(files - named)}'
    assert not named - files, f'provenance rows of missing files: {sorted(named - files)}'

def _strict(c): raise ValueError(f'{c} is not JSON')

def test_results_are_standard_json():
    "A shipped JSON file reads in any JSON reader: no NaN or Infinity, which Python writes unless told not to."
    bad = []
    for f in sorted((ROOT/'fastai_meta'/'results').glob('*.json')):
        try: json.loads(f.read_text(), parse_constant=_strict)
        except ValueError as e: bad.append(f'{f.name}: {e}')
    assert not bad, bad

def test_examples_seed_before_their_dataloaders():
    "fastai seeds a DataLoader's shuffling when it is made: `set_seed` after it leaves the example's numbers to chance."
    made = r'\.(?:from_(?:df|csv|folder)|dataloaders)\('
    late = [f'{f.name} cell {c.get("id")}' for f, src, c in _code_cells(shown=False)
            if (d := re.search(made, src, re.M)) and (s := re.search(r'^\s*set_seed\(', src, re.M)) and s.start() > d.start()]
    assert not late, late

def test_cells_with_outputs_import_nothing():
    "nbdev's page builder runs every cell with an import again: its page would show that run's outputs, not the saved ones."
    rerun = [f'{f.name} cell {c.get("id")}' for f, src, c in _code_cells(shown=False)
             if c.get('outputs') and not re.search(r'^#\|\s*export', src, re.M)
             and re.search(r'^\s*(import |from \S+ import )', src, re.M)]
    assert not rerun, rerun

def test_no_blank_printed_output():
    "A saved printed output holds text: a blank one shows as an empty box on the page."
    blank = [f'{f.name} cell {c.get("id")}' for f, _, c in _code_cells(shown=False) for o in c.get('outputs', [])
             if o.get('output_type') == 'stream' and not ''.join(o.get('text', '')).strip()]
    assert not blank, blank

def test_printed_tables_end_before_the_text_after_them():
    "In a cell that prints Markdown, a line after a table is a blank one: else Markdown reads the text as a table row."
    bad = []
    for f, src, c in _code_cells(shown=False):
        if 'output: asis' not in src: continue
        for o in c.get('outputs', []):
            lines = ''.join(o.get('text', '')).split('\n')
            bad += [f'{f.name}: {b[:60]}' for a,b in zip(lines, lines[1:]) if a.startswith('|') and b.strip()
                    and not b.startswith('|')]
    assert not bad, bad

COLUMN_PX = 956     # the article column's width at playwright's 1280 x 720 (docs/_static/custom.css: .content 60em)

def _png_width_dpi(png):
    "Width in pixels and dots per inch (its pHYs chunk, 72 without one) of a PNG's bytes."
    w, dpi, i = int.from_bytes(png[16:20], 'big'), 72, 8
    while i < len(png):
        n, kind = int.from_bytes(png[i:i+4], 'big'), png[i+4:i+8]
        if kind == b'pHYs': dpi = round(int.from_bytes(png[i+8:i+12], 'big') * 0.0254)
        i += 12 + n
    return w, dpi

def test_figures_keep_their_text_readable():
    """A saved figure, shrunk to the column, shows its smallest text at least 10 px high: matplotlib's 10 points, or
    the smallest `fontsize=` its cell sets (wide figures and small fonts fail)."""
    small = []
    for f, src, c in _code_cells(shown=False):
        if re.search(r'^#\|\s*(hide|include:\s*false|output:\s*false)', src, re.M): continue
        pt = min([10, *(float(x) for x in re.findall(r'fontsize\s*=\s*(\d+(?:\.\d+)?)', src))])
        for o in c.get('outputs', []):
            if 'image/png' not in o.get('data', {}): continue
            w, dpi = _png_width_dpi(base64.b64decode(o['data']['image/png']))
            px = pt / 72 * dpi * min(1, COLUMN_PX / w)
            if px < 10: small.append(f'{f.name} cell {c.get("id")}: {w} px at {dpi} dpi, {pt:g}-point text {px:.1f} px')
    assert not small, small

def _page(nb_path):
    "The site page of notebook `nb_path`: its name without the number nbdev orders notebooks by."
    name = re.sub(r'^\d+[a-z0-9]*_', '', nb_path.stem)
    return f'tutorials/{name}.html' if nb_path.parent.name == 'tutorials' else f'{name}.html'

def _saved_tables(nb_path):
    "How many tables a notebook's shown cells saved: markdown tables printed or displayed, and HTML tables."
    n = 0
    for c in json.loads(nb_path.read_text())['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] != 'code' or re.search(r'^#\|\s*(hide|include:\s*false|output:\s*false)', src, re.M): continue
        for o in c.get('outputs', []):
            md = ''.join(o.get('text', '')) if 'output: asis' in src else ''
            md += ''.join(o.get('data', {}).get('text/markdown', ''))
            n += len(re.findall(r'^\|?\s*:?-{3,}:?\s*\|', md, re.M)) + ''.join(o.get('data', {}).get('text/html', '')).count('<table')
    return n

def test_markdown_renders_and_no_table_is_lost(site):
    "Markdown a cell prints for the page (`output: asis`) renders as markdown, not raw `|` text; every table a page saved is on it."
    out, base, browser = site
    raw, lost = [], []
    for f in NOTEBOOKS:
        page = out/_page(f)
        if not page.exists(): continue
        html = page.read_text()
        pre = html_lib.unescape(re.sub(r'<[^>]+>', '', ' '.join(re.findall(r'<pre.*?</pre>', html, re.S))))
        for c in json.loads(f.read_text())['cells']:
            if c['cell_type'] != 'code' or 'output: asis' not in ''.join(c['source']): continue
            printed = ''.join(''.join(o.get('text', '')) for o in c.get('outputs', []) if o.get('output_type') == 'stream')
            rows = [l.strip() for l in printed.splitlines() if l.strip().startswith('|')]
            if rows and rows[0] in pre: raw.append(f'{page.name}: {rows[0][:60]}')
        if html.count('<table') < _saved_tables(f): lost.append(f'{page.name}: {html.count("<table")} of {_saved_tables(f)} tables')
    assert not raw, f'markdown printed for the page shown raw: {raw}'
    assert not lost, f'tables saved but not shown: {lost}'

def test_docstrings_render_whole(site):
    "A docstring of several lines is one italic paragraph (nbdev italicises its first line only)."
    out, *_ = site
    paras = {m: re.findall(r'<p>(.*?)</p>', (out/f'{m}.html').read_text(), re.S) for m in MODULES}
    half = [f'{m}: {re.sub("<[^>]+>", "", p)[:80]}' for m, ps in paras.items() for p in ps      # cut mid-sentence
            if p.startswith('<em>') and not p.rstrip().endswith('</em>')
            and not re.sub('<[^>]+>', '', p.split('</em>')[0]).rstrip().endswith(('.', ':', '?', ')'))
            and not p.split('</em>', 1)[1].startswith((':', ',', ';'))]
    assert not half, half[:5]

def test_signatures_read_plainly(site):
    """A parameter that defaults to `None` reads `x=None`, not nbdev's `x:NoneType=None`; its comment shows no Markdown
    quotes; a class reads `class`, not nbdev's `def`."""
    out, *_ = site
    bad = [(m, w) for m in MODULES for w in ('NoneType', 'BypassNewMeta', '_TensorMeta', ':function=', 'collections.abc.')
           if w in html_lib.unescape(re.sub('<[^>]+>', '', (out/f'{m}.html').read_text()))]
    assert not bad, bad
    pre = {m: re.findall(r'<pre>(.*?)</pre>', (out/f'{m}.html').read_text(), re.S) for m in MODULES}
    quoted = [f'{m}: {html_lib.unescape(re.sub("<[^>]+>", "", p))[:80]}' for m, ps in pre.items() for p in ps
              if re.search(r'^def |^class ', re.sub('<[^>]+>', '', p), re.M) and re.search(r'#[^\n]*`', re.sub('<[^>]+>', '', p))]
    assert not quoted, quoted[:5]
    text = lambda m: html_lib.unescape(re.sub('<[^>]+>', '', (out/f'{m}.html').read_text()))
    assert 'class MetaDataLoaders(' in text('data') and 'def MetaDataLoaders(' not in text('data')    # a class reads as one
    # classes that `fastai_meta.all` does not export read as classes too
    assert all(f'class {c}(' in text(m) and f'def {c}(' not in text(m)
               for m,c in (('learner', 'ScaledLoss'), ('speed', 'FastTraining')))
    assert 'def meta_cnn_learner(' in text('learner')
    # a class nbdev can only write as `(*args, **kwargs)` reads its fields, or else its bases
    vague = [m for m in MODULES if re.search(r'class \w+\(\s*\*args, \*\*kwargs\s*\)', text(m))]
    assert not vague, vague
    assert 'class Faithfulness(hot: float, random: float, frac: float = 0.1)' in text('explain')
    assert 'class CLIError(Exception)' in text('commands')
