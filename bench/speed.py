"""Speed of sse-onnx against the PyTorch reference and other static-embedding runtimes.

One command exports a checkpoint (the bundled default unless ``--model``) at each ``--dims``
with each ``--variants`` into a temporary folder, then measures on the SciFact corpus
(``title + " " + text``) and queries, read from ``$SSE_DATA`` or ``../shared/data``:

- sse-onnx per variant, dim and thread count (and ``Encoder()``'s default thread count on
  the target variant): end-to-end docs/s and queries/s (``encode(texts, batch_size=32)``),
  the docs/s scaling from 1 to 2 threads, single-query latency p50/p99 (one ``encode(str)``
  per query, cold chunk cache and warm), the time spent in the graph calls (the ONNX stage)
  and its share of the end-to-end time, and, in fresh processes that import only sse_onnx:
  import time, ``Encoder()`` construction time and peak RSS growth, beside the model file
  size;
- competitors on the same stored table: (a) the PyTorch reference (HF ``encode_batch`` +
  ``EmbeddingBag(mode="mean")`` + DyT, batches of 32), (b) ``static-embed-runner`` (numpy
  only; its single-text call for latency, cold on a fresh tokenizer and warm) and (c)
  model2vec's ``StaticModel`` plus the DyT head in numpy, each skipped when not installed.
  Every runtime's outputs are checked against the PyTorch reference (min cosine
  :data:`MIN_COSINE`); a mismatch stops the run.

Timings are medians of ``--repeats`` runs after a warm-up; the machine's load average is
recorded before and after. Results go to ``OUT/speed.json``, ``OUT/speed.md`` and
``OUT/speed.png`` (throughput against SciFact nDCG@10, from the export's quality report), and
the table into ``bench/README.md`` between its markers (not with ``--smoke``).

Example::

    python bench/speed.py --out bench/results             # full run (about 20 minutes)
    python bench/speed.py --out speed-quick --quick   # the targets only, under 3 minutes
    python bench/speed.py --out speed-smoke --smoke   # seconds: tiny subset
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sse_export import export
from sse_export.checkpoint import Checkpoint, load_checkpoint
from sse_export.evaluate import RetrievalData, default_data_dir, load_named
from sse_export.quantize import decoded_table, encode_sseq
from sse_onnx import Encoder
from sse_onnx.embeddings import normalize
from sse_onnx.format import VARIANT_FILES

logger = logging.getLogger("speed")

FloatArray = npt.NDArray[np.float32]
Embed = Callable[[list[str]], FloatArray]

BATCH = 32
#: Passes over the queries per timed run of queries/s.
QUERY_PASSES = 10
#: Calls on the queries per runtime and round in the alternating runs of the targets.
DUEL_QUERY_PASSES = 30
MIN_COSINE = 0.9999
README = Path(__file__).resolve().parent / "README.md"
BEGIN, END = "<!-- speed:begin -->", "<!-- speed:end -->"
#: The configuration the targets are stated for, and the targets (ratios are to
#: static-embed-runner in the same run unless stated).
TARGET_VARIANT, TARGET_DIM = "int8", 256
TARGETS = {
    "docs_ratio": 3.0,
    "queries_ratio": 4.0,
    "p50_ratio": 0.5,
    "p99_to_rival_p50": 3.0,
    "cold_ratio": 1.0,
    "thread_scaling": 1.7,
    # The default Encoder() runs one query or 300 exactly as threads=1 does; the allowance is
    # for the noise between two measurements of the same code.
    "default_vs_one_thread": 1.1,
    "graph_share": 0.30,
    "construct_ms": 150.0,
    "rss_growth_mb": 60.0,
}
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
    """Stands in for an encoder's graph call (``Encoder._graph_run``) and adds up its time."""

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


# --------------------------------------------------------------------------- measuring


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
    timed = TimedRun(encoder._graph_run)
    encoder._graph_run = timed
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
        encoder._tokenizer = first._tokenizer
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


# --------------------------------------------------------------------------- competitors


