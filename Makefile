# Two entry points, each idempotent on a fresh Debian/Ubuntu machine with Python 3.11+:
#   make run   -- set up and run the main job
#   make test  -- set up and run the test suite
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: run test lint bench setup system-deps

$(STAMP): pyproject.toml
	@$(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "pumpwatch needs Python >= 3.11")'
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || { echo "python3 -m venv failed: install the python3-venv package"; exit 1; }
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)

system-deps:
	@bash scripts/system-deps.sh

run: setup
	$(BIN)/pumpwatch selftest

test: setup system-deps
	$(BIN)/ruff check dsp simulator edge cloud pumpwatch tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check dsp simulator edge cloud pumpwatch tests bench
	$(BIN)/mypy
