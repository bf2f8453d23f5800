"""The measurements of ``bench/speed.py`` on sse-onnx: timing helpers, the reference check,
throughput and latency of one encoder, and the figures of fresh processes."""

from __future__ import annotations

import gc
import json
import logging
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sse_onnx import Encoder
from sse_onnx.folder import VARIANT_FILES

logger = logging.getLogger("speed")

FloatArray = npt.NDArray[np.float32]
Embed = Callable[[list[str]], FloatArray]

BATCH = 32
#: Passes over the queries per timed run of queries/s.
QUERY_PASSES = 10
#: Calls on the queries per runtime and round in the alternating runs of the targets.
DUEL_QUERY_PASSES = 30
MIN_COSINE = 0.9999
#: Label of the row measured with ``Encoder()``'s default thread count.
DEFAULT_THREADS = "default"

PROCESS_SCRIPT = r"""
import json, sys, time
started = time.perf_counter()
import sse_onnx
import_s = time.perf_counter() - started
folder, variant, texts_file = sys.argv[1], sys.argv[2], sys.argv[3]
with open(texts_file, encoding="utf-8") as handle:
    texts = json.load(handle)

def status(key):
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(key):
                return int(line.split()[1]) * 1024

with open("/proc/self/clear_refs", "w") as handle:  # resets the peak (VmHWM), Linux >= 4.0
    handle.write("5")
base = status("VmRSS:")
started = time.perf_counter()
encoder = sse_onnx.Encoder(folder, variant=variant)
construct_s = time.perf_counter() - started
constructed, construct_peak = status("VmRSS:"), status("VmHWM:")
encoder.encode(texts, batch_size=32, show_progress_bar=False)
print(json.dumps({"import_s": import_s, "construct_s": construct_s, "base": base,
                  "constructed": constructed, "construct_peak": construct_peak,
                  "peak": status("VmHWM:")}))
"""


@dataclass(frozen=True)
class Texts:
    """The measured texts: SciFact documents and queries."""

    docs: list[str]
    queries: list[str]


class TimedRun:
    """Wraps an encoder's graph call (``Encoder.graph_runner``) and adds up its time."""

    def __init__(self, run: Callable[..., Any]) -> None:
        self.run = run
        self.seconds = 0.0
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            return self.run(*args)
        finally:
            self.seconds += time.perf_counter() - started
            self.calls += 1


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``repeats`` calls, after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def latencies_us(
    encode_one: Callable[[str], object], queries: Sequence[str], passes: int
) -> npt.NDArray[np.float64]:
    """Microseconds of each single-query call over ``passes`` passes of the queries."""
    out = []
    for _ in range(passes):
        for query in queries:
            started = time.perf_counter()
            encode_one(query)
            out.append((time.perf_counter() - started) * 1e6)
    return np.asarray(out)


def batched(embed_batch: Callable[[list[str]], FloatArray], size: int = BATCH) -> Embed:
    """An ``embed(texts)`` that calls ``embed_batch`` on batches of ``size`` texts."""

    def embed(texts: list[str]) -> FloatArray:
        parts = [embed_batch(texts[i : i + size]) for i in range(0, len(texts), size)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)

    return embed


def check(name: str, got: FloatArray, expected: FloatArray) -> float:
    """Min cosine of ``got`` with the reference; stops the run below :data:`MIN_COSINE`."""
    cosines = np.einsum("ij,ij->i", got.astype(np.float64), expected.astype(np.float64))
    nonzero = np.linalg.norm(expected, axis=1) > 0
    worst = float(cosines[nonzero].min(initial=1.0))
    if worst < MIN_COSINE or got.shape != expected.shape:
        raise SystemExit(
            f"{name} does not reproduce the PyTorch reference: min cosine {worst:.6f} < "
            f"{MIN_COSINE} (shapes {got.shape} vs {expected.shape}); the comparison is void."
        )
    return worst


