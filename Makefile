# Two entry points (see README): `make demo` (set up + the whole pipeline in miniature on CPU) and
# `make test` (set up + the default test suite). Both create .venv/ on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: venv demo test test-slow test-latest lock fixtures analysis clean

# The tested environment: every package at the version in constraints.txt (see its header).
$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned (constraints.txt): unpinned, the later installs would pull a newer CUDA build
	$(BIN)/python -m pip install -q -c constraints.txt torch
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -q -c constraints.txt -e '.[test,notebooks]'
	touch $(STAMP)

# The newest releases within pyproject.toml's bounds (torch stays at the pin), in their own venv.
LATEST := .venv-latest
$(LATEST)/.installed-stamp: pyproject.toml
	$(PY) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	$(LATEST)/bin/python -m pip install -q torch==$(TORCH)
	DS_BUILD_OPS=0 $(LATEST)/bin/python -m pip install -q --upgrade -e '.[test,notebooks]' torch==$(TORCH)
	touch $@
TORCH := $(shell sed -n 's/^torch==//p' constraints.txt)

test-latest: $(LATEST)/.installed-stamp
	$(LATEST)/bin/python -m pytest -q

# Rewrite constraints.txt from the newest releases (run `make test-latest` first; commit both together).
lock: $(LATEST)/.installed-stamp
	{ sed -n '/^#/p' constraints.txt; $(LATEST)/bin/python -m pip freeze --exclude-editable \
	  | grep -v '^repro' | sed 's/^torch==.*/torch==$(TORCH)/'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

venv: $(STAMP)

demo: venv
	$(BIN)/python -m repro.train

test: venv
	$(BIN)/python -m pytest -q

test-slow: venv
	$(BIN)/python -m pytest -q -m slow

fixtures: venv
	$(BIN)/python -m repro.fixtures.generate

# Execute the analysis notebooks headless on ./runs; they write paper_figures/ (executed copies: build/)
analysis: venv
	$(BIN)/jupyter nbconvert --to notebook --execute analysis/*.ipynb --output-dir build/notebooks

clean:
	rm -rf $(VENV) $(LATEST) runs build *.egg-info .pytest_cache
