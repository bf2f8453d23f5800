"""Graph formulations and onnxruntime session options, measured on the ONNX stage alone.

The default checkpoint's int8 table at 256 dims, the SciFact corpus tokenized once by HF, and
the Encoder's batching (length-sorted, 32 texts, at most ``budget`` padded tokens per call).
Each candidate's outputs are checked against the exported graph's (max abs diff 1e-4).

- Graphs: the masked sum as ``Mul`` then ``ReduceSum`` over ``[batch, length, dim]`` (the
  graph before), as a batched ``MatMul`` (the graph now, :func:`sse_export.graph.build_graph`),
  and over flat ids with segment ids through ``ScatterND(reduction="add")`` (no padding; it
  would change the graph contract), each at several token budgets.
- Session options of the MatMul graph, one change at a time from onnxruntime's defaults:
  graph optimization level, CPU memory arena, memory pattern, ``allow_spinning``, threads.

Example::

    python bench/alternatives.py --out bench/results
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import statistics
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import harness
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from tokenizers import Tokenizer

from sse_export import export
from sse_onnx import folder as fmt

logger = logging.getLogger("alternatives")

BATCH = 32
BUDGETS = (1024, 2048, 4096, 8192, 32768)
QUERY = "what is the role of apoptosis in cancer"

Ids = npt.NDArray[np.int64]


class Corpus:
    """Token ids of the corpus, flat, with the Encoder's length-sorted batches per budget."""

    def __init__(self, ids: list[list[int]]) -> None:
        self.lengths = np.array([len(seq) for seq in ids], dtype=np.int64)
        self.flat = np.array([t for seq in ids for t in seq] + [0], dtype=np.int64)
        self.ends = np.cumsum(self.lengths)
        self.starts = self.ends - self.lengths
        self.order = np.argsort(self.lengths, kind="stable")

    def batches(self, budget: int) -> list[npt.NDArray[np.intp]]:
        out, start = [], 0
        while start < len(self.order):
            stop = min(start + BATCH, len(self.order))
            while stop - start > 1 and (stop - start) * self.lengths[self.order[stop - 1]] > budget:
                stop -= 1
            out.append(self.order[start:stop])
            start = stop
        return out

    def padded(self, rows: npt.NDArray[np.intp]) -> dict[str, Ids]:
        width = max(1, int(self.lengths[rows].max()))
        positions = self.starts[rows, None] + np.arange(width)
        mask = positions < self.ends[rows, None]
        ids = np.where(mask, self.flat.take(positions, mode="clip"), 0)
        return {fmt.INPUT_IDS: ids, fmt.ATTENTION_MASK: mask.astype(np.int64)}

    def segments(self, rows: npt.NDArray[np.intp]) -> dict[str, Any]:
        ids = np.concatenate([self.flat[self.starts[r] : self.ends[r]] for r in rows])
        segment = np.repeat(np.arange(len(rows)), self.lengths[rows])
        return {"ids": ids, "segment": segment[:, None], "lengths": self.lengths[rows]}


