#!/usr/bin/env bash
# The runtime on linux/aarch64, under qemu-user emulation, against models exported on x86.
#
# Usage: tests/arm/run.sh [--ci] [WORK_DIR]    (WORK_DIR default: a new temporary folder,
#                                               removed at the end)
#
# Needs Debian's apt (root, to add the arm64 architecture and qemu-user-static when missing)
# and a Python with this project and its exporter installed (`pip install . ./export`): $PYTHON,
# default `python3`
# (e.g. the activated dev virtualenv). Reads SciFact from $SSE_DATA or ../shared/data.
# SSE_ARM_ONNXRUNTIME and SSE_ARM_PYTHON override the pinned versions below.
#
# 1. An arm64 Python from Debian's arm64 packages (apt-get download, dpkg -x into a sysroot),
#    run as `qemu-aarch64-static -L sysroot`, and aarch64 wheels of numpy, onnxruntime and
#    tokenizers from PyPI.
# 2. On x86: `sse-export` writes every variant it offers (sse_onnx.folder.VARIANT_FILES) at 256
#    dims; a virtualenv with the same numpy, onnxruntime and tokenizers versions runs
#    `tests/arm/parity.py embed`.
# 3. Under emulation: the same `tests/arm/parity.py embed`, then `tests/arm/parity.py compare`
#    checks token ids, outputs and SciFact top-10 rankings, and the runtime-only tests run
#    under emulation.
# A WORK_DIR given again reuses its sysroot, wheels, models and virtualenv.
#
# --ci: the reduced check CI runs on every change, to stay well within 10 minutes (2 minutes from
# a new WORK_DIR on 2 cores with qemu-user-static installed; 4 without --ci). The same steps on
# the same texts (token ids of every text and outputs of every variant on the adversarial set
# and the 300 judged SciFact queries, the runtime-only tests), but SciFact's 5,183 documents are
# ranked by int8 alone (the default variant), not by every variant: each variant ranks the
# corpus in about 15 s emulated. Without SciFact it does not fail: it prints one line saying
# SciFact was skipped and why, and checks the adversarial set alone.
#
# Prints the time elapsed at each step and in all; exits with 1 when a check fails.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-python3}
ci=0
if [ "${1:-}" = --ci ]; then
  ci=1
  shift
fi
# onnxruntime 1.28 and newer crash on import under qemu-user 7.2 (Debian 12); 1.27.0 runs.
ort_version=${SSE_ARM_ONNXRUNTIME:-1.27.0}
pyver=${SSE_ARM_PYTHON:-3.11}  # Debian 12's python3
# The test modules that import only the runtime (the others export models: torch and onnx).
# tests/test_golden.py's embeddings of its long text (6,720 tokens, embedded in chunks) move by
# 2.6e-06 on aarch64, above that file's same-machine bound of 1e-06: those two tests are
# deselected, since parity.py checks long texts against x86 within the exporter's 1e-04.
runtime_tests=("$repo/tests/test_fast_tokenizer.py" "$repo/tests/test_chunk_table.py"
  "$repo/tests/test_pipeline.py" "$repo/tests/test_golden.py"
  --deselect "tests/test_golden.py::test_embeddings_of_one_call"
  --deselect "tests/test_golden.py::test_embedding_of_each_text[long]")

