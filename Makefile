# Two entry points (see README): `make demo` (set up + the whole pipeline in miniature on CPU) and
# `make test` (set up + the default test suite). Both create .venv/ on first use.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1

.PHONY: venv demo test test-slow fixtures analysis clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned (constraints.txt): unpinned, the later installs would pull a newer CUDA build
	$(BIN)/python -m pip install -q -c constraints.txt torch
	DS_BUILD_OPS=0 $(BIN)/python -m pip install -q -c constraints.txt -e '.[test,notebooks]'
	touch $(STAMP)

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
	rm -rf $(VENV) runs build *.egg-info .pytest_cache
