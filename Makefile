# Two commands do all the set-up on a fresh machine (Python 3.10+):
#   make demo   trains image-only and image+metadata models on synthetic data and prints both scores
#   make test   runs the test suite (pytest) and the notebooks (nbdev-test)
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python

.PHONY: demo test export clean-nbs docs

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/fastai-meta demo

test: $(VENV)/.installed
	$(PY) -m pytest -q -p no:cacheprovider
	$(VENV)/bin/nbdev-test --n-workers 2

export: $(VENV)/.installed
	$(VENV)/bin/nbdev-export

clean-nbs: $(VENV)/.installed
	$(VENV)/bin/nbdev-clean

docs: $(VENV)/.installed
	$(PY) -c "from nbdev.serve import proc_nbs; proc_nbs()"