def torch_reference(table: FloatArray, head: Sequence[FloatArray], tokenizer: Path) -> Embed:
    """HF ``encode_batch`` + ``EmbeddingBag(mode="mean")`` + DyT, as export/reference.py."""
    import torch
    from tokenizers import Tokenizer

    from sse_export.reference import SSE

    # One thread: idle OpenMP workers would otherwise spin beside the runtimes measured next.
    torch.set_num_threads(1)
    module = SSE.from_arrays(table, *head)
    hf = Tokenizer.from_file(str(tokenizer))
    hf.no_padding()
    hf.no_truncation()

    def embed(texts: list[str]) -> FloatArray:
        ids = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
        return normalize(module.embed(ids))

    return batched(embed)


@dataclass(frozen=True)
class Competitor:
    """A runtime measured against sse-onnx.

    Attributes:
        factory: ``batch size -> embed(texts)``.
        sizes: The batch sizes it is measured with (the best is reported, so that each runs
            as well as its own API allows).
        one: Its call on one text, ``(dim,)`` out.
        fresh_one: Builds a new instance (empty caches) and returns its ``one``; ``None``
            when the runtime keeps no cache.
    """

    factory: Callable[[int], Embed]
    sizes: tuple[int, ...]
    one: Callable[[str], FloatArray]
    fresh_one: Callable[[], Callable[[str], FloatArray]] | None = None


def fixed_batch(embed: Embed) -> Competitor:
    """A competitor that batches by itself whatever the size asked, in calls of 32."""
    return Competitor(lambda _size: embed, (BATCH,), one_text(embed))


def one_text(embed: Embed) -> Callable[[str], FloatArray]:
    """``embed`` called on a single text, as a query would be."""
    return lambda text: embed([text])[0]


def static_embed_runner(
    table: FloatArray, head: Sequence[FloatArray], tokenizer: Path
) -> Competitor | None:
    """static-embed-runner on the same dense table and head (its own pure-Python tokenizer).

    Its loader reads a head only with a 4-bit table, so the dense runner is built with its
    constructor and table class. Its list path pools through a count matrix, its single-text
    path through a gather: calls of 1, 32 and 512 texts are measured.
    """
    try:
        from static_embed_runner import StaticEmbedRunner
        from static_embed_runner.hf_tokenizer_lite import LiteTokenizer
        from static_embed_runner.runner import _DenseTable
    except ImportError:
        return None
    dense = _DenseTable(table)

    def fresh() -> Any:
        lite = LiteTokenizer.from_file(str(tokenizer))
        return StaticEmbedRunner(dense, tuple(head), lite, "lite")

    runner = fresh()
    return Competitor(
        lambda size: batched(runner.encode, size),
        (1, 32, 512),
        runner.encode,  # a str in, (dim,) out: its single-text path
        lambda: fresh().encode,
    )


def static_embed_runner_q4(
    checkpoint: Checkpoint, dim: int, tokenizer: Path, work: Path
) -> Competitor | None:
    """static-embed-runner loading SSE's own 4-bit files (the bytes of our int4 variant)."""
    try:
        from safetensors.numpy import save_file
        from static_embed_runner import StaticEmbedRunner
    except ImportError:
        return None
    folder = work / f"sseq-{dim}"
    folder.mkdir(exist_ok=True)
    packed, scale = encode_sseq(checkpoint.table[:, :dim])
    with open(folder / "embedding.q4_k_m.bin", "wb") as handle:
        handle.write(np.ascontiguousarray(packed).tobytes())
        handle.write(np.ascontiguousarray(scale, dtype=np.float32).tobytes())
    rest = {
        f"dyt.{name}": np.ascontiguousarray(getattr(checkpoint, name)[:dim])
        for name in ("alpha", "beta", "bias")
    }
    save_file(rest, str(folder / "model_rest.safetensors"))
    (folder / "tokenizer.json").write_bytes(tokenizer.read_bytes())
    runner = StaticEmbedRunner.load(str(folder))
    return Competitor(lambda size: batched(runner.encode, size), (1, 32, 512), runner.encode)


