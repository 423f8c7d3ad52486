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

.PHONY: setup lut report adapt compare fashion-mnist devices doctor test test-fast bench lint clean

setup: $(STAMP)

# torch first, pinned, so pip takes the CPU build on disk instead of a CUDA one. The
# cluster extra (Ray, ~240 MB) is for adapt --ray only; installed here so that the test
# proving Ray gives the serial result runs (pip install . alone leaves Ray out).
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,cluster]'
	touch $(STAMP)

lut: setup
	$(NETADAPT) lut --device $(DEVICE) $(if $(BACKEND),--backend $(BACKEND)) $(if $(SERIAL),--serial $(SERIAL)) $(if $(DTYPE),--dtype $(DTYPE)) --lut $(LUT)

# Builds (or reuses) the device's LUT, then validates it against whole networks.
report: setup
	$(NETADAPT) lut --device $(DEVICE) $(if $(BACKEND),--backend $(BACKEND)) $(if $(SERIAL),--serial $(SERIAL)) $(if $(DTYPE),--dtype $(DTYPE)) --lut $(LUT)
	$(NETADAPT) report --lut $(LUT) --device $(DEVICE) $(if $(BACKEND),--backend $(BACKEND)) $(if $(SERIAL),--serial $(SERIAL)) $(if $(COMPARE),--compare $(COMPARE))

devices: setup
	$(NETADAPT) devices

# Can DEVICE sweep? Each check with its fix; exit 3 when it cannot (before `make lut`).
doctor: setup
	$(NETADAPT) doctor --device $(DEVICE) $(if $(BACKEND),--backend $(BACKEND)) $(if $(SERIAL),--serial $(SERIAL))

# NetAdapt demo: MobileNetV1 x0.5 on Fashion-MNIST (Debian's dataset-fashion-mnist, 28 px
# gray upscaled to 32 px, 3 channels; 1,000 training images per class) shrunk to 50% of
# its measured latency on DEVICE, against width multipliers trained with the same recipe,
# every network verified on the device as its exported .tflite. Sweeps the 32 px space into
# $(LUT) first (a derived version when the LUT exists; nothing to do when it is there);
# reruns resume. 32 px: the smallest size at which MobileNetV1's last stages still see a
# spatial map (at 16 px they run at 1x1 and the fixed per-network cost hides most layers'
# widths from the latency). x0.5: a short recipe brings it near its plateau, where x1.0
# is still climbing (docs/netadapt.md, "The paper's comparison"). The full comparison (3 seeds,
# 3 budgets, 3,000 images per class) is `make compare`. DTYPE=int8: the same demo priced
# on an int8 sweep, every network also exported full-integer and measured as that file
# (docs/netadapt.md). Its budget is 0.75 there: on this host the narrowest int8 network the
# width search can reach (every layer 8-32 channels) already costs ~0.6 of x0.5's int8
# latency, where int8's fixed per-pixel work outweighs the channels (docs/netadapt.md).
ADAPT_RES ?= 32
ADAPT_BUDGET ?= $(if $(filter int8,$(DTYPE)),0.75,0.5)
ADAPT_DEMO ?= --width 0.5 --max-per-class 1000 --pretrain-epochs 6 --short-steps 40 --reduction 0.15 --decay 0.95 --long-epochs 2
adapt: setup fashion-mnist
	$(NETADAPT) lut --device $(DEVICE) $(if $(BACKEND),--backend $(BACKEND)) $(if $(SERIAL),--serial $(SERIAL)) --space mobilenet_v1 --resolution $(ADAPT_RES) --grid 32 --classes 10 $(if $(DTYPE),--dtype $(DTYPE)) --lut $(LUT)
	$(NETADAPT) adapt --lut $(LUT) --model mobilenet_v1 --resolution $(ADAPT_RES) --budget $(ADAPT_BUDGET) --measured-budget --data fashion-mnist $(ADAPT_DEMO) --compare-multipliers --multipliers 0.125,0.25,0.375 $(if $(DTYPE),--dtype $(DTYPE)) --name demo-$(DEVICE)-$(ADAPT_RES)-fashion-x0.5$(if $(DTYPE),-$(DTYPE)) --resume

# The paper's comparison (benchmarks/compare_bench.py): NetAdapt at budgets 0.75/0.5/0.25
# (on measured latency) against width multipliers over 3 seeds, every file timed on the
# host; about an hour on 2 cores (three seeds in parallel processes with --train-only,
# then one call that only measures: docs/netadapt.md). Results and the Pareto plot in
# benchmarks/compare/.
COMPARE_ARGS ?= --seeds 0 1 2 --width 0.5 --per-class 3000 --epochs 6 --short-steps 40 --long-epochs 2 --reduction 0.15 --decay 0.95 --resolution 32 --workers 2
# DTYPE=int8: int8 against int8 (one seed, budgets 0.5 and 0.25, 1,000 images per class), in
# benchmarks/compare-int8. From x1.0: x0.5's int8 floor on this host (~0.6) is above 0.5.
COMPARE_INT8 := --dtype int8 --seeds 0 --budgets 0.5 0.25 --width 1.0 --per-class 1000 --tag fmnist-int8-x1 --out benchmarks/compare-int8
compare: setup fashion-mnist
	$(BIN)/python -m benchmarks.compare_bench $(COMPARE_ARGS) $(if $(filter int8,$(DTYPE)),$(COMPARE_INT8))

# The demo's data: installed with apt-get when root and missing; otherwise says how (and fails).
fashion-mnist:
	bash scripts/ensure-fashion-mnist

# Bytecode caches on, even where the environment turns them off (PYTHONDONTWRITEBYTECODE):
# without them every worker and every subprocess a test starts compiles the project and
# rewrites the tests' asserts again, 6-7 s a process.
test test-fast: export PYTHONDONTWRITEBYTECODE :=

# The report's browser test needs Debian's chromium: installed here when root (else it skips).
# Two runs. On both cores (one worker per module, so module fixtures train once): what
# asserts nothing about how fast this machine is: training (seeded), loopback phones (their
# tool's numbers are read, not judged), and most tests that train and also time a network.
# Then alone, so no timing shares a core: the tests marked `alone` (every sweep that does
# not train, and the few that do and judge a timing).
test: setup
	bash scripts/ensure-chromium
	$(BIN)/pytest -n 2 --dist loadscope --no-loadscope-reorder -m "not alone"
	$(BIN)/pytest -m alone

# The edit loop: no training, no real sweep, no phone, no browser (markers in pyproject.toml);
# nothing in it times anything, so it runs on both cores.
test-fast: setup
	$(BIN)/pytest -n 2 --dist loadscope --no-loadscope-reorder -m "not train and not sweep and not phones and not browser"

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python -m benchmarks.run --out benchmarks/results.md

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
