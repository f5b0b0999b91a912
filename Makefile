# scdit developer tasks.  `make demo` and `make test` work from a fresh clone: the first call
# creates .venv and installs the CPU build of torch plus scdit (editable) with its dev extras.
#
# pip is used with the machine's own configuration (index, find-links, certificates); we only add
# the constraints file that pins the CPU build of torch (a bare `torch` pulls a multi-GB CUDA
# build). Override on the command line, e.g. `make venv PYTHON=python3.12`.

PYTHON      ?= python3
VENV        ?= .venv
CONSTRAINTS ?= requirements/constraints-cpu.txt
TORCH       ?= torch==2.13.0
PIP_ARGS    ?=
BENCH_ARGS  ?= --quick

PY    := $(VENV)/bin/python
PIP   := $(PY) -m pip
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.installed-docs

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1
export PIP_PROGRESS_BAR := off

.DEFAULT_GOAL := help
.PHONY: help venv test test-all demo lint format bench docs clean distclean

help:
	@echo "make venv      create $(VENV) and install scdit[dev] (CPU torch) - run by the others"
	@echo "make test      fast test suite (slow tests deselected)"
	@echo "make test-all  whole test suite, slow tests included"
	@echo "make demo      run the end-to-end demo (python -m scdit.demo)"
	@echo "make lint      ruff check"
	@echo "make docs      install the docs extra and build the site (docs/_build/html), warnings as errors"
	@echo "make bench     benchmark suites, quick mode (BENCH_ARGS=... for others; see benchmarks/README.md)"
	@echo "make clean     remove caches; make distclean also removes $(VENV)"

venv: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned to the CPU build, so that resolving scdit's `torch>=...` installs nothing more.
$(STAMP): pyproject.toml $(CONSTRAINTS) | $(PY)
	$(PIP) install $(PIP_ARGS) -c $(CONSTRAINTS) "$(TORCH)"
	$(PIP) install $(PIP_ARGS) -c $(CONSTRAINTS) -e '.[dev]'
	@touch $@

# One BLAS/OpenMP thread unless set: small arrays, and a shared 2-core machine oversubscribes.
test: venv
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m pytest -q

test-all: venv
	$(PY) -m pytest -q -m "slow or not slow"

demo: venv
	$(PY) -m scdit.demo

lint: venv
	$(PY) -m ruff check .

format: venv
	$(PY) -m ruff check --fix .

# The maintained suites through one runner, quick mode by default (a few minutes); the full
# mode takes hours on a CPU: `make bench BENCH_ARGS=` (all suites) or e.g.
# `make bench BENCH_ARGS="quality --settings norman_doubles --seeds 0 1 2"`.
bench: venv
	$(PY) benchmarks/run.py $(BENCH_ARGS)

# The documentation site (Sphinx, MyST-NB, numpydoc, sphinx-book-theme), built offline with
# warnings as errors. -E re-reads every page so that each warning is reported on every build; the
# concept pages' code runs on every build (their cache, keyed on the page's code only, would keep
# figures of an older scdit, so it is cleared); the tutorials are shown with their stored outputs
# and never run. API stubs are regenerated each time.
$(DOCS_STAMP): $(STAMP)
	$(PIP) install $(PIP_ARGS) -c $(CONSTRAINTS) -e '.[docs]'
	@touch $@

docs: $(DOCS_STAMP)
	rm -rf docs/api/generated docs/_build/.jupyter_cache
	$(PY) -m sphinx -E -W --keep-going -b html docs docs/_build/html
	@echo "docs: open docs/_build/html/index.html"

clean:
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info lightning_logs
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -print -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) docs/_build docs/api/generated docs/tutorials/*.ipynb
