# zoe-lightning — `make help` lists the targets. The virtualenv is created on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
EXP ?= quickstart
ARGS ?=
RESUME ?=
PYTEST_ARGS ?=

export HF_HUB_OFFLINE ?= 1
export NO_ALBUMENTATIONS_UPDATE ?= 1
export WANDB_MODE ?= offline
export PYTHONUNBUFFERED := 1

.DEFAULT_GOAL := help
.PHONY: help install test test-full train config experiments clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  Variables: EXP=<experiment> ARGS=\"key=value ...\" RESUME=<last.ckpt> PYTEST_ARGS=..."

$(VENV)/.installed: setup.cfg
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

install: $(VENV)/.installed ## Create .venv and install the package with its dev extras

test: $(VENV)/.installed ## Fast test suite (CPU, tiny models; < 15 min)
	WANDB_MODE=disabled $(BIN)/python -m pytest -m "not slow and not gpu" $(PYTEST_ARGS)

test-full: $(VENV)/.installed ## Every test, including the slow ones
	WANDB_MODE=disabled $(BIN)/python -m pytest $(PYTEST_ARGS)

train: $(VENV)/.installed ## Train EXP (default quickstart) with ARGS overrides; RESUME=ckpt resumes
	$(BIN)/zoe-lightning train $(EXP) $(ARGS) $(if $(RESUME),--resume $(RESUME),)

config: $(VENV)/.installed ## Print the resolved config of EXP with ARGS overrides
	$(BIN)/zoe-lightning config $(EXP) $(ARGS)

experiments: $(VENV)/.installed ## List the experiment files
	$(BIN)/zoe-lightning experiments

clean: ## Remove caches (keeps .venv and runs/)
	rm -rf .pytest_cache **/__pycache__ *.egg-info