start=$SECONDS
if [ $# -ge 1 ]; then
  work=$(mkdir -p "$1" && cd "$1" && pwd)
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
fi
step() { printf '\n== %s (%ds)\n' "$1" $((SECONDS - start)); }

"$python" -c "import sse_export" 2>/dev/null || {
  echo "$python cannot import sse_export: activate a virtualenv with pip install -e . -e ./export" \
    "or set PYTHON to its python." >&2
  exit 1
}

step "qemu-user and Debian's arm64 packages"
if ! command -v qemu-aarch64-static >/dev/null ||
  ! apt-cache show "python$pyver:arm64" >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] || {
    echo "qemu-user-static or Debian's arm64 package lists are missing; run this as root, or" \
      "first: sudo dpkg --add-architecture arm64 && sudo apt-get update &&" \
      "sudo apt-get install qemu-user-static" >&2
    exit 1
  }
  dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
  apt-get update -qq
  command -v qemu-aarch64-static >/dev/null ||
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static >/dev/null
fi
qemu-aarch64-static --version | head -n 1
sysroot=$work/sysroot
if [ ! -x "$sysroot/usr/bin/python$pyver" ]; then
  # python and the shared libraries it and the wheels load (libstdc++ for onnxruntime).
  packages=(
    "python$pyver" "python$pyver-minimal" "libpython$pyver-minimal" "libpython$pyver-stdlib"
    libc6 libgcc-s1 libstdc++6 zlib1g libexpat1 libffi8 libssl3 libbz2-1.0 liblzma5
    libsqlite3-0 libuuid1 libncursesw6 libtinfo6 libreadline8 libcrypt1 libnsl2 libtirpc3
    libdb5.3
  )
  mkdir -p "$work/debs" "$sysroot"
  (cd "$work/debs" && apt-get download -qq -o APT::Sandbox::User=root "${packages[@]/%/:arm64}")
  for deb in "$work"/debs/*.deb; do dpkg -x "$deb" "$sysroot"; done
fi
arm_python=(env "PYTHONPATH=$work/arm-site:$repo" PYTHONDONTWRITEBYTECODE=1
  nice qemu-aarch64-static -L "$sysroot" "$sysroot/usr/bin/python$pyver" -s)
"${arm_python[@]}" -c "import platform; print('python', platform.python_version(), platform.machine())"

step "wheels: aarch64, and the same versions for x86"
x86_python=$work/x86-venv/bin/python
[ -x "$x86_python" ] || "$python" -m venv "$work/x86-venv"
pip=("$x86_python" -m pip install --quiet --disable-pip-version-check)
if [ ! -d "$work/arm-site/onnxruntime" ]; then
  platforms=(--platform manylinux2014_aarch64)
  for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_aarch64"); done
  "${pip[@]}" --target "$work/arm-site" "${platforms[@]}" --python-version "$pyver" \
    --only-binary=:all: numpy "onnxruntime==$ort_version" tokenizers pytest hypothesis
fi
installed() { basename "$work/arm-site/$1"-*.dist-info .dist-info | cut -d- -f2; }
versions=("numpy==$(installed numpy)" "onnxruntime==$(installed onnxruntime)"
  "tokenizers==$(installed tokenizers)")
"${pip[@]}" "${versions[@]}"
echo "${versions[*]}"

step "x86: export, texts and reference outputs"
read -r -a variants < <("$python" -c "from sse_onnx.folder import VARIANT_FILES as v; print(*v)")
models=$work/models
# A folder of an earlier run is reused when it holds exactly these variants.
[ -f "$models/manifest.json" ] && "$python" -c "
import sys
from sse_onnx.folder import read_manifest
sys.exit(set(sys.argv[2:]) != set(read_manifest(sys.argv[1]).variants))" \
  "$models" "${variants[@]}" ||
  nice "$python" -m sse_export.cli --quiet --dim 256 --variants "${variants[@]}" --no-report \
    --overwrite --output "$models"
texts=$work/texts.json
if [ "$ci" -eq 1 ]; then
  rank=(int8)
  "$python" "$repo/tests/arm/parity.py" prepare --scifact-optional --out "$texts"
else
  rank=("${variants[@]}")
  "$python" "$repo/tests/arm/parity.py" prepare --out "$texts"
fi
embed=("$repo/tests/arm/parity.py" embed --model "$models" --texts "$texts" --rank "${rank[@]}")
PYTHONPATH=$repo PYTHONDONTWRITEBYTECODE=1 nice "$x86_python" -s "${embed[@]}" \
  --out "$work/x86.npz"

step "aarch64 (emulated): the same outputs"
"${arm_python[@]}" "${embed[@]}" --out "$work/arm.npz"

step "compare aarch64 with x86"
status=0
"$python" "$repo/tests/arm/parity.py" compare "$work/x86.npz" "$work/arm.npz" \
  --report "$work/report.json" || status=1

step "aarch64 (emulated): runtime-only tests"
(cd "$work" && "${arm_python[@]}" -m pytest -p no:cacheprovider -q --rootdir "$repo" \
  "${runtime_tests[@]}") || status=1

verdict=$([ "$status" -eq 0 ] && echo passed || echo FAILED)
printf '\n== done in %d s: %s\n' $((SECONDS - start)) "$verdict"
exit "$status"
