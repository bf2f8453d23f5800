#!/usr/bin/env bash
# Build the sse-demo desktop bundle: one folder with its own Python, numpy, onnxruntime,
# tokenizers and the bundled default model, which runs where no Python packages are installed.
#
# Usage: export/desktop/build.sh [DIST_DIR]
#        (default: dist/ in the repository; run the bundle as DIST_DIR/sse-demo/sse-demo)
# Environment (the last two shrink the bundle; see the README's "Desktop bundle" section):
#   SSE_DESKTOP_WHEEL=dist/sse_onnx-0.1.0-py3-none-any.whl
#                                    bundle this runtime wheel (as tests/test_desktop_bundle.py
#                                    does with one it builds) instead of the checkout's sources
#   SSE_DESKTOP_ONNXRUNTIME=1.20.1   pin onnxruntime (newer releases are larger)
#   SSE_DESKTOP_NUMPY_NO_BLAS=1      build numpy from source without BLAS, dropping the
#                                    OpenBLAS its wheels carry (a long compile the first time,
#                                    then pip's wheel cache)
#
# Builds in a new virtualenv holding only the runtime and PyInstaller (`pip install .[desktop]`,
# with $PYTHON or python3, which needs a shared libpython), strips debug symbols from the
# binaries that carry them, then runs the bundle from outside the repository with an empty
# environment and prints its size.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-python3}
dist=$(mkdir -p "${1:-$repo/dist}" && cd "${1:-$repo/dist}" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$SECONDS

if [ -n "${SSE_DESKTOP_WHEEL:-}" ]; then
  runtime=$(cd "$(dirname "$SSE_DESKTOP_WHEEL")" && pwd)/$(basename "$SSE_DESKTOP_WHEEL")
else
  # A copy of the sources, so that setuptools' build/ folder stays out of the repository.
  mkdir "$work/src"
  tar -C "$repo" --exclude=.git --exclude=.venv --exclude='.*_cache' --exclude=.cache \
    --exclude=.hypothesis --exclude=__pycache__ --exclude=build --exclude=dist -cf - . |
    tar -C "$work/src" -xf -
  runtime=$work/src
fi
echo "runtime from $runtime"
"$python" -m venv "$work/venv"
pip=("$work/venv/bin/pip" install --quiet --disable-pip-version-check)
if [ -n "${SSE_DESKTOP_NUMPY_NO_BLAS:-}" ]; then
  nice "${pip[@]}" --no-binary numpy numpy -Csetup-args=-Dallow-noblas=true \
    -Csetup-args=-Dblas=none -Csetup-args=-Dlapack=none
fi
pins=()
[ -z "${SSE_DESKTOP_ONNXRUNTIME:-}" ] || pins+=("onnxruntime==$SSE_DESKTOP_ONNXRUNTIME")
"${pip[@]}" "$runtime[desktop]" "${pins[@]}"
nice "$work/venv/bin/pyinstaller" --noconfirm --log-level WARN --distpath "$dist" \
  --workpath "$work/build" "$repo/export/desktop/sse-demo.spec"
bundle=$dist/sse-demo

# PyInstaller's own strip would also strip the libraries vendored by the wheels (*.libs/),
# whose patched ELF headers it breaks; the other binaries are stripped here.
if command -v strip >/dev/null; then
  find "$bundle" -type f \( -name '*.so' -o -name '*.so.*' \) -not -path '*.libs/*' \
    -exec strip --strip-unneeded {} +
fi
"$work/venv/bin/python" -c "from importlib.metadata import version as v
print('built with', *(f'{p} {v(p)}' for p in ('numpy', 'onnxruntime', 'tokenizers', 'pyinstaller')))"
echo "built in $((SECONDS - start)) s: $bundle"

sample=$'how fast are static embeddings?\nThe cat sat on the mat.\nStatic embeddings are fast.'
(cd "$work" && printf '%s\n' "$sample" | env -i PATH=/usr/bin:/bin "$bundle/sse-demo")
du -sh "$bundle"
