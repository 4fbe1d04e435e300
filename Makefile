# zoe-lightning — `make help` lists the targets. The virtualenv is created on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXP ?= quickstart
ARGS ?=
RESUME ?=
PYTEST_ARGS ?=
CKPT ?=
INPUT ?=
OUTPUT ?= predictions
ONNX ?= model.onnx
RUNS_ROOT ?= runs
RUNS ?=
GROUP ?=
SWEEP ?= head_variants
ID ?=
NODES ?= 1
GPUS ?= 1
DRY_RUN ?=
BENCH_ARGS ?=
GPU_CHECK_ARGS ?=
# The tested torch build, pinned here (the package itself asks only for compatible ranges).
# TORCH=cpu installs the CPU-only wheels from the PyTorch index (no CUDA libraries); default: PyPI's
# wheels (CUDA on Linux). A venv remembers its choice: later targets reuse it.
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
TORCH ?= $(or $(patsubst $(VENV)/.torch-%,%,$(firstword $(wildcard $(VENV)/.torch-*))),default)
TORCH_INDEX_default :=
TORCH_INDEX_cpu := --index-url https://download.pytorch.org/whl/cpu
ifeq ($(filter default cpu,$(TORCH)),)
$(error TORCH=$(TORCH): choose TORCH=default (PyPI wheels) or TORCH=cpu (CPU-only wheels))
endif

export HF_HUB_OFFLINE ?= 1
export NO_ALBUMENTATIONS_UPDATE ?= 1
export WANDB_MODE ?= offline
export PYTHONUNBUFFERED := 1

.DEFAULT_GOAL := help
.PHONY: help install install-dev test test-full train config experiments eval predict export compare sweep agent sweep-local slurm bench gpu-check clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  Variables: EXP=<experiment> ARGS=\"key=value ...\" RESUME=<last.ckpt> CKPT=... INPUT=... OUTPUT=... SWEEP=... BENCH_ARGS=... TORCH=cpu"

# Markers in the venv: .torch-<TORCH> (the torch build), .installed (the package and what `train`
# needs), .installed-dev (the dev extra: tests, HF parity, ONNX, HDF5). Each redoes its step when
# what it depends on changes.
$(VENV)/.torch-$(TORCH):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if ls $(VENV)/.torch-* >/dev/null 2>&1; then $(BIN)/python -m pip uninstall -q -y torch torchvision; fi
	$(BIN)/python -m pip install -q $(TORCH_PINS) $(TORCH_INDEX_$(TORCH))
	@rm -f $(VENV)/.torch-*; touch $@

$(VENV)/.installed: setup.cfg $(VENV)/.torch-$(TORCH)
	$(BIN)/python -m pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

install: $(VENV)/.installed ## Create .venv and install the package (TORCH=cpu: CPU-only torch wheels)

install-dev: $(VENV)/.installed-dev ## install, plus the dev extra (tests, HF parity, ONNX export, HDF5)

test: $(VENV)/.installed-dev ## Fast test suite (CPU, tiny models; < 15 min)
	WANDB_MODE=disabled $(BIN)/python -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

test-full: $(VENV)/.installed-dev ## Every test, including the slow ones
	WANDB_MODE=disabled $(BIN)/python -m pytest $(PYTEST_ARGS)

train: $(VENV)/.installed ## Train EXP (default quickstart) with ARGS overrides; RESUME=ckpt resumes
	$(BIN)/zoe-lightning train $(EXP) $(ARGS) $(if $(RESUME),--resume $(RESUME),)

config: $(VENV)/.installed ## Print the resolved config of EXP with ARGS overrides
	$(BIN)/zoe-lightning config $(EXP) $(ARGS)

experiments: $(VENV)/.installed ## List the experiment files
	$(BIN)/zoe-lightning experiments

# CKPT, or else the newest $(RUNS_ROOT)/<EXP>/*/checkpoints/best.ckpt (said in one line); one line when there is none
FIND_CKPT = ckpt="$(CKPT)"; if [ -z "$$ckpt" ]; then \
	  ckpt=$$(ls -t $(RUNS_ROOT)/$(EXP)/*/checkpoints/best.ckpt 2>/dev/null | head -n 1); \
	  if [ -z "$$ckpt" ]; then echo "make $@: no CKPT given and no $(RUNS_ROOT)/$(EXP)/*/checkpoints/best.ckpt: train first (make train EXP=$(EXP)) or give CKPT=<checkpoint>" >&2; exit 2; fi; \
	  echo "make $@: CKPT not given: using the newest best checkpoint of $(EXP), $$ckpt"; fi

eval: $(VENV)/.installed ## Evaluate CKPT (default: newest best.ckpt of EXP) on the TEST split of EXP's evaluation sets (ARGS="--split val ...")
	@$(FIND_CKPT); $(BIN)/zoe-lightning eval $(EXP) --ckpt "$$ckpt" $(ARGS)

predict: $(VENV)/.installed ## Metric depth for INPUT (folder or images) from CKPT (default: newest best.ckpt of EXP) into OUTPUT
	@if [ -z "$(INPUT)" ]; then echo "make predict: give INPUT=<image or folder> (and OUTPUT=<folder>, default $(OUTPUT))" >&2; exit 2; fi
	@$(FIND_CKPT); $(BIN)/zoe-lightning predict --ckpt "$$ckpt" --input $(INPUT) --output $(OUTPUT) $(ARGS)

export: $(VENV)/.installed ## Export CKPT (default: newest best.ckpt of EXP) to ONNX (ONNX=out.onnx)
	@$(FIND_CKPT); $(BIN)/zoe-lightning export --ckpt "$$ckpt" --onnx $(ONNX) $(ARGS)

compare: $(VENV)/.installed ## Compare RUNS="dir ..." or GROUP=name: table + plots
	$(BIN)/zoe-lightning compare $(RUNS) $(if $(GROUP),--group $(GROUP),) $(ARGS)

sweep: $(VENV)/.installed ## Create the W&B sweep experiments/sweeps/SWEEP.yaml (prints its ID)
	WANDB_MODE=online $(BIN)/wandb sweep experiments/sweeps/$(SWEEP).yaml

agent: $(VENV)/.installed ## Run a W&B sweep agent for ID (one per GPU)
	WANDB_MODE=online PATH="$(abspath $(BIN)):$$PATH" $(BIN)/wandb agent $(ID)

sweep-local: $(VENV)/.installed ## Run experiments/sweeps/SWEEP.yaml without W&B (ARGS: --parallel N, --slurm, ...)
	$(BIN)/zoe-lightning sweep-local experiments/sweeps/$(SWEEP).yaml $(ARGS)

slurm: $(VENV)/.installed ## Write and submit an sbatch script for EXP on NODES x GPUS (DRY_RUN=1 prints it)
	$(BIN)/zoe-lightning slurm $(EXP) --nodes $(NODES) --gpus $(GPUS) $(if $(DRY_RUN),--dry-run,) $(ARGS)

bench: $(VENV)/.installed-dev ## Benchmarks -> benchmarks/RESULTS.md (BENCH_ARGS chooses rows/devices)
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

gpu-check: ## The prepared GPU check: gpu tests, bench rows 1-2, bf16 training (GPU_CHECK_ARGS="--dry-run" on a CPU)
	bash benchmarks/gpu_check.sh $(GPU_CHECK_ARGS)

clean: ## Remove caches (keeps .venv and runs/)
	rm -rf .pytest_cache **/__pycache__ *.egg-info
