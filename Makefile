# gmmmem: build the book and run the tests in a local virtualenv (.venv).
#   make book   build the book into _build/html (GMMMEM_SCALE defaults to `default`)
#   make test   unit tests + every chapter via nbval (GMMMEM_SCALE defaults to `ci`)
#   make test-book    open the built book in headless Chromium with networking off (needs chromium)
#   make screenshots  a PNG of every built page, opened the same way, in _build/screenshots

SHELL  := /bin/bash
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Extra pytest arguments for `make test`, e.g. PYTEST_ARGS="-k losses" or "--durations=20".
PYTEST_ARGS ?=

# OpenMP's default (active) wait policy is kept: measured on 2 cores, OMP_WAIT_POLICY=PASSIVE
# made a training step 1.7x slower (benchmarks/train.py) and the unit tests 1.4x slower.

.PHONY: install test book test-book screenshots clean

install: $(STAMP)

# Reinstall only when the pins or the package metadata change.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	$(PY) -m pip install --no-deps -e .
	touch $@

test: install
	GMMMEM_SCALE=$${GMMMEM_SCALE:-ci} $(PY) -m pytest $(PYTEST_ARGS)

book: install
	GMMMEM_SCALE=$${GMMMEM_SCALE:-default} $(VENV)/bin/jupyter-book build -n -W --keep-going .

test-book: install
	$(PY) -m pytest -p no:cacheprovider tests/test_book_offline.py

screenshots: install
	$(PY) tests/browser.py

clean:
	rm -rf _build .pytest_cache .jupyter_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +
