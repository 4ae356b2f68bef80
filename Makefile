# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install check test test-all test-gpu demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU wheel of torch; a plain `torch` requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,flows,diffusers]'
	touch $(STAMP)

install: $(STAMP)

# Static checks (docs/development.md): ruff's lint and format check on the code, the tests, the benchmarks and the
# examples; mypy on the package.
# The dev extra that $(STAMP) installs brings both; settings are in pyproject.toml.
check: $(STAMP)
	$(PY) -m ruff check src tests bench examples
	$(PY) -m ruff format --check src tests bench examples
	$(PY) -m mypy

# One pytest worker per core (pytest-xdist), each test file in one worker so that its module fixtures are built
# once; one thread per worker, since the workers already fill the cores.
PARALLEL := -n auto --dist loadfile

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -m "not slow" $(PARALLEL) tests

# The tests marked `gpu`, all in tests/test_gpu.py (which needs no optional extra), skipped with the
# reason where no CUDA GPU is visible; bench/gpu_check.sh runs this.
test-gpu: $(STAMP)
	$(PY) -m pytest -q -m gpu -rs tests/test_gpu.py $(PYTEST_EXTRA)

test-all: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q $(PARALLEL) tests

demo: $(STAMP)
	$(VENV)/bin/kuramoto-diffusion demo --out runs/demo

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
