# Two commands for a fresh clone: `make demo` and `make test`.
# Without an active virtual environment they create .venv and install into it.
SHELL := /bin/bash
PYTHON ?= python3
ifdef VIRTUAL_ENV
  VENV := $(VIRTUAL_ENV)
else
  VENV := $(CURDIR)/.venv
endif
PY := $(VENV)/bin/python
STAMP := $(VENV)/.delight_plugin_installed

.PHONY: install demo test test-fast bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch is pinned only when we create the environment: torch==2.13.0 is the CPU wheel.
$(STAMP): $(PY) setup.py
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip show torch >/dev/null 2>&1 || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) scripts/demo.py

# Two pytest-xdist workers with one torch thread each keep both cores busy (most tests wait on a
# fairseq subprocess's imports) without oversubscribing them. JOBS=1 runs serially.
JOBS ?= 2
PYTEST := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q -p xdist -n $(JOBS) --durations=25

test: $(STAMP)
	$(PYTEST) tests

test-fast: $(STAMP)
	$(PYTEST) tests -m "not slow"

bench: $(STAMP)
	$(PY) -m pip install -q -e ".[bench]"
	$(PY) scripts/benchmark.py --size tiny --lengths 256 512

clean:
	rm -rf build *.egg-info .pytest_cache demo-output
