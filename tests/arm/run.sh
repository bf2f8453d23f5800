#!/usr/bin/env bash
# The runtime on linux/aarch64, under qemu-user emulation, against models exported on x86.
#
# Usage: tests/arm/run.sh [WORK_DIR]    (default: a new temporary folder, removed at the end)
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
# 2. On x86: `sse-export` writes fp32, int8, int4 and int4_block at 256 dims; a virtualenv with
#    the same numpy, onnxruntime and tokenizers versions runs `tests/arm/parity.py embed`.
# 3. Under emulation: the same `tests/arm/parity.py embed`, then `tests/arm/parity.py compare`
#    checks token ids, outputs and SciFact top-10 rankings, and the runtime-only tests run
#    under emulation.
# A WORK_DIR given again reuses its sysroot, wheels, models and virtualenv.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
python=${PYTHON:-python3}
# onnxruntime 1.28 and newer crash on import under qemu-user 7.2 (Debian 12); 1.27.0 runs.
ort_version=${SSE_ARM_ONNXRUNTIME:-1.27.0}
pyver=${SSE_ARM_PYTHON:-3.11}  # Debian 12's python3
# The test modules that import only the runtime (the others export models: torch and onnx).
runtime_tests=("$repo/tests/test_fast_tokenizer.py")

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
models=$work/models
[ -f "$models/manifest.json" ] || nice "$python" -m sse_export.cli --quiet --dim 256 \
  --variants fp32 int8 int4 int4_block --no-report --output "$models"
[ -f "$work/texts.json" ] || "$python" "$repo/tests/arm/parity.py" prepare --out "$work/texts.json"
embed=("$repo/tests/arm/parity.py" embed --model "$models" --texts "$work/texts.json" --rank int8)
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

step "done: $([ "$status" -eq 0 ] && echo passed || echo FAILED)"
exit "$status"
