# Two commands: `make demo` (run every notebook on the demo data) and `make test` (tests + notebook smoke runs).
# `make demo DEMO=quick`: every notebook with its own defaults (short runs, ~20 min on 2 cores) into runs/quick.
# Both create .venv on first use and install the project into it. Workshops: `make lab` (set up and open
# JupyterLab), `make check` (is this laptop ready?), `make pack` / `make unpack ARCHIVE=...` (precomputed runs);
# docs/workshop.md. `make book` (RUNS=runs/smoke): the executed notebooks and docs/ as a static site, runs/book/<name>/.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch first, pinned (TORCH_PIN). Without an NVIDIA GPU (no working `nvidia-smi`) from PyTorch's CPU index
# (TORCH_INDEX), so a laptop does not download gigabytes of CUDA libraries; with one, PyPI's CUDA build. When
# the CPU index cannot be reached (offline, firewall), pip's configured indexes and local wheels are used, as on
# our CI machines. Override e.g. TORCH_INDEX= (plain PyPI), or the whole pip argument list:
# TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128". A torch already in .venv is kept.
TORCH_PIN ?= torch==2.13.0
HAVE_GPU := $(shell nvidia-smi -L 2>/dev/null | grep -q '^GPU' && echo yes)
TORCH_INDEX ?= $(if $(HAVE_GPU),,https://download.pytorch.org/whl/cpu)
TORCH_SPEC ?=
EXAMPLES_MIRROR ?= $(abspath ../shared/data/totalsegmentator_examples)
# the example scans from a USB stick or a LAN folder: make lab SWINUNETR_EXAMPLES_MIRROR=/media/usb/totalsegmentator_examples
# (made absolute here, so that kernels running in notebooks/ find it too)
SWINUNETR_EXAMPLES_MIRROR ?= $(if $(wildcard $(EXAMPLES_MIRROR)),$(EXAMPLES_MIRROR),)
override SWINUNETR_EXAMPLES_MIRROR := $(abspath $(SWINUNETR_EXAMPLES_MIRROR))
export SWINUNETR_EXAMPLES_MIRROR
# make lab: LAB_OPEN=0 starts JupyterLab without opening a browser; LAB_PORT its port; LAB_ARGS more options
LAB_PORT ?= 8888
LAB_OPEN ?= 1
LAB_ARGS ?=
# make pack: the runs folder `make demo` wrote, and the archive (default <PACK_RUNS>.precomputed.tar.gz)
PACK_RUNS ?= runs/demo
PACK_OUT ?=
ARCHIVE ?=
PYTEST_ARGS ?=
# make test: pytest in this many parallel processes (pytest-xdist; each test process then runs one thread);
# PYTEST_WORKERS=0 runs them in this process, as plain pytest
PYTEST_WORKERS ?= 2
PYTEST_PARALLEL := $(if $(filter 0,$(PYTEST_WORKERS)),,-n $(PYTEST_WORKERS))
# make demo: the demo profile (ci/params/demo, ~1.5 h on 2 CPU cores) or DEMO=quick (ci/params/quick: no parameter
# files, every notebook's defaults, ~20 min); the runner prints its time estimate first and a progress line
DEMO ?= demo
# make book: the runs folder whose executed notebooks the book shows (runs/demo, runs/smoke, an unpacked archive:
# runs/notebooks/precomputed); the site goes to runs/book/<its name>/ (open index.html, or copy it to a static host)
RUNS ?= runs/demo

.PHONY: demo test env lint pytest smoke browser notebooks clean lab check pack unpack experiment \
	experiment-pretraining experiment-progressive book gpu-wheels gpu-venv gpu-dry-run

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@$(PY) -c "import torch" 2>/dev/null || { spec="$(TORCH_SPEC)"; \
	  if [ -z "$$spec" ]; then spec="$(TORCH_PIN)"; \
	    if [ -n "$(TORCH_INDEX)" ]; then \
	      if $(PY) -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=20)' "$(TORCH_INDEX)/torch/" 2>/dev/null; \
	      then spec="$$spec --index-url $(TORCH_INDEX)"; \
	      else echo "$(TORCH_INDEX) cannot be reached: $(TORCH_PIN) from pip's configured indexes"; fi; fi; fi; \
	  echo "$(PY) -m pip install --quiet $$spec"; $(PY) -m pip install --quiet $$spec; }
	$(PY) -m pip install --quiet -e ".[test]"
	@touch $@

env: $(VENV)/.installed

notebooks: env  ## regenerate the .ipynb files and the exercise notebooks from the reviewed .py sources
	$(VENV)/bin/jupytext --to ipynb --update notebooks/[0-9][0-9]_*.py  # (--sync would also add a header to the .py)
	$(PY) -m swinunetr_lib.notebooks.exercises generate  # the student versions in notebooks/exercises/
	$(PY) -m swinunetr_lib.notebooks.talk_time --write  # the workshop guide's talk-time tables

demo: env
	@case "$(DEMO)" in demo|quick) ;; *) echo "make demo: DEMO=$(DEMO); expected demo or quick" >&2; exit 2;; esac
	$(PY) -m swinunetr_lib.notebooks run --params ci/params/$(DEMO) --output runs/$(DEMO)
	$(PY) -m swinunetr_lib.notebooks.book --runs runs/$(DEMO)

