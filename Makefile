# Two commands do everything on a fresh machine:  make train  (the main job)  and  make test  (the whole suite).
# Both create .venv and install on first use, and are idempotent.
#
# TORCH_SPEC picks the torch build, installed before the package so pip keeps it. The default pins the release whose CPU
# wheel ships with our CI machines; on a GPU machine install the CUDA build of your choice, e.g.
#   make install TORCH_SPEC="torch==2.13.0"    (PyPI's Linux wheels are CUDA builds)
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
ARGS ?=

.PHONY: install train test test-fast bench gpu-check lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

train: install  ## pre-train the tiny preset on the bundled real corpus (about 8 minutes on 2 CPU cores)
	$(PY) train.py $(ARGS)

test: install  ## the whole suite, slow tests included (what CI runs)
	$(PY) -m pytest -q $(ARGS)

test-fast: install  ## the default suite: about 3 minutes on 2 cores
	$(PY) -m pytest -q -m "not slow" $(ARGS)

bench: install  ## the benchmark suite: one table + outputs/bench/results.json (about 20 minutes on 2 CPU cores; ARGS=--quick about 8)
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[bench]"
	$(PY) -m bench $(ARGS)

gpu-check: install  ## the one script for a lent GPU (8 minutes on an H100/H200): outputs/gpu_check/results.{json,md}; CPU: short
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[bench]"
	$(PY) -m bench.gpu_check $(ARGS)

lint: install
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
