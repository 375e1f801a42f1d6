# Two entry points for a fresh machine: `make repro` runs the pipeline, `make test` runs the tests.
# `make repro-parallel` runs independent stages side by side (JOBS at a time, default: cores
# divided by the torch threads per stage;
# GPUS=0,1,2,3 runs one stage per GPU instead).
# Both create .venv and install the pinned requirements on first use; later calls reuse them.
VENV := .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# Keep every tool's files inside the project and off the network.
export DVC_SITE_CACHE_DIR := $(CURDIR)/.cache/dvc
export DVC_GLOBAL_CONFIG_DIR := $(CURDIR)/.cache/dvc-global
export DVC_NO_ANALYTICS := 1
export MPLCONFIGDIR := $(CURDIR)/.cache/matplotlib
export YOLO_CONFIG_DIR := $(CURDIR)/.cache/ultralytics

JOBS ?=

.PHONY: setup repro repro-parallel bench gpu-bench paper-smoke test lint
setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

repro: setup
	dvc repro

repro-parallel: setup
	python -m cxrstn.parallel $(if $(JOBS),--jobs $(JOBS)) $(if $(GPUS),--gpus $(GPUS))

# Ratios of the data path and training speeds on this machine (a few minutes; see README).
bench: setup
	python bench/bench.py

gpu-bench: setup
	bench/gpu.sh

# The paper's whole profile end to end on a tiny full-size phantom, on the CPU (see README).
paper-smoke: setup
	python bench/paper_smoke.py

lint: setup
	ruff check .
	ruff format --check .

test: lint
	pytest
