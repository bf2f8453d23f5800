"""The alternating runs of ``bench/speed.py`` that the targets are stated on: sse-onnx and
static-embed-runner take turns, so that a change of machine load hits both alike."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from speed_competitors import Competitor
from speed_measure import (
    BATCH,
    DEFAULT_THREADS,
    DUEL_QUERY_PASSES,
    Embed,
    Texts,
    latencies_us,
    paused_gc,
)

from sse_onnx import Encoder


def throughput_duel(
    folder: Path,
    variant: str,
    rival: Competitor,
    sizes: Sequence[int],
    texts: Texts,
    rounds: int,
) -> dict[str, dict[str, float]]:
    """docs/s and queries/s of sse-onnx at 1 and 2 threads and at its default, and of a rival,
    in alternating runs: the docs once per runtime per round, the queries one call of all
    300 per runtime per turn, in an order shuffled for each round and turn; ``rounds`` rounds,
    ``rounds * DUEL_QUERY_PASSES`` turns. Medians of the times.

    Alternating makes the ratios the targets name robust to the load of a shared machine
    drifting during the run. The three encoders share one tokenizer (one chunk cache), so
    that together they crowd the CPU caches no more than one encoder does. The rival runs at
    each of ``sizes`` (texts per call) and is reported at its best for docs and for queries.
    """
    first = Encoder(folder, variant=variant, threads=1)

    def ours(threads: int | None) -> Embed:
        encoder = first if threads == 1 else Encoder(folder, variant=variant, threads=threads)
        encoder.tokenizer = first.tokenizer
        return lambda batch: encoder.encode(batch, batch_size=BATCH, show_progress_bar=False)

    runs: dict[str, tuple[Embed, Embed]] = {
        name: (embed, embed)
        for name, embed in (("1", ours(1)), ("2", ours(2)), (DEFAULT_THREADS, ours(None)))
    }
    for size in sizes:
        embed = rival.factory(size)
        runs[f"rival@{size}"] = (embed, embed)
    seconds: dict[str, dict[str, list[float]]] = {
        name: {"docs": [], "queries": []} for name in runs
    }
    for docs, queries in runs.values():  # warm-up: caches filled, code paths taken
        docs(texts.docs)
        queries(texts.queries)
    names = list(runs)
    shuffled = np.random.default_rng(0).permutation  # a new order each round and turn
    with paused_gc():
        for _ in range(rounds):
            for name in shuffled(names):
                started = time.perf_counter()
                runs[name][0](texts.docs)
                seconds[name]["docs"].append(time.perf_counter() - started)
                gc.collect()
        # A call on the queries takes milliseconds: alternating call by call, a preemption by
        # another process lands on one call of one runtime, which the median then drops. The
        # order is shuffled too: what ran just before a call changes its time (a call right
        # after the rival's ran ~20% slower in one test), and in a fixed cycle each runtime
        # would always follow the same one.
        for turn in range(rounds * DUEL_QUERY_PASSES):
            for name in shuffled(names):
                started = time.perf_counter()
                runs[name][1](texts.queries)
                seconds[name]["queries"].append(time.perf_counter() - started)
            if turn % DUEL_QUERY_PASSES == 0:
                gc.collect()
    rates = {
        name: {
            "docs_per_s": len(texts.docs) / statistics.median(times["docs"]),
            "queries_per_s": len(texts.queries) / statistics.median(times["queries"]),
        }
        for name, times in seconds.items()
    }
    theirs = [rates.pop(f"rival@{size}") for size in sizes]
    rates["static-embed-runner"] = {
        key: max(rate[key] for rate in theirs) for key in ("docs_per_s", "queries_per_s")
    }
    return rates


def latency_duel(
    folder: Path, variant: str, rival: Competitor, queries: Sequence[str], rounds: int
) -> dict[str, float]:
    """Single-query latency of sse-onnx (1 thread) and a rival, in alternating passes.

    Warm: ``rounds`` passes each over the queries, alternating, so that a change of machine
    load hits both. Cold: ``rounds`` fresh instances of each, alternating, every query timed
    on its first sight (p50 of each pass, then the median over passes). The garbage collector
    is paused during the passes (:func:`paused_gc`).
    """
    if rival.fresh_one is None:
        raise ValueError("the rival needs a fresh_one to be measured cold")
    ours_cold, rival_cold = [], []
    ours_warm, rival_warm = [], []
    with paused_gc():
        for _ in range(rounds):
            encoder = Encoder(folder, variant=variant, threads=1)
            ours_cold.append(np.percentile(latencies_us(encoder.encode, queries, 1), 50))
            rival_cold.append(np.percentile(latencies_us(rival.fresh_one(), queries, 1), 50))
            gc.collect()
        for _ in range(rounds):
            ours_warm.append(latencies_us(encoder.encode, queries, 1))
            rival_warm.append(latencies_us(rival.one, queries, 1))
            gc.collect()
    ours, theirs = np.concatenate(ours_warm), np.concatenate(rival_warm)
    return {
        "p50_us": float(np.percentile(ours, 50)),
        "p99_us": float(np.percentile(ours, 99)),
        "rival_p50_us": float(np.percentile(theirs, 50)),
        "rival_p99_us": float(np.percentile(theirs, 99)),
        "cold_p50_us": float(statistics.median(ours_cold)),
        "rival_cold_p50_us": float(statistics.median(rival_cold)),
        "rounds": rounds,
    }
