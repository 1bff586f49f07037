#!/usr/bin/env bash
# Runs a TernaryMatMul model against the built library under older onnxruntime
# releases, each in a throwaway venv (the version-negotiation and custom-op ABI
# paths differ per release). Not part of the pytest suite: it downloads wheels.
#
#   tests/compat/check_ort_versions.sh [path/to/libonnxbit.so] [ORT versions...]
#
# Defaults: ONNXBIT_LIBRARY or build/release/libonnxbit.so; 1.17.3 1.20.1.
# Venvs go under ${ONNXBIT_COMPAT_DIR:-/tmp/onnxbit-ort-compat} and are reused.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
library="${1:-${ONNXBIT_LIBRARY:-$repo/build/release/libonnxbit.so}}"
shift || true
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(1.17.3 1.20.1)
python="${PYTHON:-python3}"
venvs="${ONNXBIT_COMPAT_DIR:-/tmp/onnxbit-ort-compat}"

if [ ! -f "$library" ]; then
    echo "library not found: $library (build it, or pass its path)" >&2
    exit 2
fi
library="$(cd "$(dirname "$library")" && pwd)/$(basename "$library")"

status=0
for version in "${versions[@]}"; do
    venv="$venvs/ort-$version"
    if [ ! -x "$venv/bin/python" ]; then
        "$python" -m venv "$venv"
        # onnxruntime wheels before 1.19 are built against numpy 1.x.
        numpy_pin="numpy"
        case "$version" in 1.1[0-8].*) numpy_pin="numpy<2" ;; esac
        "$venv/bin/python" -m pip install --quiet "onnxruntime==$version" "$numpy_pin" onnx cffi
    fi
    echo "== onnxruntime $version"
    if ONNXBIT_LIBRARY="$library" PYTHONPATH="$repo:$repo/tests" \
        "$venv/bin/python" "$repo/tests/compat/run_ternary_matmul.py"; then
        echo "== onnxruntime $version: PASS"
    else
        echo "== onnxruntime $version: FAIL"
        status=1
    fi
done
exit $status
