"""export/desktop/build.sh: the sse-demo bundle builds from a runtime wheel built here, holds no
training stack, and runs with an empty environment outside the repository, giving the runtime's
own similarities (about 45 s)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from sse_onnx import Encoder

TEXTS = ["a cat sat on the mat", "a kitten rested on a rug", "the stock market fell", "東京"]


def runtime_wheel(tmp_path: Path) -> Path:
    """The runtime wheel, built offline from a copy of its sources (the checkout stays clean)."""
    sources = tmp_path / "sources"
    sources.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, sources / name)
    skip = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")
    shutil.copytree(ROOT / "sse_onnx", sources / "sse_onnx", ignore=skip)
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    wheels = tmp_path / "wheels"
    subprocess.run(
        [*pip, "--wheel-dir", str(wheels), str(sources)], check=True, capture_output=True
    )
    (wheel,) = wheels.glob("sse_onnx-*.whl")
    return wheel


@pytest.mark.skipif(
    not sysconfig.get_config_var("Py_ENABLE_SHARED"), reason="PyInstaller needs a shared libpython"
)
def test_bundle_builds_and_runs_without_python_packages(tmp_path: Path) -> None:
    wheel = runtime_wheel(tmp_path)
    env = {**os.environ, "PYTHON": sys.executable, "SSE_DESKTOP_WHEEL": str(wheel)}
    build = subprocess.run(
        ["bash", str(ROOT / "export" / "desktop" / "build.sh"), str(tmp_path / "dist")],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert f"runtime from {wheel}\n" in build.stdout
    bundle = tmp_path / "dist" / "sse-demo"
    internal = {path.name.split("-")[0] for path in (bundle / "_internal").iterdir()}
    assert not internal & {"torch", "onnx", "optimum", "transformers", "sse_export"}, internal

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    done = subprocess.run(
        [str(bundle / "sse-demo")], input="\n".join(TEXTS).encode(), cwd=outside,
        env={"PATH": "/usr/bin:/bin"}, capture_output=True, check=True,
    )  # fmt: skip
    rows = [line.split("  ", 1) for line in done.stdout.decode().splitlines()]
    vectors = Encoder().encode(TEXTS)
    expected = vectors[1:] @ vectors[0]
    order = np.argsort(-expected, kind="stable")
    assert [text for _, text in rows] == [TEXTS[1:][i] for i in order]
    np.testing.assert_allclose([float(s) for s, _ in rows], expected[order], atol=1e-4)
