# Every target depends on setup, so each works on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEVICE ?= host
BACKEND ?=
SERIAL ?=
DTYPE  ?=
LUT    ?= luts/$(DEVICE).db
STAMP  := $(VENV)/.installed-stamp
NETADAPT := $(BIN)/netadapt

.PHONY: setup lut report adapt fashion-mnist devices test bench lint clean

setup: $(STAMP)

# torch first, pinned, so pip takes the CPU build on disk instead of a CUDA one.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

lut: setup
	$(NETADAPT) lut --device $(DEVICE) $(if $(BACKEND),--backend $(BACKEND)) $(if $(SERIAL),--serial $(SERIAL)) $(if $(DTYPE),--dtype $(DTYPE)) --db $(LUT)

# Builds (or reuses) the device's LUT, then validates it against whole networks.
report: setup
	$(NETADAPT) lut --device $(DEVICE) $(if $(BACKEND),--backend $(BACKEND)) $(if $(SERIAL),--serial $(SERIAL)) $(if $(DTYPE),--dtype $(DTYPE)) --db $(LUT)
	$(NETADAPT) report --lut $(LUT) --device $(DEVICE) $(if $(BACKEND),--backend $(BACKEND)) $(if $(SERIAL),--serial $(SERIAL)) $(if $(COMPARE),--compare $(COMPARE))

devices: setup
	$(NETADAPT) devices

# NetAdapt demo: MobileNetV1 on Fashion-MNIST (Debian's dataset-fashion-mnist, 28 px gray
# upscaled to 32 px, 3 channels) shrunk to 50% of its measured latency on DEVICE, against
# width multipliers with the same training budget, verified on the device. Sweeps the 32 px
# space into $(LUT) first (a derived version when the LUT exists; nothing to do when it is
# there); reruns resume. Training cost on 2 cores: ~124 s per epoch at width 1.0, ~54 s at x0.5.
ADAPT_RES ?= 32
# Sized for digits on 2 CPU cores (to be retuned for Fashion-MNIST); the CLI's defaults follow the paper more closely.
ADAPT_DEMO ?= --pretrain-epochs 10 --short-steps 10 --reduction 0.08 --decay 0.97 --long-epochs 8
adapt: setup fashion-mnist
	$(NETADAPT) lut --device $(DEVICE) $(if $(BACKEND),--backend $(BACKEND)) $(if $(SERIAL),--serial $(SERIAL)) --space mobilenet_v1 --resolution $(ADAPT_RES) --grid 32 --classes 10 --db $(LUT)
	$(NETADAPT) adapt --lut $(LUT) --model mobilenet_v1 --resolution $(ADAPT_RES) --budget 0.5 --measured-budget --data fashion-mnist $(ADAPT_DEMO) --compare-multipliers --multipliers 0.25,0.5,0.75 --name demo-$(DEVICE)-$(ADAPT_RES)-fashion-measured --resume

# The demo's data: installed with apt-get when root and missing; otherwise says how (and fails).
fashion-mnist:
	bash scripts/ensure-fashion-mnist

# The report's browser test needs Debian's chromium: installed here when root (else it skips).
test: setup
	bash scripts/ensure-chromium
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python -m benchmarks.run --out benchmarks/results.md

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
