"Sphinx configuration of the docs site; the pages come from `docs/build.py` (run `make docs`)."
import fastai_meta

project = 'fastai_meta'
author = 'fastai_meta developers'
copyright = '2026, the fastai_meta developers. Apache-2.0'
release = version = fastai_meta.__version__
extensions = ['myst_nb', 'sphinx-mathjax-offline']   # MathJax served from the site itself: it renders offline
nb_execution_mode = 'off'                  # notebooks are rendered with their saved outputs
nb_render_markdown_format = 'myst'
myst_enable_extensions = ['dollarmath', 'html_image']
myst_all_links_external = True             # links are already site-relative (docs/build.py)
myst_heading_anchors = 3
html_theme = 'furo'
html_title = f'fastai_meta {version}'
html_static_path = ['_static']
html_css_files = ['custom.css']            # wide tables scroll instead of being cut off
REPO = 'https://github.com/fastai-meta/fastai_meta'
html_theme_options = {'footer_icons': [{'name': 'GitHub', 'url': REPO, 'class': '',
                                        'html': f'<a href="{REPO}">{REPO.removeprefix("https://")}</a>'}]}
html_favicon = '_static/favicon.svg'
html_show_sourcelink = False
html_copy_source = False
exclude_patterns = ['**/.ipynb_checkpoints']
suppress_warnings = ['myst.header', 'mystnb.unknown_mime_type', 'misc.highlighting_failure']
