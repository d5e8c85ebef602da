# bonefrac: the two commands of the README, and what they need.
#   make demo   set up (once) and serve the bundled models on 127.0.0.1
#   make test   set up (once, with every extra) and run the whole test suite
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The pip setup of some machines prints a warning per unreachable extra index: keep the log readable.
PIP := $(BIN)/python -m pip install --disable-pip-version-check --progress-bar off
QUIET := grep -v "^WARNING: Location" || true
DATA ?= ../shared/data/bone-fracture-yolo8
YOLO_ONNX := model_repository/yolo11_detector/1/model.onnx
FRCNN_ONNX := model_repository/frcnn_detector/1/model.onnx
PYTEST_ARGS ?=

.PHONY: help demo serve test lint clean chromium bench train train-curve perf-analyzer tcmalloc

help:
	@echo "make demo   set up and run the demo (Triton on 127.0.0.1 with the bundled models)"
	@echo "make test   set up everything (every extra) and run the test suite"
	@echo "make lint   ruff over the code"
	@echo "make bench  the whole benchmark on this machine (run it idle): benchmarks/RESULTS.md"
	@echo "make train  resume the long training runs from docs/train/ in the background"
	@echo "make train-curve  score the training snapshots and rewrite docs/train/README.md"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# What the demo needs: serving, client and the UI extra (Gradio, DICOM, the evaluator); no torch.
$(VENV)/.ui: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[ui]' 2>&1 | $(QUIET)
	touch $@

# Everything, every extra in ONE pip command: a second pip run could upgrade numpy past
# nvidia-pytriton's pin. tests/test_packaging.py checks that this list names every extra.
EXTRAS := export,dev,ui,eval,dicom,bench,triton
$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(PIP) -e '.[$(EXTRAS)]' 2>&1 | $(QUIET)
	touch $@ $(VENV)/.ui

# Fallbacks when a bundled model is missing: seeded random weights. The committed YOLO11 was
# trained (docs/MODELS.md): to retrain, bonefrac train yolo11 ... --export-to model_repository.
$(YOLO_ONNX):
	$(MAKE) $(VENV)/.dev
	$(BIN)/bonefrac export yolo11 --config yolo11n.yaml --data $(DATA)/data.yaml --replace \
	  --parity-images $(DATA)/valid/images

$(FRCNN_ONNX):
	$(MAKE) $(VENV)/.dev
	$(BIN)/bonefrac export frcnn --random --data $(DATA)/data.yaml --replace \
	  --parity-images $(DATA)/valid/images

demo: $(VENV)/.ui $(YOLO_ONNX) $(FRCNN_ONNX)
	exec $(BIN)/bonefrac demo --repository model_repository --data $(DATA)/data.yaml

# The UI test drives Debian's Chromium (Playwright never downloads a browser here).
CHROMIUM := $(shell command -v chromium 2>/dev/null)
chromium:
ifeq ($(CHROMIUM),)
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
endif

# Triton's perf_analyzer (the benchmark's cross-check) comes out of the tritonclient wheel once,
# at setup, into the user's cache: tests and benchmarks never fetch anything.
perf-analyzer: $(VENV)/.dev
	$(BIN)/python -c "from bonefrac.benchmarks.perf_analyzer import install, locate; print(locate() or install())"

test: $(VENV)/.dev chromium perf-analyzer tcmalloc
	$(BIN)/ruff check .
	GRADIO_ANALYTICS_ENABLED=False HF_HUB_OFFLINE=1 $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.dev perf-analyzer
	$(BIN)/python -m bonefrac.benchmarks.suite --images $(DATA)/valid/images --out benchmarks/results --report benchmarks/RESULTS.md --data $(DATA)/data.yaml

# Long training runs resume from their committed snapshots (docs/train/RUN: YOLO11 or Faster
# R-CNN, as the record says), in the background under nice, one after another; the log is
# runs/train.log. Stop: pkill -f bonefrac.train.resume (pause: pkill -STOP, go on: pkill -CONT).
# Training runs under tcmalloc: glibc's malloc maps and unmaps the step's large tensors every
# time (page faults: a third of the CPU in system time); a YOLO11n step at 640 px took 0.58
# s/image with glibc and 0.35 with tcmalloc (docs/train/speed-avx2-malloc.json).
TRAIN_RUNS ?= docs/train/yolo11n-640
TCMALLOC_LIBS := /usr/lib/*/libtcmalloc_minimal.so.4 /usr/lib/libtcmalloc_minimal.so.4
TCMALLOC = $(firstword $(wildcard $(TCMALLOC_LIBS)))
train: $(VENV)/.dev tcmalloc
	mkdir -p runs
	LD_PRELOAD=$(TCMALLOC) nohup nice -n 19 $(BIN)/python -m bonefrac.train.resume $(TRAIN_RUNS) --precision auto >> runs/train.log 2>&1 &
	@echo "training in the background (LD_PRELOAD=$(TCMALLOC)): tail -f runs/train.log"

tcmalloc:
ifeq ($(TCMALLOC),)
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libtcmalloc-minimal4
endif

# Score the newest snapshot of each run with bonefrac eval (valid, 6-class) and rewrite
# docs/train/README.md from the records.
train-curve: $(VENV)/.dev
	for run in $(TRAIN_RUNS); do $(BIN)/python -m bonefrac.train.curve $$run --data $(DATA)/data.yaml; done
	$(BIN)/python -m bonefrac.train.report --docs docs/train

lint: $(VENV)/.dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
