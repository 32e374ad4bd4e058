# The two commands of the README: `make search` (the main job) and `make test`.
# torch==2.13.0 is installed first, so the project's torch range pulls no CUDA packages.
# setuptools>=77 reads pyproject's SPDX license; the packaging test builds a wheel with the venv's own.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.nasforge-installed

.PHONY: setup search test lint

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 'setuptools>=77'
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,plot,mnist1d]'
	touch $(STAMP)

# Where `nas` is: in $(BIN), not on the PATH.
HINT := @echo "nas is installed in $(VENV): run 'source $(BIN)/activate' or call $(BIN)/nas"

setup: $(STAMP)
	$(HINT)

search: $(STAMP)
	$(BIN)/nas search --config darts_digits
	$(HINT)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -n 2 --dist worksteal
