# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN ?= runs/demo

.PHONY: install demo test test-fast lint format bench reproduce clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# Trains a small encoder and decoders for several layers on images embedded in scikit-image,
# on the CPU, then writes a report with reconstructions from each layer to $(RUN)/.
demo: install
	$(PY) -m upconv.cli.demo --out $(RUN)

test: install
	$(PY) -m pytest -q

# ruff, configured in pyproject.toml: `make format` rewrites, `make lint` (what CI runs first) only checks.
lint: install
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test-fast: install
	$(PY) -m pytest -q -m "not slow"

# The headline table end to end: encoder, decoders, depth evaluation and the plain-loop baseline
# (benchmarks/reproduce.py). PRESET=smoke (seconds), cpu (800 images, 13.5 min measured on two shared cores), medium
# (2,000 images, 37 min) or gpu (one GPU, sized for < 9 min; not yet run).
# With PY=python3 it runs in an environment that already has the dependencies (no virtual environment).
# ARGS passes more options, e.g. ARGS="--set root=/data/cifar10"; ARGS="--publish docs/measurements.md" also writes
# the table into that page's block reproduce-$(PRESET) (benchmarks/publish.py; checked by tests/test_measurements.py).
PRESET ?= smoke
ARGS ?=
reproduce: $(if $(filter $(VENV)/bin/python,$(PY)),install)
	$(PY) benchmarks/reproduce.py --preset $(PRESET) --out runs/reproduce-$(PRESET) --overwrite $(ARGS)

bench: install
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf runs lightning_logs .pytest_cache
