#!/usr/bin/env bash
# The GPU check, prepared for a session that is lent a CUDA machine (issue 32): figures
# written to $OUT (or ./gpu-results when OUT is unset), the checks under 8 minutes.
#
#   1. the CUDA tests (tests/core/encoding/test_cuda.py: maps equal the CPU's in float32
#      and under the shipped autocast, out-of-memory halving);
#   2. the forward-only bound: EfficientNet-Lite0, batch sweep, NCHW / channels-last, under
#      the shipped autocast;
#   3. `tiefvision encode` of ENCODE_PHOTOS photos as a whole command (bench/commands.py);
#   4. the pipeline bench (bench/pipeline.py) at PIPELINE_PHOTOS photos.
#
# The lent machine's image holds python3 with CUDA PyTorch, torchvision, timm, onnx, pandas,
# pyarrow, pillow and pytest, but not prefect, faiss, fastapi or sqlalchemy, and nothing can
# be fetched there. Here, `bench/gpu-wheels.sh` downloads the missing wheels into .whl/a and
# .whl/b (a call carries at most 64 MiB, so one half per call). Then, on the warm machine:
#
#   run(carry=[".whl/a"], command="bench/gpu.sh install")            # ~1 min
#   run(carry=[".whl/b"], command="bench/gpu.sh install && bench/gpu.sh check")
#
# `install` puts whatever wheels arrived into .gpu-venv (which sees the image's torch and
# stays on the warm machine between calls); `check` runs 1-4.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu-results}
mkdir -p "$OUT"
LOG="$OUT/gpu.log"
ENCODE_PHOTOS=${ENCODE_PHOTOS:-20000}
PIPELINE_PHOTOS=${PIPELINE_PHOTOS:-10000}
exec > >(tee -a "$LOG") 2>&1

step() { echo; echo "== $* ($(date -u +%H:%M:%S))"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'

if [ "${1:-check}" = install ]; then
    step "install (offline, the wheels carried in .whl/)"
    [ -x .gpu-venv/bin/python ] || python3 -m venv --system-site-packages .gpu-venv
    wheels=$(find .whl -name '*.whl' 2>/dev/null)
    [ -n "$wheels" ] || { echo "no wheels in .whl/: run bench/gpu-wheels.sh here first"; exit 1; }
    .gpu-venv/bin/python -m pip install --quiet --no-index --no-deps $wheels || exit 1
    .gpu-venv/bin/python -m pip install --quiet --no-index --no-deps --no-build-isolation -e . \
        || exit 1
    exit 0
fi
PY=.gpu-venv/bin/python
$PY -c 'import prefect, faiss, fastapi, sqlalchemy, tiefvision_core' \
    || { echo "missing packages: run bench/gpu.sh install with both wheel halves"; exit 1; }
export TIEFVISION_DEVICE=cuda PREFECT_SERVER_ANALYTICS_ENABLED=false
export XDG_CACHE_HOME="$PWD/.gpu-cache"

step "CUDA tests"
timeout 120 $PY -m pytest -q -p no:cacheprovider tests/core/encoding/test_cuda.py \
    tests/core/encoding/test_encoding.py -k "cuda or memory" | tee "$OUT/cuda-tests.txt"

step "forward-only bound (batch sweep, layouts, autocast)"
timeout 90 $PY - <<'EOF' | tee "$OUT/bound.txt"
import time, torch
from tiefvision_core.encoders import get_encoder
from tiefvision_core.encoding.runtime import EncodingRuntime
rt = EncodingRuntime(get_encoder("efficientnet_lite0"), device="cuda", workers=0, batch_size=8)
best = None
for size in (64, 128, 256, 512, 1024):
    for channels_last in (False, True):
        c = rt._measure(size, channels_last, seconds=1.5)
        print(f"batch {size:5d} {'channels_last' if channels_last else 'NCHW':13s} "
              f"{c.images_per_s:9.0f} images/s ({rt.amp_dtype})")
        best = c if best is None or c.images_per_s > best.images_per_s else best
print(f"BOUND {best.images_per_s:.0f} images/s at batch {best.batch_size}")
EOF

step "tiefvision encode, $ENCODE_PHOTOS photos, whole command"
timeout 200 $PY bench/commands.py --skip reindex,queries,serve --backends auto \
    --encode-photos "$ENCODE_PHOTOS" \
    --cache "$PWD/.gpu-cache/commands" --out "$OUT/encode.json" | tail -20

step "pipeline, $PIPELINE_PHOTOS photos"
timeout 240 $PY bench/pipeline.py --photos "$PIPELINE_PHOTOS" \
    --cache "$PWD/.gpu-cache/commands" --out "$OUT/pipeline.json" | tail -20

step "done"
