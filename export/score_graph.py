"""Write the search index's scoring graph (``sse_onnx/index/scores.onnx``).

The index keeps its vectors as int8 and scores a query against all of them with one
``MatMulInteger`` (uint8 documents x int8 queries -> int32), onnxruntime's integer kernel: at a
million 256-d rows it runs ~6x faster than numpy converting the rows to float32 blocks
(bench/results/search.md). The runtime ships the graph as a file, written here with onnx (a
dependency of the exporter, not of the runtime); ``tests/test_index_scores.py`` checks that the
committed file is byte for byte what this writes.

Example::

    python -m sse_export.score_graph sse_onnx/index/scores.onnx
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import onnx
from onnx import TensorProto, helper

__all__ = ["main", "score_graph"]

#: Names the runtime feeds and reads (sse_onnx/index/vectors.py reads the same three).
DOCUMENTS, QUERIES, SCORES = "documents", "queries", "scores"


def score_graph() -> bytes:
    """The serialised graph: ``scores[n, m] = documents[n, d] @ queries[d, m]`` in int32."""
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", [DOCUMENTS, QUERIES], [SCORES])],
        "sse_index_scores",
        [
            helper.make_tensor_value_info(DOCUMENTS, TensorProto.UINT8, ["rows", "dim"]),
            helper.make_tensor_value_info(QUERIES, TensorProto.INT8, ["dim", "queries"]),
        ],
        [helper.make_tensor_value_info(SCORES, TensorProto.INT32, ["rows", "queries"])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="sse-export"
    )
    # IR 8 (onnxruntime >= 1.14 reads it): the runtime admits onnxruntime 1.20 and later.
    model.ir_version = 8
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", type=Path, help="where to write the graph")
    args = parser.parse_args(argv)
    args.output.write_bytes(score_graph())
    return 0


if __name__ == "__main__":
    sys.exit(main())