def model2vec_static(
    table: FloatArray, head: Sequence[FloatArray], tokenizer: Path
) -> Competitor | None:
    """model2vec's ``StaticModel`` mean pooling on the same table, then DyT in numpy.

    model2vec drops [UNK] before pooling and truncates at 512 tokens by default; SSE does
    neither, so ``unk_token_id`` is cleared and ``max_length=None`` is passed. Its batch size
    32 and its default 1024 are measured.
    """
    try:
        from model2vec import StaticModel
    except ImportError:
        return None
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(tokenizer))
    model = StaticModel(vectors=table, tokenizer=hf, normalize=False)
    model.unk_token_id = None
    alpha, beta, bias = head

    def factory(size: int) -> Embed:
        def embed(texts: list[str]) -> FloatArray:
            mean = model.encode(texts, max_length=None, batch_size=size, use_multiprocessing=False)
            return normalize((beta * np.tanh(alpha * mean + bias)).astype(np.float32))

        return embed

    return Competitor(factory, (32, 1024), one_text(factory(32)))


def measure_competitor(
    name: str,
    competitor: Competitor,
    texts: Texts,
    reference: dict[str, FloatArray],
    repeats: int,
    passes: int,
    smoke: bool,
) -> dict[str, Any]:
    """The best docs/s and queries/s over the competitor's batch sizes, and its latency
    (warm, and cold on a fresh instance when it caches)."""
    sizes = competitor.sizes[:1] if smoke else competitor.sizes
    rows = []
    for size in sizes:
        embed = competitor.factory(size)
        rows.append(measure_throughput(name, embed, competitor.one, texts, reference, repeats, 0))
    best_docs = max(range(len(sizes)), key=lambda i: rows[i]["docs_per_s"])
    best_queries = max(range(len(sizes)), key=lambda i: rows[i]["queries_per_s"])
    cold = (
        latencies_us(competitor.fresh_one(), texts.queries, 1)
        if competitor.fresh_one is not None
        else None
    )
    latency = latencies_us(competitor.one, texts.queries, passes)
    return {
        "runtime": name,
        "docs_per_s": rows[best_docs]["docs_per_s"],
        "docs_batch": sizes[best_docs],
        "queries_per_s": rows[best_queries]["queries_per_s"],
        "queries_batch": sizes[best_queries],
        "per_batch": {
            size: (r["docs_per_s"], r["queries_per_s"]) for size, r in zip(sizes, rows, strict=True)
        },
        "p50_us": float(np.percentile(latency, 50)),
        "p99_us": float(np.percentile(latency, 99)),
        "p50_cold_us": None if cold is None else float(np.percentile(cold, 50)),
        "min_cosine": min(r["min_cosine"] for r in rows),
    }


# --------------------------------------------------------------------------- the run


def package_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def environment() -> dict[str, Any]:
    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    packages = ["numpy", "onnxruntime", "tokenizers", "torch", "static-embed-runner", "model2vec"]
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_before": os.getloadavg(),
        "versions": {name: package_version(name) for name in packages},
    }


def load_texts(data_dir: Path, smoke: bool) -> Texts:
    data = load_named("scifact", data_dir)
    if not isinstance(data, RetrievalData):
        raise SystemExit(
            f"SciFact was not found under {data_dir}; pass --data or set $SSE_DATA to the "
            "evaluation data folder (python bench/get_data.py DATA_DIR builds it)."
        )
    if smoke:
        return Texts(data.doc_texts[:100], data.query_texts[:20])
    return Texts(data.doc_texts, data.query_texts)


