"""The runtime wheel is the runtime: small, without the exporter or its training checkpoint.

Both wheels are built (without build isolation, so offline) from a copy of the source files,
so that nothing left in a ``build/`` folder of the checkout can slip into them.
"""

from __future__ import annotations

import email
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import sse_onnx
from sse_onnx import export_command

ROOT = Path(__file__).resolve().parents[1]
#: The runtime wheel's budget, with the bundled int8 default model (about 8 MB of it).
MAX_RUNTIME_WHEEL_BYTES = 10_000_000
SKIP = shutil.ignore_patterns("__pycache__", "build", "*.egg-info", "node_modules")


def build_wheel(project: Path, out: Path) -> Path:
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*pip, "--wheel-dir", str(out), str(project)], check=True, capture_output=True)
    (wheel,) = out.glob("*.whl")
    return wheel


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files both wheels are built from, copied out of the checkout."""
    copy = tmp_path_factory.mktemp("sources")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, copy / name)
    for folder in ("sse_onnx", "export", "models/default"):
        shutil.copytree(ROOT / folder, copy / folder, ignore=SKIP)
    return copy


def test_runtime_wheel_is_small_and_holds_only_the_runtime(sources: Path, tmp_path: Path) -> None:
    wheel = build_wheel(sources, tmp_path)
    size = wheel.stat().st_size
    assert size <= MAX_RUNTIME_WHEEL_BYTES, f"{wheel.name} is {size / 1e6:.1f} MB"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt")))
    assert {name.split("/")[0] for name in names} == {
        "sse_onnx",
        f"sse_onnx-{sse_onnx.__version__}.dist-info",
    }
    assert not [name for name in names if "sse_export" in name or name.endswith(".safetensors")]
    assert "sse_onnx/default_model/model_int8.onnx" in names
    assert b"sse-export = sse_onnx.export_command:main" in entry_points


def test_exporter_wheel_carries_the_exporter_and_the_default_checkpoint(
    sources: Path, tmp_path: Path
) -> None:
    wheel = build_wheel(sources / "export", tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = email.message_from_bytes(
            archive.read(next(n for n in names if n.endswith("dist-info/METADATA")))
        )
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt")))
    assert {"sse_export/cli.py", "sse_export/py.typed"} <= names
    checkpoint = {"model.safetensors", "tokenizer.json", "config.json", "README.md"}
    assert {f"sse_export/default_checkpoint/{name}" for name in checkpoint} <= names
    assert not [name for name in names if name.startswith("sse_onnx/")]
    assert {f"sse_export/js/{p.name}" for p in (ROOT / "export" / "js").glob("*.mjs")} <= names
    # The exporter is released with the runtime of the same version.
    assert f"sse-onnx=={sse_onnx.__version__}" in metadata.get_all("Requires-Dist")
    assert metadata["Version"] == sse_onnx.__version__
    assert b"[sse_onnx.commands]\nsse-export = sse_export.cli:main" in entry_points


def test_versions_agree() -> None:
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in Python 3.11 and newer")
    runtime = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    exporter = tomllib.loads((ROOT / "export" / "pyproject.toml").read_text())["project"]
    assert runtime["version"] == exporter["version"] == sse_onnx.__version__
    assert f"sse-onnx=={runtime['version']}" in exporter["dependencies"]


def test_sse_export_without_the_exporter_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(export_command, "entry_points", lambda **_: ())
    assert export_command.main(["--dim", "256"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "the exporter is not installed" in err and "pip install ./export" in err


def test_sse_export_runs_the_installed_exporter(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        export_command.main(["--help"])
    assert exit_info.value.code == 0
    assert "examples:" in capsys.readouterr().out
