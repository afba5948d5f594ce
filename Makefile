# The README's commands. `make setup` is idempotent; `make test` and `make demo` run it first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup test test-fast demo doctor

setup:
	$(PYTHON) -m musicpipe.install $(if $(FORCE),--force,)

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not integration"

demo: setup
	$(VENV)/bin/musicpipe demo

doctor: setup
	$(VENV)/bin/musicpipe doctor