def run(args: argparse.Namespace) -> dict[str, Any]:
    data_dir = Path(args.data) if args.data else default_data_dir()
    texts = load_texts(data_dir, args.smoke)
    checkpoint = load_checkpoint(args.model)
    tokenizer = checkpoint.tokenizer_path
    results: dict[str, Any] = {
        "environment": environment(),
        "smoke": args.smoke,
        "quick": args.quick,
    }
    rows: list[dict[str, Any]] = []
    competitors: list[dict[str, Any]] = []
    quality: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="sse-speed-") as tmp:
        work = Path(tmp)
        texts_file = work / "docs.json"
        texts_file.write_text(json.dumps(texts.docs), encoding="utf-8")
        for dim in args.dims:
            folder = work / f"sse-{dim}"
            logger.info("exporting dim %d, variants %s", dim, args.variants)
            exported = export(
                args.model,
                output=folder,
                dim=dim,
                variants=args.variants,
                validate=not (args.smoke or args.quick),
                report=not (args.smoke or args.quick),
                eval_data=data_dir,
            )
            for row in exported.quality:
                quality[f"{row.variant}@{dim}"] = dict(row.ndcg)
            head = [
                np.ascontiguousarray(v[:dim])
                for v in (checkpoint.alpha, checkpoint.beta, checkpoint.bias)
            ]
            for variant in args.variants:
                stored = np.ascontiguousarray(decoded_table(checkpoint.table[:, :dim], variant))
                reference_embed = torch_reference(stored, head, tokenizer)
                reference = {
                    "docs": reference_embed(texts.docs),
                    "queries": reference_embed(texts.queries),
                }
                target = (variant, dim) == (TARGET_VARIANT, TARGET_DIM)
                counts: list[int | None] = list(args.threads)
                if target and not args.smoke:
                    counts.append(None)  # Encoder()'s default, against threads=1
                for threads in counts:
                    logger.info("sse-onnx %s@%d, threads=%s", variant, dim, threads)
                    row = measure_sse_onnx(
                        folder, variant, threads, texts, reference, args.repeats, args.passes
                    )
                    rows.append({"dim": dim, **row})
                rows[-len(counts)] |= measure_process(
                    folder, variant, texts_file, args.process_runs
                )
                rows[-len(counts)] |= {"ndcg": quality.get(f"{variant}@{dim}", {})}
                candidates: dict[str, Competitor | None] = {
                    "PyTorch reference": fixed_batch(reference_embed),
                    "static-embed-runner": static_embed_runner(stored, head, tokenizer),
                    "model2vec StaticModel + DyT": model2vec_static(stored, head, tokenizer),
                }
                if args.quick:  # the targets name static-embed-runner only
                    candidates = {"static-embed-runner": candidates["static-embed-runner"]}
                if variant == "int4":
                    candidates["static-embed-runner (its q4 loader)"] = static_embed_runner_q4(
                        checkpoint, dim, tokenizer, work
                    )
                for name, competitor in candidates.items():
                    if competitor is None:
                        logger.warning("%s is not installed: skipped", name)
                        continue
                    logger.info("%s on %s@%d", name, variant, dim)
                    found = measure_competitor(
                        name,
                        competitor,
                        texts,
                        reference,
                        args.competitor_repeats,
                        args.passes,
                        args.smoke,
                    )
                    competitors.append({"dim": dim, "variant": variant, **found})
                rival = candidates.get("static-embed-runner")
                if target and rival is not None and not args.smoke:
                    logger.info("throughput against static-embed-runner, alternating")
                    sizes = [size for size in rival.sizes if size != BATCH]  # 32: its slowest
                    results["throughput"] = throughput_duel(
                        folder, variant, rival, sizes, texts, 2 * args.repeats
                    )
                    logger.info("single-query latency against static-embed-runner, alternating")
                    results["latency"] = latency_duel(
                        folder, variant, rival, texts.queries, args.passes
                    )
    results["environment"]["load_average_after"] = os.getloadavg()
    results["sse_onnx"] = rows
    results["competitors"] = competitors
    results["targets"] = target_verdicts(
        rows, competitors, results.get("throughput"), results.get("latency")
    )
    results["texts"] = {"docs": len(texts.docs), "queries": len(texts.queries)}
    return results


