# Two commands do all the set-up on a fresh machine (Python 3.10+):
#   make demo   trains image-only and image+metadata models on synthetic data and prints both scores
#   make test   runs the test suite (pytest, the docs site in a headless browser included) and the notebooks (nbdev-test)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
# The HAM10000 and SIIM-ISIC tutorials find their data with `data_path`, under $FASTAI_META_DATA (here ../shared/data unless
# you set it), as does the home page's HAM10000 figure; where a data set is absent, nbdev-test skips the notebooks that need it.
export FASTAI_META_DATA ?= $(abspath ../shared/data)
HAM     = $(wildcard $(FASTAI_META_DATA)/ham10000/metadata.csv)
SIIM    = $(wildcard $(FASTAI_META_DATA)/siim-isic-2020-half/train.csv)
NB_SKIP = --skip-file-re '^([_.]$(if $(HAM),,|index|01_ham10000|05_several_images)$(if $(SIIM),,|06_ugly_duckling))'

.PHONY: demo test export clean-nbs docs nb-outputs

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/fastai-meta demo

test: $(VENV)/.installed
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --durations=15   # two test files at a time (pytest-xdist), one thread each
	OMP_NUM_THREADS=1 $(VENV)/bin/nbdev-test --n-workers 2 --timing $(NB_SKIP)   # two notebooks at a time, one thread each: no oversubscribed cores

export: $(VENV)/.installed
	$(VENV)/bin/nbdev-export

clean-nbs: $(VENV)/.installed
	$(VENV)/bin/nbdev-clean

# The docs site, in _site/: nbdev's processing, then Sphinx + MyST-NB (no quarto, no network).
docs: $(VENV)/.installed
	$(PY) docs/build.py --out _site

# Run every notebook and save its outputs (the docs show the saved outputs); run with ../shared beside the clone.
nb-outputs: $(VENV)/.installed
	$(VENV)/bin/nbdev-test --n-workers 2 --save $(NB_SKIP)
	$(PY) docs/build.py --clean-outputs   # fastprogress's console bars out, epoch tables as tables
	$(VENV)/bin/nbdev-clean
