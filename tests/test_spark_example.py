"""The README's Spark example runs as printed on a local Spark and gives Encoder's vectors."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT

pytest.importorskip("pyspark", reason="needs the spark extra: pip install -e '.[spark]'")
pq = pytest.importorskip("pyarrow.parquet")

from sse_onnx import Encoder  # noqa: E402


def readme_example() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(
        r"<!-- spark-example:begin -->\n```python\n(.*?)```\n<!-- spark-example:end -->",
        readme,
        re.DOTALL,
    )
    assert found, "README.md has no spark-example block"
    return found.group(1)


@pytest.mark.skipif(shutil.which("java") is None, reason="Spark needs a Java runtime")
def test_readme_spark_example(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    words = ["static", "embedding", "spark", "executor", "café", "東京", "3.14", "the", "a"]
    docs = [
        {
            "_id": f"s{i}",
            "title": " ".join(rng.choice(words, size=3)),
            "text": " ".join(rng.choice(words, size=rng.integers(0, 200))),
        }
        for i in range(300)
    ]
    (tmp_path / "corpus.jsonl").write_text(
        "".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8"
    )
    (tmp_path / "example.py").write_text(readme_example(), encoding="utf-8")
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    subprocess.run(
        [sys.executable, "example.py"], cwd=tmp_path, env=env, check=True, capture_output=True
    )

    table = pq.read_table(tmp_path / "embeddings.parquet")
    ids = table.column("id").to_pylist()
    assert sorted(ids) == sorted(d["_id"] for d in docs)  # every document, once
    by_id = dict(zip(ids, table.column("embedding").to_pylist(), strict=True))
    got = np.array([by_id[d["_id"]] for d in docs], dtype=np.float32)
    expected = Encoder().encode([f"{d['title']} {d['text']}" for d in docs])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
