# Two commands for a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# The demo tunes only kernels that have no committed records for this CPU, with this budget.
DEMO_TRIALS ?= 256

.PHONY: install demo test test-slow bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tvmcomp build --model minilm --target x86 --trials $(DEMO_TRIALS) -o out/minilm-fp32
	$(BIN)/tvmcomp bench out/minilm-fp32 --compare torch --json out/minilm-fp32/bench.json

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

bench: $(STAMP)
	$(BIN)/python bench/fp32.py

clean:
	rm -rf out .pytest_cache
