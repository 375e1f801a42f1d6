# Two entry points for a fresh machine: `make repro` runs the pipeline, `make test` runs the tests.
# `make help` lists every target.
# `make repro` runs independent stages side by side, one torch thread each, as many as there
# are cores (JOBS=N to choose; GPUS=0,1,2,3 runs one stage per GPU instead); `dvc repro`
# runs the same stages one at a time and writes the same outputs.
# Both create .venv and install the pinned requirements on first use; later calls reuse them.
VENV := .venv
# The interpreter .venv is made with (3.11 or later): make setup PYTHON=python3.12
PYTHON ?= python3
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
# Keep every tool's files inside the project and off the network.
export DVC_SITE_CACHE_DIR := $(CURDIR)/.cache/dvc
export DVC_GLOBAL_CONFIG_DIR := $(CURDIR)/.cache/dvc-global
export DVC_NO_ANALYTICS := 1
export MPLCONFIGDIR := $(CURDIR)/.cache/matplotlib
export YOLO_CONFIG_DIR := $(CURDIR)/.cache/ultralytics

JOBS ?=

.PHONY: help setup git-identity repro docs-numbers bench gpu-bench paper-smoke test test-fast lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

setup: $(VENV)/.installed git-identity ## create .venv and install the pinned requirements (once)

# `dvc exp run` commits to git (a stash of the workspace, the experiment's commit), which
# needs a user name and email. A machine where git has none (a new server or container)
# gets a repository-local one, said on stdout; one already configured anywhere is kept.
GIT_NAME := cxrstn
GIT_EMAIL := cxrstn@localhost
git-identity: ## give this repository a git user name and email if git has none (dvc exp run needs one)
	@if git -C "$(CURDIR)" rev-parse --git-dir >/dev/null 2>&1; then \
	  set=""; \
	  if ! git -C "$(CURDIR)" config user.name >/dev/null; then \
	    git -C "$(CURDIR)" config user.name "$(GIT_NAME)" && set="user.name '$(GIT_NAME)'"; fi; \
	  if ! git -C "$(CURDIR)" config user.email >/dev/null; then \
	    git -C "$(CURDIR)" config user.email "$(GIT_EMAIL)" && set="$${set:+$$set, }user.email '$(GIT_EMAIL)'"; fi; \
	  if [ -n "$$set" ]; then \
	    echo "git had no user name/email, which dvc exp run needs: set $$set for this repository only (yours: git config user.name NAME; git config user.email EMAIL)"; fi; \
	fi

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

repro: setup ## run the pipeline on every core (JOBS=N stages at once, or GPUS=0,1,...)
	python -m cxrstn.parallel $(if $(JOBS),--jobs $(JOBS)) $(if $(GPUS),--gpus $(GPUS))

# After a default run (dvc repro / make repro): the README's and docs/results.md's Table II,
# verdict and per-run blocks, the README figure and the report's screenshot, all from
# reports/ (cxrstn/docnumbers.py; tests/test_numbers.py checks them against the reports).
docs-numbers: setup ## refill the docs' numbers and figures from reports/ (after a default run)
	python -m cxrstn.docnumbers

# Ratios of the data path and training speeds on this machine (a few minutes; see docs/performance.md).
bench: setup ## measure the data path and training speeds (a few minutes)
	python bench/bench.py

gpu-bench: setup ## measure the data path and training speeds (a few minutes)
	bench/gpu.sh

# The paper's whole profile end to end on a tiny full-size phantom, on the CPU (see docs/method.md).
paper-smoke: setup ## run the paper profile end to end on a tiny phantom (CPU, ~35 min)
	python bench/paper_smoke.py

lint: setup ## ruff: lint and format check
	ruff check .
	ruff format --check .

# The tests run first and lint after them, so that a formatting nit never hides a test
# result; the target fails if either failed.
test: setup ## the whole test suite, then lint (14 min on 2 cores, fresh clone of 82a6651, 2026-12-07)
	@status=0; pytest || status=1; $(MAKE) --no-print-directory lint || status=1; exit $$status

test-fast: setup ## the tests without the end-to-end runs and real training (pytest -m "not slow")
	pytest -m "not slow"

# Tool caches and bytecode only: DVC outputs (data/, models/, reports/) and .venv stay.
clean: ## remove tool caches and bytecode (not .venv, not the pipeline's outputs)
	rm -rf .pytest_cache .ruff_cache dvc_plots build .cache/parallel *.egg-info
	find . -name __pycache__ -type d -not -path './.venv/*' -prune -exec rm -rf {} +