def masked_sum_graph(model: onnx.ModelProto, kind: str) -> onnx.ModelProto:
    """The int8 graph's lookup with another masked sum (``reducesum`` or ``scatter``)."""
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    q, scales = inits["table_int8"], inits["row_scales"]
    head = [numpy_helper.from_array(inits[k], k) for k in ("alpha", "beta", "bias")]
    consts = [
        numpy_helper.from_array(np.array([1], np.int64), "axis_1"),
        numpy_helper.from_array(np.array([2], np.int64), "axis_2"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(q, "table_int8"),
        numpy_helper.from_array(scales, "row_scales"),
    ]
    tail = [
        helper.make_node("Max", ["count", "one"], ["count_safe"]),
        helper.make_node("Div", ["sum", "count_safe"], ["mean"]),
        helper.make_node("Mul", ["mean", "alpha"], ["scaled"]),
        helper.make_node("Add", ["scaled", "bias"], ["shifted"]),
        helper.make_node("Tanh", ["shifted"], ["squashed"]),
        helper.make_node("Mul", ["squashed", "beta"], ["out"]),
    ]
    if kind == "reducesum":
        ids, mask = fmt.INPUT_IDS, fmt.ATTENTION_MASK
        nodes = [
            helper.make_node("Gather", ["table_int8", ids], ["rows_int8"]),
            helper.make_node("Cast", ["rows_int8"], ["rows"], to=TensorProto.FLOAT),
            helper.make_node("Gather", ["row_scales", ids], ["token_scale"]),
            helper.make_node("Cast", [mask], ["maskf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["maskf", "token_scale"], ["weight"]),
            helper.make_node("Unsqueeze", ["weight", "axis_2"], ["weight_3d"]),
            helper.make_node("Mul", ["rows", "weight_3d"], ["weighted"]),
            helper.make_node("ReduceSum", ["weighted", "axis_1"], ["sum"], keepdims=0),
            helper.make_node("ReduceSum", ["maskf", "axis_1"], ["count"], keepdims=1),
        ]
        inputs = [
            helper.make_tensor_value_info(n, TensorProto.INT64, ["b", "t"]) for n in (ids, mask)
        ]
    else:
        nodes = [
            helper.make_node("Gather", ["table_int8", "ids"], ["rows_int8"]),
            helper.make_node("Cast", ["rows_int8"], ["rows"], to=TensorProto.FLOAT),
            helper.make_node("Gather", ["row_scales", "ids"], ["token_scale"]),
            helper.make_node("Unsqueeze", ["token_scale", "axis_1"], ["weight_2d"]),
            helper.make_node("Mul", ["rows", "weight_2d"], ["weighted"]),
            helper.make_node("Shape", ["lengths"], ["batch"]),
            helper.make_node("Shape", ["alpha"], ["width"]),
            helper.make_node("Concat", ["batch", "width"], ["sum_shape"], axis=0),
            helper.make_node("ConstantOfShape", ["sum_shape"], ["zeros"]),
            helper.make_node(
                "ScatterND", ["zeros", "segment", "weighted"], ["sum"], reduction="add"
            ),
            helper.make_node("Cast", ["lengths"], ["count_1d"], to=TensorProto.FLOAT),
            helper.make_node("Unsqueeze", ["count_1d", "axis_1"], ["count"]),
        ]
        inputs = [
            helper.make_tensor_value_info("ids", TensorProto.INT64, ["n"]),
            helper.make_tensor_value_info("segment", TensorProto.INT64, ["n", 1]),
            helper.make_tensor_value_info("lengths", TensorProto.INT64, ["b"]),
        ]
    graph = helper.make_graph(
        nodes + tail,
        kind,
        inputs,
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        initializer=consts + head,
    )
    built = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    built.ir_version = 8
    return built


def session(model: bytes | str, **options: Any) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.get("threads", 1)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = options.get("opt", ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    so.enable_cpu_mem_arena = options.get("arena", True)
    so.enable_mem_pattern = options.get("pattern", True)
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", options.get("spin", "1"))
    return ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])


def measure(
    run: Callable[[npt.NDArray[np.intp]], npt.NDArray[np.float32]],
    corpus: Corpus,
    budget: int,
    single: Callable[[], object],
    repeats: int,
) -> tuple[float, float, npt.NDArray[np.float32]]:
    """Graph-only docs/s (median of ``repeats`` passes) and single-query p50 us."""
    batches = corpus.batches(budget)
    out = np.empty((len(corpus.lengths), 256), dtype=np.float32)
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        for rows in batches:
            out[rows] = run(rows)
        times.append(time.perf_counter() - started)
    for _ in range(200):
        single()
    single_us = statistics.median(timeit.repeat(single, number=1, repeat=2000)) * 1e6
    return len(corpus.lengths) / statistics.median(times[1:]), single_us, out


#: Session options of the MatMul graph, one change at a time from onnxruntime's defaults.
OPTION_CHANGES: dict[str, dict[str, Any]] = {
    "onnxruntime defaults (ENABLE_ALL, arena, memory pattern, spinning)": {},
    "graph optimization BASIC": {"opt": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC},
    "graph optimization off": {"opt": ort.GraphOptimizationLevel.ORT_DISABLE_ALL},
    "CPU memory arena off": {"arena": False},
    "memory pattern off": {"pattern": False},
    "allow_spinning off": {"spin": "0"},
    "Encoder: spinning off": {"spin": "0"},
    "2 threads, onnxruntime defaults": {"threads": 2},
    "2 threads, Encoder settings": {"threads": 2, "spin": "0"},
}


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    data = harness.scifact(args.data)
    with tempfile.TemporaryDirectory(prefix="sse-alternatives-") as tmp:
        export(args.model, output=tmp, dim=256, variants=["int8"], report=False)
        model_path = str(Path(tmp) / fmt.VARIANT_FILES["int8"])
        hf = Tokenizer.from_file(str(Path(tmp) / fmt.TOKENIZER_FILE))
        hf.no_padding()
        hf.no_truncation()
        corpus = Corpus([e.ids for e in hf.encode_batch(data.doc_texts, add_special_tokens=False)])
        query = np.array([hf.encode(QUERY, add_special_tokens=False).ids], dtype=np.int64)
        graph_rows = measure_graphs(onnx.load(model_path), corpus, query, args)
        option_rows = measure_options(model_path, corpus, query, args.repeats)
    return {
        "load_average": os.getloadavg(),
        "docs": len(corpus.lengths),
        "graphs": graph_rows,
        "session_options": option_rows,
    }


def query_feeds(query: Ids) -> dict[str, Ids]:
    return {fmt.INPUT_IDS: query, fmt.ATTENTION_MASK: np.ones_like(query)}


def graph_calls(
    name: str, sess: Any, corpus: Corpus, query: Ids
) -> tuple[Callable[[Any], Any], Callable[[], Any]]:
    """A graph's call on a batch of corpus rows, and its call on the query."""
    if name.startswith("flat"):
        one = {
            "ids": query[0],
            "segment": np.zeros((query.size, 1), np.int64),
            "lengths": np.array([query.size]),
        }
        return (
            lambda rows: sess.run(["out"], corpus.segments(rows))[0],
            functools.partial(sess.run, ["out"], one),
        )
    output = fmt.SENTENCE_EMBEDDING if name.endswith("(now)") else "out"
    return (
        lambda rows: sess.run([output], corpus.padded(rows))[0],
        functools.partial(sess.run, [output], query_feeds(query)),
    )


def measure_graphs(
    now: Any, corpus: Corpus, query: Ids, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """Each graph formulation at each token budget, checked against the first one measured."""
    graphs: dict[str, Any] = {
        "padded, Mul + ReduceSum (before)": masked_sum_graph(now, "reducesum"),
        "padded, MatMul (now)": now,
        "flat ids + ScatterND add": masked_sum_graph(now, "scatter"),
    }
    reference = None
    rows = []
    for name, model in graphs.items():
        run, single = graph_calls(name, session(model.SerializeToString()), corpus, query)
        for budget in args.budgets:
            docs_s, single_us, out = measure(run, corpus, budget, single, args.repeats)
            if reference is None:
                reference = out
            diff = float(np.abs(out - reference).max())
            if diff > 1e-4:
                raise SystemExit(f"{name} at budget {budget} differs by {diff:.2e}")
            logger.info("%s budget %d: %.0f docs/s, %.1f us", name, budget, docs_s, single_us)
            rows.append(
                {"graph": name, "budget": budget, "docs_per_s": docs_s, "single_us": single_us}
            )
    return rows


def measure_options(
    model_path: str, corpus: Corpus, query: Ids, repeats: int
) -> list[dict[str, Any]]:
    """The MatMul graph at budget 4096 under each of :data:`OPTION_CHANGES`."""
    rows = []
    for name, options in OPTION_CHANGES.items():
        sess = session(model_path, **options)
        run, single = graph_calls("padded, MatMul (now)", sess, corpus, query)
        docs_s, single_us, _ = measure(run, corpus, 4096, single, repeats)
        logger.info("%s: %.0f docs/s, %.1f us", name, docs_s, single_us)
        rows.append({"options": name, "docs_per_s": docs_s, "single_us": single_us})
    return rows


def markdown(results: dict[str, Any]) -> str:
    lines = [
        f"ONNX stage only, SciFact corpus ({results['docs']} docs), int8 256d, 1 thread unless "
        f"stated; load average {results['load_average'][0]:.2f} at the end.",
        "",
        "| graph | token budget | docs/s | one query us |",
        "|---|---|---|---|",
    ]
    for r in results["graphs"]:
        lines.append(
            f"| {r['graph']} | {r['budget']} | {r['docs_per_s']:,.0f} | {r['single_us']:.1f} |"
        )
    lines += [
        "",
        "| session options (MatMul graph, budget 4096) | docs/s | one query us |",
        "|---|---|---|",
    ]
    for r in results["session_options"]:
        lines.append(f"| {r['options']} | {r['docs_per_s']:,.0f} | {r['single_us']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    harness.setup_logging()
    parser = harness.parser(__doc__, model=True, data=True)
    parser.add_argument("--budgets", type=int, nargs="+", default=list(BUDGETS))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    results = run_all(args)
    table = markdown(results)
    harness.write_results(args.out, "alternatives", results, table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
