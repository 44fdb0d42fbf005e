#!/bin/bash
# benchmarks/gpu.py on a GPU machine whose image has torch but not rcmae's other needs and no network.
#
#   bash benchmarks/gpu_device.sh --fetch    # here, with pip's network: the missing wheels into .whl/ (git-ignored)
#   bash benchmarks/gpu_device.sh            # there (the device tool: carry .whl): install them, measure, write
#                                            # $OUT/gpu.json and $OUT/gpu.log (./ without $OUT)
#
# The device image (README "On a GPU") has torch, torchaudio, transformers, tokenizers, safetensors, pyarrow,
# scikit-learn, scipy, pandas, pytest and yaml; it lacks diffusers and soundfile (and their needs below).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=(diffusers==0.42.1 soundfile==0.14.0 cffi==2.1.1 pycparser==3.12 importlib_metadata==9.1.0)
if [ "${1:-}" = "--fetch" ]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${WHEELS[@]}"
    ls -l .whl
    exit 0
fi
OUT=${OUT:-.}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 benchmarks/gpu.py --json "$OUT/gpu.json" "$@" 2>&1 | tee "$OUT/gpu.log"
