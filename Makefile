# Two entry points for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN ?= runs/demo

.PHONY: install demo test test-fast lint format bench reproduce baseline clean

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

# pytest-xdist spreads the tests over the machine's cores (-n auto); add ARGS="-n 0" to run them in one process.
test: install
	$(PY) -m pytest -q -n auto $(ARGS)

# ruff, configured in pyproject.toml: `make format` rewrites, `make lint` (what CI runs first) only checks.
lint: install
	$(PY) -m ruff format --check .
	$(PY) -m ruff check .

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

test-fast: install
	$(PY) -m pytest -q -n auto -m "not slow" $(ARGS)

# The headline product end to end: the layer-information benchmark (upconv benchmark) on a shipped config,
# configs/benchmark/$(PRESET).yaml: PRESET=smoke (seconds, embedded photographs), cpu (three architectures trained
# on 1,000 CIFAR-10 images; measured in docs/measurements.md), gpu (all of CIFAR-10, one GPU; not yet run) or
# imagenet (pretrained ImageNet networks; give ARGS="--set root=/data/imagenet"). Finished units are reused:
# run it again after a kill. ARGS="--seeds 0,1,2 --publish docs/measurements.md --figures docs/images" runs
# it once per seed and writes the table with its spread across seeds into that page's block benchmark-$(PRESET) (benchmarks/publish.py; checked by tests/test_measurements.py).
# With PY=python3 it runs in an environment that already has the dependencies (no virtual environment).
PRESET ?= smoke
ARGS ?=
reproduce: $(if $(filter $(VENV)/bin/python,$(PY)),install)
	$(PY) benchmarks/layer_benchmark.py --config configs/benchmark/$(PRESET).yaml $(ARGS)

# The decoder recipe against a plain Dosovitskiy & Brox loop at equal budget (benchmarks/reproduce.py):
# PRESET=smoke, cpu (800 images), medium (2,000 images), short, long or gpu; their times are in docs/measurements.md.
baseline: $(if $(filter $(VENV)/bin/python,$(PY)),install)
	$(PY) benchmarks/reproduce.py --preset $(PRESET) --out runs/reproduce-$(PRESET) --overwrite $(ARGS)

bench: install
	$(PY) benchmarks/train_throughput.py

clean:
	rm -rf runs lightning_logs .pytest_cache