def measure_throughput(
    name: str,
    embed: Embed,
    encode_one: Callable[[str], FloatArray],
    texts: Texts,
    reference: dict[str, FloatArray],
    repeats: int,
    passes: int,
) -> dict[str, Any]:
    """docs/s, queries/s, single-query latency, and agreement with the reference."""
    singles = np.vstack([encode_one(query) for query in texts.queries])
    cosine = min(
        check(f"{name} (docs)", embed(texts.docs), reference["docs"]),
        check(f"{name} (queries)", embed(texts.queries), reference["queries"]),
        check(f"{name} (one query at a time)", singles, reference["queries"]),
    )
    docs_s = median_seconds(lambda: embed(texts.docs), repeats)
    # The queries take milliseconds: time several passes so that one preemption cannot rule.
    queries_s = median_seconds(lambda: [embed(texts.queries) for _ in range(QUERY_PASSES)], repeats)
    latency = latencies_us(encode_one, texts.queries, passes) if passes else np.zeros(1)
    return {
        "runtime": name,
        "docs_per_s": len(texts.docs) / docs_s,
        "queries_per_s": QUERY_PASSES * len(texts.queries) / queries_s,
        "p50_us": float(np.percentile(latency, 50)),
        "p99_us": float(np.percentile(latency, 99)),
        "min_cosine": cosine,
    }


def measure_sse_onnx(
    folder: Path,
    variant: str,
    threads: int | None,
    texts: Texts,
    reference: dict[str, FloatArray],
    repeats: int,
    passes: int,
) -> dict[str, Any]:
    """End-to-end and ONNX-stage figures of one variant at one thread count (``None``: the
    default of ``Encoder()``)."""
    encoder = Encoder(folder, variant=variant, threads=threads)
    cold = latencies_us(  # first sight of every chunk
        lambda query: encoder.encode(query, show_progress_bar=False), texts.queries, 1
    )

    def embed(batch: list[str]) -> FloatArray:
        return encoder.encode(batch, batch_size=BATCH, show_progress_bar=False)

    def encode_one(query: str) -> FloatArray:
        return encoder.encode(query, show_progress_bar=False)

    row = measure_throughput("sse-onnx", embed, encode_one, texts, reference, repeats, passes)
    # Then the ONNX stage of the very same calls, through a timing stand-in for the graph
    # call (summed over threads: with 2 threads it can exceed the wall time).
    timed = TimedRun(encoder.graph_runner)
    encoder.graph_runner = timed
    totals, graphs = [], []
    for _ in range(repeats):
        timed.seconds = 0.0
        started = time.perf_counter()
        embed(texts.docs)
        totals.append(time.perf_counter() - started)
        graphs.append(timed.seconds)
    timed.seconds, timed.calls = 0.0, 0
    latencies_us(encode_one, texts.queries, passes)
    return {
        **row,
        "variant": variant,
        "threads": DEFAULT_THREADS if threads is None else threads,
        "threads_used": encoder.threads,
        "p50_cold_us": float(np.percentile(cold, 50)),
        "graph_share": statistics.median(g / t for g, t in zip(graphs, totals, strict=True)),
        "graph_docs_per_s": len(texts.docs) / statistics.median(graphs),
        "graph_query_us": timed.seconds / max(timed.calls, 1) * 1e6,
        "file_bytes": (folder / VARIANT_FILES[variant]).stat().st_size,
    }


@contextmanager
def paused_gc() -> Iterator[None]:
    """Python's cyclic garbage collector paused, as ``timeit`` does: otherwise a collection
    that one runtime's objects made due lands in whichever call allocates next (the rival
    keeps a list per cached word, which a full collection walks)."""
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def measure_process(folder: Path, variant: str, texts_file: Path, runs: int) -> dict[str, Any]:
    """Import, construction and memory figures, each from fresh processes (medians)."""
    if not Path("/proc/self/clear_refs").exists():
        logger.warning("no /proc/self/clear_refs: process figures need Linux; skipped")
        return {}
    samples = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", PROCESS_SCRIPT, str(folder), variant, str(texts_file)],
            capture_output=True,
            text=True,
            check=True,
        )
        samples.append(json.loads(done.stdout))

    def med(key: Callable[[dict[str, Any]], float]) -> float:
        return statistics.median(key(sample) for sample in samples)

    return {
        "import_ms": med(lambda s: s["import_s"]) * 1e3,
        "construct_ms": med(lambda s: s["construct_s"]) * 1e3,
        "rss_construct_mb": med(lambda s: s["constructed"] - s["base"]) / 2**20,
        "rss_peak_growth_mb": med(lambda s: s["peak"] - s["base"]) / 2**20,
        "rss_encode_growth_mb": med(lambda s: s["peak"] - s["constructed"]) / 2**20,
    }
