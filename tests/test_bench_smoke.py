"""The speed benchmark's smoke mode runs end to end and writes its outputs (never timed here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import EVAL_DATA, ROOT


@pytest.mark.skipif(
    not (EVAL_DATA / "retrieval" / "scifact").is_dir(),
    reason=f"evaluation data not found at {EVAL_DATA}",
)
def test_speed_smoke_writes_results(tmp_path: Path) -> None:
    readme = (ROOT / "bench" / "README.md").read_text(encoding="utf-8")
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "speed.py"),
            "--smoke",
            "--out",
            str(tmp_path),
            "--data",
            str(EVAL_DATA),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    results = json.loads((tmp_path / "speed.json").read_text(encoding="utf-8"))
    (row,) = results["sse_onnx"]
    assert (row["variant"], row["dim"], row["threads"]) == ("int8", 64, 1)
    for key in ("docs_per_s", "queries_per_s", "p50_us", "graph_share", "file_bytes"):
        assert row[key] > 0, key
    assert all(c["min_cosine"] >= 0.9999 for c in results["competitors"])
    assert "| int8 | 64 | 1 |" in (tmp_path / "speed.md").read_text(encoding="utf-8")
    assert (ROOT / "bench" / "README.md").read_text(encoding="utf-8") == readme


@pytest.mark.skipif(
    not (EVAL_DATA / "retrieval" / "scifact").is_dir(),
    reason=f"evaluation data not found at {EVAL_DATA}",
)
def test_contention_prints_both_stages() -> None:
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "contention.py"),
            "--data",
            str(EVAL_DATA),
            "--docs",
            "300",
            "--rounds",
            "1",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| prepare", "| run"))]
    assert len(rows) == 2
    for row in rows:
        assert row.count("x)") == 3, row  # a ratio beside the other stage and each load