lint: env  ## ruff with the settings of pyproject.toml ([tool.ruff]); `make test` runs it first
	$(PY) -m ruff check .

pytest: env
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

smoke: env
	$(PY) -m swinunetr_lib.notebooks run --params ci/params/smoke --output runs/smoke --no-progress --no-estimate

browser: env
	bash ci/install_browser.sh
	$(PY) -m pytest -q -ra -m browser tests/test_browser.py

test: env  ## ruff, then the tests beside the notebooks' smoke run and the book, then the tests that read them
	$(PY) -m ruff check .
	PY=$(PY) PYTEST_PARALLEL="$(PYTEST_PARALLEL)" PYTEST_ARGS="$(PYTEST_ARGS)" bash ci/make_test.sh

book: env  ## the book: RUNS's executed notebooks (default runs/demo) and docs/ as a static site in runs/book/<name>/
	$(PY) -m swinunetr_lib.notebooks.book --runs $(RUNS)

lab: env  ## workshop: set up (examples, demo cohort) and open JupyterLab on notebooks/
	$(PY) -m swinunetr_lib.notebooks.workshop setup
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=notebooks --port=$(LAB_PORT) $(if $(filter 0,$(LAB_OPEN)),--no-browser) \
		$(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

check:  ## workshop: one line per check, OK or FAIL with its fix; under a minute
	@test -x $(PY) || { echo "FAIL  environment: no $(VENV)  -> fix: run make lab"; exit 1; }
	@$(PY) -m swinunetr_lib.notebooks.workshop check

pack: env  ## instructor: pack runs/demo (after make demo) into one archive with checksums
	$(PY) -m swinunetr_lib.notebooks.precomputed pack --runs $(PACK_RUNS) $(if $(PACK_OUT),--out $(PACK_OUT))

unpack: env  ## attendee: verify and unpack the instructor's archive into runs/notebooks/precomputed
	@test -n "$(ARCHIVE)" || { echo "make unpack: give the archive, e.g. make unpack ARCHIVE=/media/usb/demo.precomputed.tar.gz" >&2; exit 2; }
	$(PY) -m swinunetr_lib.notebooks.precomputed unpack "$(ARCHIVE)"

EXP_COHORT := runs/exp/cohort/pretrain.json
$(EXP_COHORT): | env  # 7 labeled phantoms at 6 mm (4 training, 3 held out) and 97 unlabeled ones
	$(PY) -m swinunetr_lib.data demo-cohort --out-dir runs/exp/cohort --n-phantoms 7 --n-validation 3 \
		--n-unlabeled 97 --spacing "[6,6,6]" --n-msd 2 --include-real false

EXP_SSL32 := runs/exp/ssl_a/model_swinvit.pt
$(EXP_SSL32): | env $(EXP_COHORT)  # written at its end; the paper's decoder at 32^3, 16 views per step: 38 min on 2 CPU cores (its metrics.csv)
	$(PY) -m swinunetr_lib.pretrain --data-manifest $(EXP_COHORT) \
		--roi-size 32 --feature-size 12 --batch-size 4 --num-samples 2 --max-steps 300 --warmup-steps 20 --lr 1e-3 \
		--run-dir runs/exp/ssl_a

experiment: env $(EXP_SSL32)  ## the label-efficiency experiment with headroom (issue #14) into runs/exp: ~100 min on 2 CPU cores
	$(PY) -m swinunetr_lib.experiments.probe --checkpoint runs/exp/ssl_a/checkpoints/last.pt \
		--manifest runs/exp/cohort/finetune.json --per-organ 4 --csv runs/exp/label_efficiency/probe.csv
	$(PY) -m swinunetr_lib.experiments.label_efficiency --params ci/params/label_efficiency/headroom_03_finetune_btcv.yml \
		--fractions "[0.25, 0.5, 1.0]" --inits "[scratch, ssl]" --seeds "[0, 1, 2]" \
		--pretrained $(EXP_SSL32) --output runs/exp/label_efficiency

experiment-pretraining: env $(EXP_COHORT)  ## notebook 02's recorded inpainting run (issue #14) into runs/exp/ssl_unet64: ~80 min + a 22-min probe on 2 CPU cores
	test -f runs/exp/ssl_unet64/model_swinvit.pt || $(PY) -m swinunetr_lib.pretrain --data-manifest $(EXP_COHORT) \
		--roi-size 64 --feature-size 12 --batch-size 2 --num-samples 1 --max-steps 450 --warmup-steps 20 --lr 1e-3 \
		--decoder unet --checkpoint-every 25 --run-dir runs/exp/ssl_unet64
	$(PY) -m swinunetr_lib.experiments.probe --checkpoint runs/exp/ssl_unet64/checkpoints/last.pt \
		--manifest runs/exp/cohort/finetune.json --size 64 --per-organ 2 --inpainting-size 64 \
		--figure runs/exp/ssl_unet64/reconstructions.png --csv runs/exp/ssl_unet64/probe.csv

experiment-progressive: env $(EXP_SSL32)  ## notebook 02's third recorded run (issue #14): the 32^3 run continued at 64^3 with Swin UNETR's decoder into runs/exp/ssl_staged, ~27 + 26 min + a 25-min probe on 2 CPU cores
	test -f runs/exp/ssl_staged/model_swinvit.pt || $(PY) -m swinunetr_lib.pretrain --data-manifest $(EXP_COHORT) \
		--roi-size 64 --feature-size 12 --batch-size 2 --num-samples 1 --max-steps 150 --warmup-steps 20 --lr 1e-3 \
		--decoder unet --checkpoint-every 25 --init-from runs/exp/ssl_a/checkpoints/last.pt --run-dir runs/exp/ssl_staged
	$(PY) -m swinunetr_lib.experiments.probe --checkpoint runs/exp/ssl_staged/checkpoints/last.pt \
		--manifest runs/exp/cohort/finetune.json --size 64 --per-organ 2 --inpainting-size 64 \
		--figure runs/exp/ssl_staged/reconstructions.png --csv runs/exp/ssl_staged/probe.csv

clean:
	rm -rf runs

# The GPU checks (README, "GPU checks"; docs/gpu_checks.md). The lent GPU machine's image has python3 3.12 with
# torch (2.11 + CUDA) and numpy, pandas, scipy, scikit-image, matplotlib, pyyaml, tqdm, einops, pytest, tensorboard,
# but not MONAI, nibabel or pydicom, and no network: `make gpu-wheels` puts exactly those three pure-Python wheels in
# .whl/ (ignored by git; carry it: `run(..., carry=[".whl"])`), and the scripts install them next to its torch.
GPU_WHEELS ?= monai==1.6.1 nibabel==5.4.2 pydicom==3.0.2
GPU_IMAGE_PACKAGES ?= numpy pandas scipy scikit-image matplotlib pyyaml tqdm einops pytest tensorboard
GPU_VENV ?= .gpu-venv
gpu-wheels:  ## the wheels the GPU image lacks, for Python 3.12 on x86-64, into .whl/
	rm -rf .whl && mkdir -p .whl
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)
	@ls .whl

