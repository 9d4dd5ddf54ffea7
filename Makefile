# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test test-fast lint base venv clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/contrastkit train configs/demo.yaml --out runs/demo

# The testbed's base model (benchmarks/recipes.py): fine-tuning arms start from it.
base: $(STAMP)
	$(PY) benchmarks/recipes.py --base

test: $(STAMP)
	$(PY) -m pytest -q

# The suite without the tests marked slow or distributed, on both cores (under a minute on 2 cores).
test-fast: $(STAMP)
	$(PY) -m pytest -q -n 2 -m "not slow and not distributed"

# ruff (lint + format check) and mypy, as CI runs them before the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf runs $(VENV)
