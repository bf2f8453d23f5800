"""What one onnxruntime call costs from Python, beside what the model's graph costs.

The single-query latency target of the speed issue (p50 <= 20 us end to end) has to fit the
tokenizer, the graph call and the normalisation. This measures the floor under the graph call:
``session.run`` of a one-node Identity graph, against ``session.run`` of the model's own graph
on the same short query, both with the runtime's session options and 1 thread, and what the
numpy work after the call costs (p50 over interleaved rounds; the lowest round median is
reported, as the least disturbed by other load).

Usage::

    python bench/ort_floor.py [MODEL_DIR] [--write]    # default: the bundled model
"""

from __future__ import annotations

import time
from collections.abc import Callable

import harness
import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from sse_onnx import Encoder
from sse_onnx import folder as fmt
from sse_onnx.embeddings import normalize

QUERY = "what causes heart disease in older adults"


def p50_us(call: Callable[[], object], runs: int) -> float:
    for _ in range(runs // 10):
        call()
    times = np.empty(runs)
    for i in range(runs):
        started = time.perf_counter_ns()
        call()
        times[i] = time.perf_counter_ns() - started
    return float(np.median(times)) / 1000


def main() -> None:
    parser = harness.parser(__doc__, out=harness.RESULTS)
    parser.add_argument("model", nargs="?", help="exported folder (default: bundled model)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=4000)
    parser.add_argument("--write", action="store_true", help="also write OUT/ort_floor.json, .md")
    args = parser.parse_args()

    encoder = Encoder(args.model, threads=1)
    ids = encoder.tokenizer.encode_one(QUERY)[None]
    feeds = {fmt.INPUT_IDS: ids, fmt.ATTENTION_MASK: np.ones_like(ids)}
    model = encoder.session
    identity = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", [fmt.INPUT_IDS], ["out"])],
            "identity",
            [helper.make_tensor_value_info(fmt.INPUT_IDS, TensorProto.INT64, [None, None])],
            [helper.make_tensor_value_info("out", TensorProto.INT64, [None, None])],
        ),
        opset_imports=[helper.make_opsetid("", 17)],
    )
    # The runtime's options (sse_onnx/encoder.py, _open_session), with 1 thread.
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    options.enable_mem_pattern = True
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with_identity = ort.InferenceSession(
        identity.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    row = model.run([fmt.SENTENCE_EMBEDDING], feeds)[0]
    calls = {
        "one-node Identity graph": lambda: with_identity.run(["out"], {fmt.INPUT_IDS: ids}),
        f"model graph ({encoder.variant}, {encoder.dim}d)": lambda: model.run(
            [fmt.SENTENCE_EMBEDDING], feeds
        ),
        "model graph, then normalize()": lambda: normalize(
            model.run([fmt.SENTENCE_EMBEDDING], feeds)[0]
        ),
        "normalize() alone, same row": lambda: normalize(row),
        "Encoder.encode(query) end to end": lambda: encoder.encode(QUERY),
    }
    medians: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(args.rounds):
        for name, call in calls.items():
            medians[name].append(p50_us(call, args.runs))
    lowest = {name: min(values) for name, values in medians.items()}
    lines = [
        f"query {QUERY!r}: {ids.shape[1]} tokens; p50 us, lowest of {args.rounds} rounds",
        *(f"{name:40s} {us:7.1f}" for name, us in lowest.items()),
    ]
    print("\n".join(lines))
    if args.write:
        results = {"environment": harness.environment(), "query": QUERY, "p50_us": lowest}
        harness.write_results(args.out, "ort_floor", results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
