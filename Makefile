# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# torch==2.13.0 resolves to a local CPU build on these machines; an unpinned torch
# would pull a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: demo test test-all bench results results-quick lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e ".[tasks,dev,export]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/rnnkit demo

test: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow"

test-all: $(VENV)/.installed
	$(PY) -m pytest -q

bench: $(VENV)/.installed
	$(VENV)/bin/rnnkit bench

# every headline result of the README over seeds 0, 1, 2, two 1-thread runs at once (hours on 2 cores; stop and
# rerun to resume), then the table in docs/results.md; results-quick: one seed, a few steps, into results/quick/
results: $(VENV)/.installed
	$(PY) scripts/reproduce.py

results-quick: $(VENV)/.installed
	$(PY) scripts/reproduce.py --quick

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info
