# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN ?= runs/demo

.PHONY: install demo test test-fast bench clean

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

test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf runs lightning_logs .pytest_cache
