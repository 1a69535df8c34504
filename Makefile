# Two commands: `make demo` (run every notebook on the demo data) and `make test` (tests + notebook smoke runs).
# Both create .venv on first use and install the project into it.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first, pinned: here it resolves to the CPU wheel on disk; on a GPU machine the same pin takes
# PyPI's CUDA build. Override e.g. TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128".
TORCH_SPEC ?= torch==2.13.0
EXAMPLES_MIRROR ?= $(abspath ../shared/data/totalsegmentator_examples)
export SWINUNETR_EXAMPLES_MIRROR ?= $(if $(wildcard $(EXAMPLES_MIRROR)),$(EXAMPLES_MIRROR),)
PYTEST_ARGS ?=

.PHONY: demo test env pytest smoke browser notebooks clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet $(TORCH_SPEC)
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $@

env: $(VENV)/.installed

notebooks: env  ## regenerate the .ipynb files from the reviewed .py sources
	$(VENV)/bin/jupytext --to ipynb --update notebooks/[0-9][0-9]_*.py  # (--sync would also add a header to the .py)

demo: env
	$(PY) -m swinunetr_lib.notebooks run --params ci/params/demo --output runs/demo

pytest: env
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

smoke: env
	$(PY) -m swinunetr_lib.notebooks run --params ci/params/smoke --output runs/smoke --no-progress

browser: env
	bash ci/install_browser.sh
	$(PY) -m pytest -q -ra -m browser tests/test_browser.py

test: env
	$(PY) -m pytest -q -ra -m "not browser" $(PYTEST_ARGS)
	$(PY) -m swinunetr_lib.notebooks run --params ci/params/smoke --output runs/smoke --no-progress
	bash ci/install_browser.sh
	$(PY) -m pytest -q -ra -m browser $(PYTEST_ARGS)

clean:
	rm -rf runs
