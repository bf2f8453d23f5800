"""How much the two stages of a 2-thread ``encode`` slow each other down, and why.

``Encoder(threads=2)`` runs a pipeline (``sse_onnx/pipeline.py``): one thread tokenizes and
pads a block of SciFact documents (the *prepare* stage) while the other makes the previous
block's graph calls (the *run* stage). Both let go of the GIL inside numpy and onnxruntime,
so on 2 cores the call can only be as fast as the slower stage runs beside the other. This
times each stage over the whole corpus (lowest of ``--rounds``), on one thread:

- alone;
- beside the other stage, looping on a second thread;
- beside numpy calls that compete for the memory system only (few calls, each letting go of
  the GIL for milliseconds): a stream of arithmetic over 32 MB, and random gathers of
  32-byte rows from a 32 MB table (the chunk table's access pattern, larger).

What a stage loses beside the memory-only loads is what the two cores' shared caches and
memory cost it; the rest of what it loses beside the other stage is the GIL handed back and
forth between the two stages' thousands of numpy and onnxruntime calls (each lets go of the
GIL and takes it back, waiting whenever the other thread holds it).

Usage::

    python bench/contention.py [--data DIR] [--rounds 5] [--docs N] [--write [--out DIR]]
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import harness
import numpy as np

from sse_onnx import Encoder
from sse_onnx.encoder import BLOCK_TEXTS

BATCH = 32


def lowest_ms(call: Callable[[], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - started)
    return best * 1e3


def stages(encoder: Encoder, texts: list[str]) -> tuple[Callable[[], None], Callable[[], None]]:
    """The two stages of ``encode`` over ``texts``, block by block, through the encoder's
    public seam: tokenize and plan every block; make the graph calls of every block."""
    starts = range(0, len(texts), BLOCK_TEXTS)
    plans = [encoder.plan(*encoder.tokenize(texts[s : s + BLOCK_TEXTS]), BATCH) for s in starts]
    out = np.empty((len(texts), encoder.dim), dtype=np.float32)

    def prepare() -> None:
        for start in starts:
            encoder.plan(*encoder.tokenize(texts[start : start + BLOCK_TEXTS]), BATCH)

    def run() -> None:
        for start, plan in zip(starts, plans, strict=True):
            encoder.run(plan, out[start : start + plan.texts])

    return prepare, run


def memory_loads() -> tuple[Callable[[], None], Callable[[], None]]:
    """Numpy work that competes for the memory system only: a 32 MB stream of arithmetic,
    and random gathers of 32-byte rows from a 32 MB table."""
    source = np.ones(1 << 23, dtype=np.float32)
    target = np.empty_like(source)
    rng = np.random.default_rng(0)
    table = rng.integers(0, 1 << 30, size=(1 << 20, 8), dtype=np.int32)
    rows = rng.integers(0, len(table), size=1 << 18)

    def stream() -> None:
        np.multiply(source, 1.0, out=target)
        np.add(target, source, out=target)

    def gathers() -> None:
        table.take(rows, axis=0)

    return stream, gathers


def beside(stage: Callable[[], None], background: Callable[[], None], rounds: int) -> float:
    """The lowest time of ``stage`` while ``background`` loops on another thread."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            background()

    helper = threading.Thread(target=loop, daemon=True)
    helper.start()
    time.sleep(0.05)
    try:
        return lowest_ms(stage, rounds)
    finally:
        stop.set()
        helper.join()


def main() -> None:
    parser = harness.parser(__doc__, out=harness.RESULTS, data=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--docs", type=int, default=None, help="the first N documents only")
    parser.add_argument(
        "--write", action="store_true", help="also write OUT/contention.json and .md"
    )
    args = parser.parse_args()
    texts = harness.scifact(args.data).doc_texts[: args.docs]
    encoder = Encoder(threads=1)
    encoder.encode(texts)  # the chunk cache warm, as in a long job
    prepare, run = stages(encoder, texts)
    stream, gathers = memory_loads()
    lines = [
        f"SciFact: {len(texts)} documents, blocks of {BLOCK_TEXTS}, lowest of {args.rounds}",
        "| stage | alone ms | beside the other stage | beside a numpy stream | beside gathers |",
        "|---|---|---|---|---|",
    ]
    print("\n".join(lines), flush=True)
    rows: dict[str, list[float]] = {}
    for name, stage, other in (("prepare", prepare, run), ("run", run, prepare)):
        alone = lowest_ms(stage, args.rounds)
        loaded = [beside(stage, load, args.rounds) for load in (other, stream, gathers)]
        rows[name] = [alone, *loaded]
        cells = " | ".join(f"{ms:.1f} ({ms / alone:.2f}x)" for ms in loaded)
        lines.append(f"| {name} | {alone:.1f} | {cells} |")
        print(lines[-1], flush=True)
    if args.write:
        results = {"environment": harness.environment(), "docs": len(texts), "ms": rows}
        harness.write_results(args.out, "contention", results, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
