"""What one onnxruntime call costs from Python, beside what the model's graph costs.

The single-query latency target of the speed issue (p50 <= 20 us end to end) has to fit the
tokenizer, the graph call and the normalisation. This measures the floor under the graph call:
``session.run`` of a one-node Identity graph, against ``session.run`` of the model's own graph
on the same short query, both with the runtime's session options and 1 thread, and what the
numpy work after the call costs (p50 over interleaved rounds; the lowest round median is
reported, as the least disturbed by other load).

Usage::

    python bench/ort_floor.py [MODEL_DIR]    # default: the bundled model
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

from sse_onnx import Encoder
from sse_onnx import format as fmt
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="exported folder (default: bundled model)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=4000)
    args = parser.parse_args()

    encoder = Encoder(args.model, threads=1)
    ids = encoder._tokenizer.encode_one(QUERY)[None]
    feeds = {fmt.INPUT_IDS: ids, fmt.ATTENTION_MASK: np.ones_like(ids)}
    model = encoder._session
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
    print(f"query {QUERY!r}: {ids.shape[1]} tokens; p50 us, lowest of {args.rounds} rounds")
    for name, values in medians.items():
        print(f"{name:40s} {min(values):7.1f}")


if __name__ == "__main__":
    main()
