#!/usr/bin/env bash
# The device check of the GPU track: CUDA tests, a short cifar100-recipe training of
# resnet32x4 -> resnet8x4 with kd, the training-step benchmark against a bare loop, one Ray GPU
# task; every figure goes to one summary file (default gpu_check_summary.json).
#
#   bash benchmarks/gpu_check.sh [--out FILE] [--data-dir DIR]   # on a GPU, within 8 minutes
#   bash benchmarks/gpu_check.sh --dry-run                       # the same path, tiny, on a CPU
#
# What each step does and measures: benchmarks/gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python benchmarks/gpu_check.py "$@"