def target_verdicts(
    rows: list[dict[str, Any]],
    competitors: list[dict[str, Any]],
    throughput: dict[str, dict[str, float]] | None,
    latency: dict[str, float] | None,
) -> list[dict[str, Any]]:
    """The stated targets on the default model's int8 256d variant, met or not: from the
    alternating runs where there were some, else from the tables."""
    ours = {
        r["threads"]: r for r in rows if r["variant"] == TARGET_VARIANT and r["dim"] == TARGET_DIM
    }
    rival = next(
        (
            c
            for c in competitors
            if c["runtime"] == "static-embed-runner"
            and c["variant"] == TARGET_VARIANT
            and c["dim"] == TARGET_DIM
        ),
        None,
    )
    if 1 not in ours:
        return []
    one = ours[1]
    verdicts = []

    def add(
        figure: str, measured: float | None, target: float, higher_is_better: bool, unit: str
    ) -> None:
        met = (
            None
            if measured is None
            else (measured >= target if higher_is_better else measured <= target)
        )
        verdicts.append(
            {"figure": figure, "measured": measured, "target": target, "unit": unit, "met": met}
        )

    def ratio(a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a / b

    # Throughput figures per runtime: the alternating runs, else the tables' rows.
    rates: dict[str, dict[str, float]] = dict(throughput or {})
    if not rates:
        rates = {str(k): v for k, v in ours.items()}
        if rival:
            rates["static-embed-runner"] = rival

    def rate(name: str, key: str) -> float | None:
        return rates[name][key] if name in rates else None

    alternating = " (alternating runs)" if throughput else ""
    add(
        f"docs/s vs static-embed-runner, 1 thread{alternating}",
        ratio(rate("1", "docs_per_s"), rate("static-embed-runner", "docs_per_s")),
        TARGETS["docs_ratio"],
        True,
        "x",
    )
    add(
        f"queries/s vs static-embed-runner, 1 thread{alternating}",
        ratio(rate("1", "queries_per_s"), rate("static-embed-runner", "queries_per_s")),
        TARGETS["queries_ratio"],
        True,
        "x",
    )
    duel = latency or {}
    add(
        "single short query p50 vs static-embed-runner's p50 (alternating passes), 1 thread",
        ratio(duel.get("p50_us"), duel.get("rival_p50_us")),
        TARGETS["p50_ratio"],
        False,
        "x",
    )
    add(
        "single short query p99 vs static-embed-runner's p50, 1 thread",
        ratio(duel.get("p99_us"), duel.get("rival_p50_us")),
        TARGETS["p99_to_rival_p50"],
        False,
        "x",
    )
    add(
        "cold query p50 vs static-embed-runner's cold p50 (fresh instances), 1 thread",
        ratio(duel.get("cold_p50_us"), duel.get("rival_cold_p50_us")),
        TARGETS["cold_ratio"],
        False,
        "x",
    )
    add(
        f"docs/s, 2 threads vs 1 thread{alternating}",
        ratio(rate("2", "docs_per_s"), rate("1", "docs_per_s")),
        TARGETS["thread_scaling"],
        True,
        "x",
    )
    default = ours.get(DEFAULT_THREADS)
    add(
        "default Encoder(): single-query p50 vs threads=1",
        ratio(default["p50_us"] if default else None, one["p50_us"]),
        TARGETS["default_vs_one_thread"],
        False,
        "x",
    )
    add(
        f"default Encoder(): 300 queries per call, time vs threads=1{alternating}",
        ratio(rate("1", "queries_per_s"), rate(DEFAULT_THREADS, "queries_per_s")),
        TARGETS["default_vs_one_thread"],
        False,
        "x",
    )
    add(
        "ONNX stage share of end-to-end time, batch 32, 1 thread",
        one["graph_share"],
        TARGETS["graph_share"],
        False,
        "",
    )
    add("Encoder() construction", one.get("construct_ms"), TARGETS["construct_ms"], False, "ms")
    add(
        "peak RSS growth, Encoder() + the SciFact corpus",
        one.get("rss_peak_growth_mb"),
        TARGETS["rss_growth_mb"],
        False,
        "MB",
    )
    return verdicts


# --------------------------------------------------------------------------- reporting


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown(results: dict[str, Any]) -> str:
    """The tables of a run: sse-onnx per variant, competitors, and the targets."""
    env = results["environment"]
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {env['cpu']} ({env['cores']} cores), Python "
        f"{env['python']}, onnxruntime {env['versions']['onnxruntime']}, tokenizers "
        f"{env['versions']['tokenizers']}; load average {env['load_average_before'][0]:.2f} "
        f"before, {env['load_average_after'][0]:.2f} after. SciFact: "
        f"{results['texts']['docs']} docs, {results['texts']['queries']} queries.",
        "",
        "| variant | dim | threads | MB | docs/s | docs/s vs 1 thread | queries/s "
        "| p50 / p99 us (cold p50) "
        "| ONNX share | ONNX docs/s | ONNX us/query | import ms | Encoder() ms "
        "| RSS MB constr. / peak | SciFact nDCG@10 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    single = {
        (r["variant"], r["dim"]): r["docs_per_s"] for r in results["sse_onnx"] if r["threads"] == 1
    }
    for r in results["sse_onnx"]:
        rss = (
            f"{r['rss_construct_mb']:.1f} / {r['rss_peak_growth_mb']:.1f}"
            if "rss_construct_mb" in r
            else "-"
        )
        threads = r["threads"]
        if threads == DEFAULT_THREADS:
            threads = f"{DEFAULT_THREADS} ({r['threads_used']})"
        base = single.get((r["variant"], r["dim"]))
        scaling = "-" if r["threads"] == 1 or base is None else f"{r['docs_per_s'] / base:.2f} x"
        lines.append(
            f"| {r['variant']} | {r['dim']} | {threads} | {r['file_bytes'] / 1e6:.2f} "
            f"| {r['docs_per_s']:,.0f} | {scaling} | {r['queries_per_s']:,.0f} "
            f"| {r['p50_us']:.1f} / {r['p99_us']:.1f} ({r['p50_cold_us']:.0f}) "
            f"| {r['graph_share']:.0%} | {r['graph_docs_per_s']:,.0f} | {r['graph_query_us']:.1f} "
            f"| {fmt(r.get('import_ms'), '.0f')} | {fmt(r.get('construct_ms'), '.0f')} | {rss} "
            f"| {fmt(r.get('ndcg', {}).get('scifact'), '.4f')} |"
        )
    lines += [
        "",
        "Competitors on the same stored tables (min cosine with the PyTorch reference):",
        "",
        "| runtime | variant | dim | docs/s | queries/s | p50 / p99 us (cold p50) | min cosine |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in results["competitors"]:
        cold = c.get("p50_cold_us")
        lines.append(
            f"| {c['runtime']} | {c['variant']} | {c['dim']} | {c['docs_per_s']:,.0f} "
            f"| {c['queries_per_s']:,.0f} | {c['p50_us']:.1f} / {c['p99_us']:.1f}"
            f"{'' if cold is None else f' ({cold:.0f})'} | {c['min_cosine']:.6f} |"
        )
    rates = results.get("throughput")
    if rates:
        lines += [
            "",
            f"Throughput, {TARGET_VARIANT} {TARGET_DIM}d, each runtime once per round in "
            "alternating runs (medians; static-embed-runner at the best of 1 and 512 texts "
            "per call):",
            "",
            "| runtime | docs/s | queries/s |",
            "|---|---|---|",
        ]
        names = {"1": "sse-onnx, 1 thread", "2": "sse-onnx, 2 threads"}
        names[DEFAULT_THREADS] = "sse-onnx, Encoder() default"
        for name, rate in rates.items():
            lines.append(
                f"| {names.get(name, name)} | {rate['docs_per_s']:,.0f} "
                f"| {rate['queries_per_s']:,.0f} |"
            )
    duel = results.get("latency")
    if duel:
        lines += [
            "",
            f"Single-query latency, {TARGET_VARIANT} {TARGET_DIM}d, 1 thread, sse-onnx and "
            f"static-embed-runner in alternating passes over the queries ({duel['rounds']} "
            "each; cold: that many fresh instances of each, every query on its first sight):",
            "",
            "| runtime | p50 us | p99 us | cold p50 us |",
            "|---|---|---|---|",
            f"| sse-onnx | {duel['p50_us']:.1f} | {duel['p99_us']:.1f} "
            f"| {duel['cold_p50_us']:.1f} |",
            f"| static-embed-runner | {duel['rival_p50_us']:.1f} | {duel['rival_p99_us']:.1f} "
            f"| {duel['rival_cold_p50_us']:.1f} |",
        ]
    if results["targets"]:
        lines += [
            "",
            f"Targets ({TARGET_VARIANT}, {TARGET_DIM}d):",
            "",
            "| figure | measured | target | met |",
            "|---|---|---|---|",
        ]
        for t in results["targets"]:
            measured = fmt(t["measured"], ".3g")
            met = {True: "yes", False: "**no**", None: "not measured"}[t["met"]]
            lines.append(
                f"| {t['figure']} | {measured} {t['unit']} | {t['target']} {t['unit']} | {met} |"
            )
    return "\n".join(lines) + "\n"


def plot(results: dict[str, Any], path: Path) -> bool:
    """Throughput (1 thread) against SciFact nDCG@10 per variant and dim; False without data."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib is not installed (pip install -e .[bench]): no plot")
        return False
    ndcg = {
        (r["variant"], r["dim"]): r["ndcg"].get("scifact")
        for r in results["sse_onnx"]
        if "ndcg" in r
    }
    if not any(v is not None for v in ndcg.values()):
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    markers = {"sse-onnx": "o", "static-embed-runner": "s", "PyTorch reference": "x"}
    for runtime, marker in markers.items():
        points = [
            (r["docs_per_s"], ndcg[(r["variant"], r["dim"])], f"{r['variant']} {r['dim']}d")
            for r in results["sse_onnx"] + results["competitors"]
            if r["runtime"] == runtime
            and r.get("threads", 1) == 1
            and ndcg.get((r["variant"], r["dim"])) is not None
        ]
        if points:
            xs, ys, _ = zip(*points, strict=True)
            ax.scatter(xs, ys, marker=marker, label=runtime)
            if runtime == "sse-onnx":
                for x, y, label in points:
                    ax.annotate(
                        label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8
                    )
    ax.set_xscale("log")
    ax.set_xlabel("SciFact docs/s, end to end, 1 thread (log)")
    ax.set_ylabel("SciFact nDCG@10")
    ax.set_title("Throughput against quality per variant and dim")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def write_outputs(results: dict[str, Any], out: Path, readme: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = markdown(results)
    (out / "speed.md").write_text(table, encoding="utf-8")
    plotted = plot(results, out / "speed.png")
    if readme:
        text = README.read_text(encoding="utf-8")
        if BEGIN not in text or END not in text:
            raise SystemExit(f"{README} lacks the markers {BEGIN} / {END}; restore them.")
        image = f"![throughput vs nDCG@10]({os.path.relpath(out / 'speed.png', README.parent)})\n\n"
        head, rest = text.split(BEGIN, 1)
        text = (
            head
            + BEGIN
            + "\n"
            + table
            + ("\n" + image if plotted else "")
            + END
            + rest.split(END, 1)[1]
        )
        README.write_text(text, encoding="utf-8")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for speed.json/.md/.png")
    parser.add_argument("--model", default=None, help="SSE checkpoint (default: bundled)")
    parser.add_argument(
        "--data", default=None, help="evaluation data root (default: $SSE_DATA or ../shared/data)"
    )
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 64])
    parser.add_argument("--variants", nargs="+", default=["fp32", "int8", "int4"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--competitor-repeats", type=int, default=3)
    parser.add_argument("--passes", type=int, default=5, help="passes over the queries for latency")
    parser.add_argument("--process-runs", type=int, default=5, help="fresh processes per variant")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="under 3 minutes: int8 at 256d, 1 and 2 threads, static-embed-runner only",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="seconds: 100 docs, int8 at 64d, 1 thread"
    )
    parser.add_argument("--no-readme", action="store_true", help="do not update bench/README.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.dims, args.variants, args.threads = [TARGET_DIM], [TARGET_VARIANT], [1, 2]
        args.repeats, args.competitor_repeats, args.passes, args.process_runs = 3, 3, 3, 3
    if args.smoke:
        args.dims, args.variants, args.threads = [64], ["int8"], [1]
        args.repeats, args.competitor_repeats, args.passes, args.process_runs = 1, 1, 1, 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    results = run(args)
    write_outputs(results, Path(args.out), readme=not (args.smoke or args.quick or args.no_readme))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
