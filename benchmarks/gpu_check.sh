#!/usr/bin/env bash
# SFT (LoRA) and GRPO at the paper's per-device shapes on one large GPU, random weights, nothing
# downloaded: tokens per second, peak memory and MFU (see benchmarks/gpu_check.py). ~5 minutes on
# an H100/H200; needs the project installed with a CUDA torch (`pip install -e .` on the GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 480 "$PYTHON" benchmarks/gpu_check.py "$@"
