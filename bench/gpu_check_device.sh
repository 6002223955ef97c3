#!/usr/bin/env bash
# bench/gpu_check.py on a GPU machine that has PyTorch (CUDA) and transformers but none of this
# project's other dependencies (no Ray, no vLLM: the script needs neither).
#
#   bench/gpu_check_device.sh --download   # here, with network: wheels + DeepSpeed's sdist into .whl/
#   bench/gpu_check_device.sh              # there, from the repository root: install, then run
#
# The GPU machine runs Python 3.12; the wheels are fetched for it. DeepSpeed publishes only a
# source archive; it is installed there without building any of its CUDA ops (DS_BUILD_OPS=0):
# the training engine passes torch's AdamW in, so no DeepSpeed kernel is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.whl
PY=${PYTHON:-python3}
if [ "${1:-}" = "--download" ]; then
  mkdir -p "$WHEELS"
  pip_dl() { "$PY" -m pip download -q --no-deps -d "$WHEELS" "$@"; }
  for p in "pydantic==2.14.4" "pydantic-core==2.50.5" "annotated-types==0.8.0" "typing-inspection==0.4.5" \
           "hjson==3.1.0" "liger-kernel==0.8.5"; do
    pip_dl --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 "$p"
  done
  pip_dl --no-binary=:all: "deepspeed==0.19.8"
  ls -l "$WHEELS"
  exit 0
fi
SITE=${SITE:-/tmp/gpu_check_site}
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
DS_BUILD_OPS=0 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target "$SITE" "$WHEELS"/deepspeed-*.tar.gz
export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1
"$PY" -c "import torch, transformers, deepspeed, pydantic, liger_kernel; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(), 'transformers', transformers.__version__, 'deepspeed', deepspeed.__version__)"
"$PY" bench/gpu_check.py --out "${OUT:-/tmp}/gpu_check.json" "${@}"
