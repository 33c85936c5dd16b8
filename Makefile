# tuckerlab: one command for the main job, one for the tests.
#   make book   build the book, executing every notebook in quick mode
#   make test   pytest + nbval over the notebooks + book build check (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test test-package test-notebooks book book-check demo bench clean

install: $(STAMP)

# Re-install only when the package metadata or the pins change.
$(STAMP): pyproject.toml requirements/dev-constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements/dev-constraints.txt -e ".[test,book]"
	touch $(STAMP)

test: install test-package test-notebooks book-check

test-package: install
	$(BIN)/python -m pytest -q tests

test-notebooks: install
	bash scripts/test_notebooks.sh

book-check: install
	bash scripts/build_book.sh --check

book: install
	bash scripts/build_book.sh

demo: install
	$(BIN)/tuckerlab demo

bench: install
	$(BIN)/python bench/bench_decompose.py
	$(BIN)/python bench/bench_train.py

clean:
	rm -rf _build .pytest_cache