$(GPU_VENV)/.installed:  # what the GPU image holds (the CPU build of torch here), nothing of the project's own
	@test -x $(GPU_VENV)/bin/python || $(PYTHON) -m venv $(GPU_VENV)
	@spec="$(TORCH_PIN)"; if [ -n "$(TORCH_INDEX)" ] && $(GPU_VENV)/bin/python -c 'import sys, urllib.request; \
	  urllib.request.urlopen(sys.argv[1], timeout=20)' "$(TORCH_INDEX)/torch/" 2>/dev/null; then \
	  spec="$$spec --index-url $(TORCH_INDEX)"; fi; echo "pip install $$spec"; $(GPU_VENV)/bin/python -m pip install --quiet $$spec
	$(GPU_VENV)/bin/python -m pip install --quiet $(GPU_IMAGE_PACKAGES)
	@touch $@

gpu-venv: $(GPU_VENV)/.installed  ## a virtualenv holding only what the GPU image holds

gpu-dry-run: gpu-venv  ## both GPU scripts on this CPU in that virtualenv, with .whl/ (make gpu-wheels): a few minutes
	@test -n "$$(ls .whl/*.whl 2>/dev/null)" || { echo "make gpu-dry-run: no .whl/: run make gpu-wheels first" >&2; exit 2; }
	rm -rf runs/gpu_dry
	time DRY_RUN=1 TIME_LIMITS=off PYTHON=$(GPU_VENV)/bin/python bash ci/gpu_bench.sh runs/gpu_dry/bench
	time DRY_RUN=1 TIME_LIMITS=off PYTHON=$(GPU_VENV)/bin/python bash ci/gpu_plan.sh runs/gpu_dry/plan
