# Every target depends on setup, so each works on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEVICE ?= host
BACKEND ?=
SERIAL ?=
LUT    ?= luts/$(DEVICE).db
STAMP  := $(VENV)/.installed-stamp
NETADAPT := $(BIN)/netadapt

.PHONY: setup lut report adapt devices test bench lint clean

setup: $(STAMP)

# torch first, pinned, so pip takes the CPU build on disk instead of a CUDA one.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

lut: setup
	$(NETADAPT) lut --device $(DEVICE) $(if $(BACKEND),--backend $(BACKEND)) $(if $(SERIAL),--serial $(SERIAL)) --db $(LUT)

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python -m benchmarks.run --out benchmarks/results.md

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
