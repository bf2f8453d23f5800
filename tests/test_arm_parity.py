"""tests/arm/parity.py, the checker of tests/arm/run.sh: it passes equal outputs and names every
difference.

The emulated aarch64 run itself is too slow for the suite (see the README's ARM section); this
keeps its two steps working against the runtime on this machine.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def parity() -> ModuleType:
    path = ROOT / "tests" / "arm" / "parity.py"
    spec = importlib.util.spec_from_file_location("arm_parity", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def outputs(
    tmp_path_factory: pytest.TempPathFactory,
    parity: ModuleType,
    tiny_checkpoint: Path,
    exported: Callable[..., Path],
) -> Path:
    folder = exported(tiny_checkpoint, None, ("fp32", "int8"))
    work = tmp_path_factory.mktemp("arm-parity")
    texts = {
        "adversarial": ["", "Café naïve 東京!", "the cat sat " * 400],  # the last: 1,200 tokens
        "queries": ["the cat", "static embeddings", "dog on a mat"],
        "corpus": [f"{word} sat on the mat" for word in ("cat", "dog", "a", "b", "c")] * 3,
    }
    (work / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    parity.embed(folder, work / "texts.json", ["int8"], work / "outputs.npz")
    return work / "outputs.npz"


def test_equal_outputs_pass(parity: ModuleType, outputs: Path, tmp_path: Path) -> None:
    assert parity.compare(outputs, outputs, tmp_path / "report.json")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["passed"]
    names = [c["check"] for c in report["checks"]]
    assert "top-10 documents, int8: queries that differ" in names
    assert "int8 normalised, longer" in names  # the long text is in its own bucket


@pytest.mark.parametrize(
    ("key", "change", "failing"),
    [
        ("ids_runtime", lambda a: a.__setitem__(5, a[5] + 1), "candidate runtime"),
        ("ids_hf", lambda a: a.__setitem__(0, a[0] + 1), "candidate hf"),
        ("raw_fp32", lambda a: a.__setitem__((1, 0), a[1, 0] + 2e-5), "fp32 raw outputs"),
        ("raw_int8", lambda a: a.__setitem__((1, 0), a[1, 0] + 1e-3), "int8 normalised, <1000"),
        ("raw_int8", lambda a: a.__setitem__((2, 0), a[2, 0] + 1e-2), "int8 normalised, longer"),
        ("top_int8", lambda a: a.__setitem__((0, [0, 1]), a[0, [1, 0]]), "top-10 documents"),
    ],
)
def test_each_difference_fails_its_check(
    parity: ModuleType,
    outputs: Path,
    tmp_path: Path,
    key: str,
    change: Callable[[np.ndarray], None],
    failing: str,
) -> None:
    arrays = dict(np.load(outputs))
    arrays[key] = arrays[key].copy()
    change(arrays[key])
    np.savez(tmp_path / "candidate.npz", **arrays)
    assert not parity.compare(outputs, tmp_path / "candidate.npz", tmp_path / "report.json")
    failed = [c["check"] for c in json.loads((tmp_path / "report.json").read_text())["checks"]
              if not c["passed"]]  # fmt: skip
    assert len(failed) == 1 and failing in failed[0], failed


def test_outputs_of_other_texts_are_refused(
    parity: ModuleType, outputs: Path, tmp_path: Path
) -> None:
    arrays = dict(np.load(outputs))
    meta = json.loads(str(arrays["meta"]))
    arrays["meta"] = np.array(json.dumps({**meta, "texts_sha256": "0" * 64}))
    np.savez(tmp_path / "candidate.npz", **arrays)
    with pytest.raises(SystemExit, match="come from different texts"):
        parity.compare(outputs, tmp_path / "candidate.npz", None)


def test_without_scifact_the_adversarial_set_alone(
    parity: ModuleType,
    tiny_checkpoint: Path,
    exported: Callable[..., Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`run.sh --ci` without the evaluation data: one line says so, the rest still compares."""
    monkeypatch.setenv("SSE_DATA", str(tmp_path / "absent"))
    with pytest.raises(SystemExit, match="SciFact is absent"):
        parity.prepare(tmp_path / "texts.json")
    parity.prepare(tmp_path / "texts.json", scifact_optional=True)
    skipped = [line for line in capsys.readouterr().out.splitlines() if "SciFact" in line]
    assert len(skipped) == 1 and "SKIPPED" in skipped[0] and "absent" in skipped[0], skipped
    texts = json.loads((tmp_path / "texts.json").read_text(encoding="utf-8"))
    assert texts["adversarial"] and texts["queries"] == texts["corpus"] == []

    folder = exported(tiny_checkpoint, None, ("fp32", "int8"))
    parity.embed(folder, tmp_path / "texts.json", ["int8"], tmp_path / "outputs.npz")
    assert not [key for key in np.load(tmp_path / "outputs.npz").files if key.startswith("top_")]
    assert parity.compare(tmp_path / "outputs.npz", tmp_path / "outputs.npz", None)
