# tuckerlab: one command for the main job, one for the tests.
#   make book                      build the book from the notebooks' stored outputs (no execution)
#   make test                      pytest + nbval over the notebooks + stored-output and book checks (CI)
#   make reproduce                 re-run every chapter in quick mode, storing outputs and times
#   make reproduce CHAPTER=05_tt_lc   re-run one chapter
#   make networks                  train the networks several chapters share, into the run cache
#   make book EXECUTE=quick        reproduce, then build
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# PyTorch's index of CPU-only wheels: used on machines without an NVIDIA GPU,
# when it can be reached (the default index's torch brings CUDA libraries).
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
CHAPTER ?=
EXECUTE ?=
MODE ?= quick

.PHONY: install test test-package test-notebooks book book-check reproduce networks demo bench clean

install: $(STAMP)

# Re-install only when the package metadata or the pins change.
$(STAMP): pyproject.toml requirements/dev-constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if command -v nvidia-smi >/dev/null 2>&1; then \
	  echo "install: NVIDIA GPU found: the default torch build (with CUDA)"; \
	elif $(BIN)/python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=10)" \
	    "$(TORCH_CPU_INDEX)/torch/" >/dev/null 2>&1; then \
	  echo "install: no NVIDIA GPU: the CPU build of torch from $(TORCH_CPU_INDEX)"; \
	  $(BIN)/python -m pip install -q -c requirements/dev-constraints.txt torch torchvision \
	    --index-url "$(TORCH_CPU_INDEX)"; \
	else \
	  echo "install: no NVIDIA GPU, but $(TORCH_CPU_INDEX) cannot be reached:" \
	       "pip installs the default torch build, with its CUDA libraries (several GB)"; \
	fi
	$(BIN)/python -m pip install -q -c requirements/dev-constraints.txt -e ".[test,book]"
	touch $(STAMP)

test: install test-package test-notebooks book-check

test-package: install
	$(BIN)/python -m pytest -q tests

test-notebooks: install
	bash scripts/test_notebooks.sh

book: install $(if $(EXECUTE),reproduce)
	bash scripts/build_book.sh

# Kept for CI and habits: the book build runs nothing either way.
book-check: book

reproduce: install
	$(BIN)/python scripts/reproduce.py --mode $(if $(EXECUTE),$(EXECUTE),$(MODE)) \
	  $(CHAPTER) $(if $(ALLOW_DIRTY),--allow-dirty)

networks: install
	$(BIN)/python -m tuckerlab.runs --mode $(MODE)

demo: install
	$(BIN)/tuckerlab demo

bench: install
	$(BIN)/python bench/bench_decompose.py
	$(BIN)/python bench/bench_train.py

clean:
	rm -rf _build .pytest_cache
