# Two entry points for a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Data shipped beside the project (no network needed); override with TAMEGRAD_DATA=...
export TAMEGRAD_DATA ?= $(abspath ../shared/data)

.PHONY: setup test lint demo bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $@

test: setup
	$(PY) -m pytest -q

lint: setup
	$(PY) -m ruff check src tests benchmarks scripts
	$(PY) -m mypy

demo: setup
	$(VENV)/bin/tamegrad demo --out runs/demo

bench: setup
	$(PY) benchmarks/optimizer_step.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
