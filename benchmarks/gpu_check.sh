#!/usr/bin/env bash
# The prepared GPU check (issue 13), under 8 minutes on one GPU: DiT-XL/2 with random weights,
# DoG vs CFG vs LoRA-DoG images/s at fp32/tf32/bf16 with model FLOP utilisation, torch.compile,
# fine-tune steps/s with/without the latent cache and gradient checkpointing, DoG sampling memory
# (full fine-tune vs LoRA). Numbers go to OUT/gpu_check.{json,md} (default: gpu_check/).
#
#   benchmarks/gpu_check.sh [--out DIR] [--no-compile]      # on a GPU machine
#   benchmarks/gpu_check.sh --tiny --device cpu --out DIR    # the same code on a CPU in seconds (the tests)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader || true
fi
# a hard stop at 7.5 minutes: a stuck step never eats the whole GPU lease
exec timeout "${GPU_CHECK_TIMEOUT:-450}" "$PY" benchmarks/gpu_check.py "$@"
