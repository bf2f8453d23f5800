"""The committed scoring graph (sse_onnx/index/scores.onnx): what the exporter writes, and right.

The runtime ships the graph as a file; ``python -m sse_export.score_graph`` writes it with onnx.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from sse_onnx.index import vectors

COMMITTED = Path(__file__).resolve().parents[1] / "sse_onnx" / "index" / "scores.onnx"


def test_committed_graph_is_what_the_exporter_writes() -> None:
    pytest.importorskip("onnx")
    from sse_export.score_graph import score_graph

    assert COMMITTED.read_bytes() == score_graph()
    assert vectors.SCORE_GRAPH == COMMITTED  # the file the runtime loads


@pytest.mark.parametrize(("rows", "dim", "queries"), [(1, 1, 1), (37, 256, 3), (5, 16, 0)])
def test_committed_graph_multiplies_exactly(rows: int, dim: int, queries: int) -> None:
    """uint8 documents x int8 queries, in int32, at the extremes of both types."""
    rng = np.random.default_rng(rows)
    documents = rng.integers(0, 256, (rows, dim), dtype=np.uint8)
    documents[0] = 255
    query = rng.integers(-128, 128, (dim, queries), dtype=np.int8)
    if queries:
        query[:, 0] = -128
    session = ort.InferenceSession(str(COMMITTED), providers=["CPUExecutionProvider"])
    (scores,) = session.run(["scores"], {"documents": documents, "queries": query})
    assert scores.dtype == np.int32 and scores.shape == (rows, queries)
    expected = documents.astype(np.int64) @ query.astype(np.int64)
    np.testing.assert_array_equal(scores, expected)
