# The two set-up commands of the README:
#   make book   install what is missing, execute every page, build the HTML
#   make test   install what is missing, lint, run the tests and doctests,
#               build the smoke book once and check it in headless Chromium
#
#   make runs   train the profile's runs into the store (NPROC > 1: data
#               parallel under torchrun)
#
# Knobs: PROFILE (smoke, cpu, paper), PYTHON (an interpreter >= 3.10),
# VENV (where the environment goes), HESSLIB_DATA (the data folder),
# NPROC (processes, one per GPU, that train the runs; 1: the pages train).

PYTHON ?= python3
VENV ?= .venv
PROFILE ?= cpu
NPROC ?= 1
export HESSLIB_STORE ?= $(abspath .store)
BIN := $(VENV)/bin

# The data folder: $HESSLIB_DATA if set, else ../shared/data when it exists.
ifeq ($(origin HESSLIB_DATA), undefined)
  ifneq ($(wildcard ../shared/data/mnist.npz),)
    export HESSLIB_DATA := $(abspath ../shared/data)
  endif
endif

.PHONY: book pages html runs test lint lab data widgets clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[book,dev]'
	touch $@

data: $(BIN)/.installed
	$(BIN)/python scripts/fetch_data.py

# The widget manager and RequireJS, from the npm registry (needs npm), so
# that the HTML renders widgets offline; build_book.py fetches them too.
widgets:
	$(PYTHON) scripts/fetch_widgets.py

book: $(BIN)/.installed data widgets
	$(BIN)/python scripts/build_book.py --profile $(PROFILE) --nproc $(NPROC)

pages: $(BIN)/.installed data
	$(BIN)/python scripts/build_book.py --profile $(PROFILE) --no-html --nproc $(NPROC)

# The profile's plain runs into the store, data parallel on NPROC processes
# (GPUs); the pages then load them. torchrun's --standalone rendezvous picks
# a free port on this machine.
ifeq ($(NPROC),1)
  TRAIN_RUNS := $(BIN)/python
else
  TRAIN_RUNS := $(BIN)/torchrun --standalone --nproc_per_node=$(NPROC)
endif
runs: $(BIN)/.installed data
	$(TRAIN_RUNS) scripts/train_runs.py --profile $(PROFILE)

html: $(BIN)/.installed widgets
	$(BIN)/jupyter-book build book/

lint: $(BIN)/.installed
	$(BIN)/ruff check hesslib tests notebooks scripts $(wildcard benchmarks)

# pytest builds the smoke book once (tests/conftest.py) for the page tests
# and the browser test; screenshots of its pages land in _build/screenshots/.
test: $(BIN)/.installed data lint widgets
	$(BIN)/python -m pytest

lab: $(BIN)/.installed
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf _build book/pages book/_widgets
