#!/usr/bin/env bash
# The prepared GPU check (docs/gpu.md): tests, benchmark rows 1-2 and a bf16 training run, in one
# folder, within minutes. `benchmarks/gpu_check.sh --dry-run` runs the same steps on the CPU.
#
#   bash benchmarks/gpu_check.sh [--dry-run] [--out DIR] [--steps N] [--skip tests,bench,train]
#
# Python: the project's warm .venv when present; else a python3 that already has the stack (a GPU
# image); else wheels carried in .whl/ (benchmarks/gpu_wheels.py fetches them on a machine online)
# installed into a temporary folder; else `make install`.
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 NO_ALBUMENTATIONS_UPDATE=1 WANDB_MODE=disabled PYTHONUNBUFFERED=1

stack='import torch, torchvision, lightning, timm, torchmetrics, albumentations, omegaconf, wandb, cv2'
if [ -x .venv/bin/python ] && .venv/bin/python -c "$stack" 2>/dev/null; then
  py=.venv/bin/python
elif python3 -c "$stack" 2>/dev/null; then
  py=python3
elif [ -d .whl ] && compgen -G '.whl/*.whl' >/dev/null; then
  site=${TMPDIR:-/tmp}/zoe-gpu-site
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
  py=python3
  if ! $py -c "$stack" 2>/tmp/zoe-gpu-stack.err; then
    echo "gpu_check: the carried wheels do not complete the stack: $(tail -n 1 /tmp/zoe-gpu-stack.err)" >&2
    exit 2
  fi
else
  make install
  py=.venv/bin/python
fi
echo "gpu_check: python $($py -c 'import sys, torch; print(sys.executable, "torch", torch.__version__)')"
exec "$py" benchmarks/gpu_check.py "$@"
