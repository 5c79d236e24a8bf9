# Two commands on a fresh machine with python3 and make:
#   make run    set up .venv, train the default experiment
#   make test   set up .venv, run the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
WORKDIR ?= workdirs/default
CONFIG ?= configs/default.py

.PHONY: run test bench install clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,export]"
	touch $@

run: install
	$(PY) -m unetjax.main --config $(CONFIG) --workdir $(WORKDIR)

test: install
	$(PY) -m pytest -q -n 2 tests

bench: install
	$(PY) -m pip install --quiet -e ".[bench]"
	$(PY) scripts/benchmark.py

clean:
	rm -rf $(VENV) workdirs
