# The README's commands. `make setup` is idempotent; `make test` and `make demo` run it first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup test test-fast demo pipeline doctor

setup:
	$(PYTHON) -m musicpipe.install $(if $(FORCE),--force,)

test: setup
	$(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not integration"

demo: setup
	$(VENV)/bin/musicpipe demo

# The notebook chain for a real dataset, e.g. `make pipeline DATASET=fma_small_mini` (or all_files, fma_large,
# finetune: fine-tune facebook/musicgen-small on your folder, params/finetune_small.yaml);
# PARAMS=<file.yaml> passes papermill parameters.
DATASET ?= fma_small_mini
pipeline: setup
	$(VENV)/bin/musicpipe pipeline --chain $(DATASET) $(if $(PARAMS),--params $(PARAMS),)

doctor: setup
	$(VENV)/bin/musicpipe doctor
