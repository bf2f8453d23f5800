"""Corpus embedding on Ray Data (``sse_onnx.corpus``) against a plain process, for the cost model.

Texts: ``--docs`` documents (60,000) drawn, seeded, from SciFact, Vaswani and Cranfield
(read from ``$SSE_DATA`` or ``../shared/data``): each takes the word count of a real document
(``title + " " + text``) and that many words drawn from all their words, so no two documents
repeat while the tokenizer's chunk cache sees natural word frequencies. Each measurement starts
with a fresh Encoder, so that cache starts empty, as in a corpus run. Measured:

- plain: one process, ``Encoder(threads=t).encode(texts)`` once, for t = 1 and 2;
- Ray: ``embed_corpus`` (the ``sse-embed`` path: read, re-batch, actors, the driver writing
  Parquet) with 1 and 2 workers on a local Ray started once: wall time, start-up (model load,
  reading set up), the time until the driver has the first batch (actor start, the first
  batch of 256 documents), docs/s after start-up; the driver's CPU time as a share of the wall
  time (Ray Data's executor loop runs in the driver); and 2 workers with ``count_tokens``;
- Ray, sharded: the same with ``output`` a folder (``sse-embed --output DIR``): the workers
  embed shards of 4,096 documents and write them, the driver handles block references only;
  "first batch" is then the first shard written;
- the driver's Parquet writer alone: documents/s of 256-d float32, its bound per driver;
- the time to start and stop a local Ray;
- memory: peak RSS (VmHWM) of a 1-CPU Ray worker that builds a ``CorpusEmbedder`` and embeds
  every text in batches of 1,024, and the RSS of Ray's own processes (raylet, GCS, agents,
  idle workers: the driver's descendants; a sum of RSS, so shared pages count more than once);
- output: bytes per document of the Parquet file per dim and precision.

The Ray output must equal the plain process's vectors bit for bit, or the run stops. Timings
are medians of ``--repeats`` runs; the load average before and after is recorded, and the run
refuses to start above ``--max-load`` (other jobs would skew it). Results: ``OUT/scale.json``
and the tables of ``bench/scale.md`` between its markers.

Example::

    nice python bench/scale.py --out bench/results   # about 6 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray

from sse_onnx import Encoder
from sse_onnx.corpus import SHARD_DOCS, CorpusEmbedder, embed_corpus, parquet, progress
from sse_onnx.embeddings import Precision
from sse_onnx.encoder import BLOCK_TEXTS, DEFAULT_MODEL
from sse_onnx.tokenizer import TextTokenizer

# bench/ is on sys.path as `python bench/scale.py`; `python -m bench.scale` runs from the root.
harness = importlib.import_module("bench.harness" if __package__ else "harness")

HERE = Path(__file__).resolve().parent
SCALE_MD = HERE / "scale.md"
BEGIN, END = "<!-- scale:begin -->", "<!-- scale:end -->"
CORPORA = ("scifact", "vaswani", "cranfield")
#: Output layouts whose file size is measured: (dim, precision).
LAYOUTS: tuple[tuple[int, Precision], ...] = (
    (256, "float32"),
    (64, "float32"),
    (256, "int8"),
    (256, "binary"),
    (64, "binary"),
)


def load_texts(data: Path, count: int) -> list[str]:
    """``count`` documents of real lengths, of words drawn from the real corpora (seeded)."""
    lengths, words = [], []
    for name in CORPORA:
        path = data / "retrieval" / name / "corpus.jsonl"
        if not path.is_file():
            sys.exit(f"{path} not found: set SSE_DATA or pass --data")
        for line in path.read_text(encoding="utf-8").splitlines():
            doc = json.loads(line)
            text = f"{doc.get('title', '')} {doc.get('text', '')}".split()
            lengths.append(len(text))
            words.extend(text)
    rng = np.random.default_rng(0)
    pool = np.array(words, dtype=object)
    return [" ".join(rng.choice(pool, size=n)) for n in rng.choice(lengths, size=count)]


def plain(texts: list[str], threads: int, repeats: int) -> tuple[dict[str, Any], np.ndarray]:
    """One fresh Encoder per run, one encode call on all texts; the row and the vectors."""
    times = []
    for _ in range(repeats):
        encoder = Encoder(threads=threads)
        started = time.perf_counter()
        vectors = encoder.encode(texts, show_progress_bar=False)
        times.append(time.perf_counter() - started)
    seconds = statistics.median(times)
    row = {"threads": threads, "seconds": seconds, "docs_per_s": len(texts) / seconds}
    return {**row, "load_average": os.getloadavg()[0]}, vectors


@contextmanager
def batch_times() -> Iterator[list[tuple[float, int]]]:
    """Record (time, documents so far) at each batch the driver writes."""
    marks: list[tuple[float, int]] = []
    original = progress.progress_bar

    @contextmanager
    def recording(show: bool) -> Iterator[Callable[[int, int], None]]:
        total = 0

        def advance(docs: int, _tokens: int) -> None:
            nonlocal total
            total += docs
            marks.append((time.perf_counter(), total))

        yield advance

    progress.progress_bar = recording
    try:
        yield marks
    finally:
        progress.progress_bar = original


def on_ray(
    source: Path,
    out: Path,
    workers: int,
    repeats: int,
    count_tokens: bool = False,
    batch_size: int | None = None,
) -> dict[str, Any]:
    runs = []
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)  # a folder output must start empty
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        with batch_times() as marks:
            started = time.perf_counter()
            summary = embed_corpus(
                [source], out, workers=workers, count_tokens=count_tokens, progress=False,
                batch_size=batch_size,
            )  # fmt: skip
        used = resource.getrusage(resource.RUSAGE_SELF)
        first = next(t for t, docs in marks if docs)  # a resumed shard would count 0
        runs.append(
            {
                "seconds": summary.seconds,
                "startup_seconds": summary.startup_seconds,
                "first_batch_seconds": first - started - summary.startup_seconds,
                "docs_per_s": summary.docs_per_second,
                "driver_cpu_share": (used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime)
                / summary.seconds,
            }
        )
    medians = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return {"workers": workers, "count_tokens": count_tokens, "sharded": out.suffix != ".parquet",
            "batch_size": batch_size, **medians, "load_average": os.getloadavg()[0]}  # fmt: skip


def writer_docs_per_s(work: Path, repeats: int) -> float:
    """Documents per second the driver's Parquet writer takes: 256-d float32 batches of 1,024."""
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(1024, 256)).astype(np.float32)
    table = pa.table(
        {
            "id": pa.array(np.arange(1024)),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), 256),
        }
    )
    rates = []
    for _ in range(repeats):
        writer = parquet.parquet_writer(work / "writer.parquet", table.schema)
        started = time.perf_counter()
        for _ in range(64):  # one row group of 64 MiB, as _write buffers it
            writer.write_table(table)
        writer.close()
        rates.append(64 * 1024 / (time.perf_counter() - started))
    return statistics.median(rates)


def read_vectors(path: Path) -> np.ndarray:
    column = pq.read_table(path).column("embedding").combine_chunks()
    vectors: np.ndarray = column.flatten().to_numpy().reshape(len(column), column.type.list_size)
    return vectors


def status_kb(pid: str | int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key):
            return int(line.split()[1])
    return 0


def worker_peak_mb(texts: list[str]) -> dict[str, float]:
    @ray.remote(num_cpus=1)
    def measure(texts: list[str]) -> dict[str, float]:
        before = status_kb("self", "VmRSS:")
        embedder = CorpusEmbedder(id_field=None)
        built = status_kb("self", "VmRSS:")
        for start in range(0, len(texts), 1024):
            embedder(pa.table({"text": texts[start : start + 1024]}))
        return {
            "before_mb": before / 1024,
            "built_mb": built / 1024,
            "peak_mb": status_kb("self", "VmHWM:") / 1024,
        }

    result: dict[str, float] = ray.get(measure.remote(texts))
    return result


def ray_processes_mb() -> float:
    """Sum of the RSS of the processes this driver's local Ray started: its descendants."""
    parents = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:  # the parent pid is the 4th field, after the parenthesised command name
                parents[int(proc.name)] = int(
                    (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except (OSError, IndexError, ValueError):  # the process ended meanwhile
                continue
    ours, grew = {os.getpid()}, True
    while grew:
        found = {pid for pid, parent in parents.items() if parent in ours} - ours
        ours |= found
        grew = bool(found)
    total = 0
    for pid in ours - {os.getpid()}:
        try:
            total += status_kb(pid, "VmRSS:")
        except OSError:
            continue
    return total / 1024


def output_sizes(texts: list[str], work: Path) -> list[dict[str, Any]]:
    """Bytes per document of the output file per layout, on the first 10,000 documents."""
    sample = texts[:10_000]
    source = work / "sample.jsonl"
    write_jsonl(source, sample)
    rows = []
    for dim, precision in LAYOUTS:
        out = work / f"out-{dim}-{precision}.parquet"
        embed_corpus([source], out, dim=dim, precision=precision, workers=2, progress=False)
        rows.append(
            {"dim": dim, "precision": precision, "bytes_per_doc": out.stat().st_size / len(sample)}
        )
    return rows


def write_jsonl(path: Path, texts: list[str]) -> None:
    lines = (json.dumps({"id": i, "text": text}) + "\n" for i, text in enumerate(texts))
    path.write_text("".join(lines), encoding="utf-8")


def run(args: argparse.Namespace) -> dict[str, Any]:
    texts = load_texts(args.data, args.docs)
    tokens = int(TextTokenizer(DEFAULT_MODEL / "tokenizer.json").encode_flat(texts)[1].sum())
    results: dict[str, Any] = {
        "environment": harness.environment(("ray", "onnxruntime")),
        "docs": len(texts),
        "tokens": tokens,
        "model": "bundled default (int8 variant, 256 dims)",
    }
    (one, reference), (two, _) = (plain(texts, threads, args.repeats) for threads in (1, 2))
    results["plain"] = [one, two]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = work / "docs.jsonl"
        write_jsonl(source, texts)
        started = time.perf_counter()
        ray.init(num_cpus=3, include_dashboard=False, logging_level=logging.ERROR)
        results["ray_init_seconds"] = time.perf_counter() - started

        def checked(out: Path, workers: int, what: str, **options: Any) -> dict[str, Any]:
            """:func:`on_ray`, stopping the run if its vectors differ from the plain process."""
            measured = on_ray(source, out, workers, args.repeats, **options)
            if not np.array_equal(read_vectors(out), reference):
                sys.exit(f"{what} differs from the plain process")
            return measured

        try:
            results["ray"] = [
                checked(work / f"out-{n}.parquet", n, f"Ray output with {n} workers")
                for n in (1, 2)
            ]
            out = work / "out-tokens.parquet"
            results["ray"].append(on_ray(source, out, 2, args.repeats, count_tokens=True))
            # The shards' batches, through the driver: which part of the gap is batch size.
            out = work / "out-large-batches.parquet"
            what = f"Ray output in batches of {SHARD_DOCS}"
            results["ray"].append(checked(out, 2, what, batch_size=SHARD_DOCS))
            results["sharded"] = [
                checked(work / f"shards-{n}", n, f"shards of {n} workers") for n in (1, 2)
            ]
            results["ray_processes_mb"] = ray_processes_mb()
            results["worker_memory"] = worker_peak_mb(texts)
            results["outputs"] = output_sizes(texts, work)
            results["writer_docs_per_s"] = writer_docs_per_s(work, args.repeats)
        finally:
            started = time.perf_counter()
            ray.shutdown()
            results["ray_shutdown_seconds"] = time.perf_counter() - started
    results["environment"]["load_average_after"] = os.getloadavg()
    return results


def markdown(r: dict[str, Any]) -> str:
    env = r["environment"]
    tokens_per_doc = r["tokens"] / r["docs"]
    lines = [
        f"Measured {env['date']} on {env['cpu']} ({env['cores']} cores), Python {env['python']}, "
        f"Ray {env['versions']['ray']}, onnxruntime {env['versions']['onnxruntime']}; load average "
        f"{env['load_average_before'][0]:.2f} before, {env['load_average_after'][0]:.2f} after. "
        f"{r['docs']:,} documents, {r['tokens']:,} tokens ({tokens_per_doc:.0f} per document); "
        f"{r['model']}.",
        "",
        "| run | docs/s | tokens/s | wall s | start-up s | first batch s | driver CPU "
        "| load after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in r["plain"]:
        rate = p["docs_per_s"]
        lines.append(
            f"| plain process, {p['threads']} thread{'s' if p['threads'] > 1 else ''} "
            f"| {rate:,.0f} | {rate * tokens_per_doc:,.0f} | {p['seconds']:.2f} | - | - | - "
            f"| {p['load_average']:.1f} |"
        )
    for q in [*r["ray"], *r["sharded"]]:
        rate = q["docs_per_s"]
        lines.append(
            f"| Ray, {q['workers']} worker{'s' if q['workers'] > 1 else ''}"
            f"{', counting tokens' if q['count_tokens'] else ''}"
            f"{', shards written by the workers' if q['sharded'] else ', driver writes the file'}"
            f"{batches(q.get('batch_size'))}"
            f" | {rate:,.0f} "
            f"| {rate * tokens_per_doc:,.0f} | {q['seconds']:.2f} | {q['startup_seconds']:.2f} "
            f"| {q['first_batch_seconds']:.2f} | {q['driver_cpu_share']:.0%} "
            f"| {q['load_average']:.1f} |"
        )
    memory = r["worker_memory"]
    lines += [
        "",
        f"Local Ray start {r['ray_init_seconds']:.1f} s, stop {r['ray_shutdown_seconds']:.1f} s. "
        f"A 1-CPU worker: {memory['before_mb']:.0f} MB as Ray starts it, "
        f"{memory['built_mb']:.0f} MB with its Encoder, peak {memory['peak_mb']:.0f} MB after "
        f"embedding every document in batches of 1,024. Ray's own processes: "
        f"{r['ray_processes_mb']:.0f} MB (sum of RSS).",
        "",
        "| dim | precision | output bytes per document (id + embedding, Parquet) |",
        "|---|---|---|",
        *(f"| {o['dim']} | {o['precision']} | {o['bytes_per_doc']:.1f} |" for o in r["outputs"]),
    ]
    return "\n".join([*lines, "", cost_model(r)])


def batches(size: int | None) -> str:
    """A run's batch size for its label, when not the default."""
    return "" if size is None else f", batches of {size:,}"


def cost_model(r: dict[str, Any]) -> str:
    """Extrapolate the measured rates, memory and file sizes to 10^8 and 10^9 documents."""
    # Steady rates, once the actors run: the documents after the first batch over the time
    # after it (the first batch is BLOCK_TEXTS documents: the input is re-batched so).
    steady = [
        (r["docs"] - BLOCK_TEXTS) / (q["seconds"] - q["startup_seconds"] - q["first_batch_seconds"])
        for q in r["ray"][:2]
    ]
    per_core = {"1 worker": steady[0], "2 workers": steady[1] / 2}
    writer_docs_per_s = r["writer_docs_per_s"]
    sharded_steady = [
        (r["docs"] - SHARD_DOCS) / (q["seconds"] - q["startup_seconds"] - q["first_batch_seconds"])
        for q in r["sharded"]
    ]
    # If all of the driver's CPU time were work per document, one driver would take this many:
    driver_docs_per_s = min(q["docs_per_s"] / q["driver_cpu_share"] for q in r["ray"][:2])
    # With shards written by the workers, the driver keeps Ray Data's loop (reading and
    # re-batching the input) and one task per shard; the vectors no longer pass through it.
    sharded_driver_docs_per_s = min(q["docs_per_s"] / q["driver_cpu_share"] for q in r["sharded"])
    worker_mb = r["worker_memory"]["peak_mb"]
    lines = [
        "**Extrapolation** from the rows above (documents of about "
        f"{r['tokens'] / r['docs']:.0f} tokens; cost grows with tokens per document), at the "
        f"steady rates after the first batch: {steady[0]:,.0f} docs/s with 1 worker, "
        f"{steady[1]:,.0f} with 2 (so {per_core['2 workers']:,.0f} per core); with shards "
        f"written by the workers {sharded_steady[0]:,.0f} and {sharded_steady[1]:,.0f}:",
        "",
        "| documents | core-hours (rate per core from 1 worker / from 2 workers) "
        "| hours through one driver writing the file (all its CPU per document / writer alone) "
        "| hours through one driver of a sharded job (all its CPU per document) | memory | "
        + " | ".join(f"output {o['dim']}d {o['precision']}" for o in r["outputs"])
        + " |",
        "|---|---|---|---|---|" + "---|" * len(r["outputs"]),
    ]
    for docs in (1e8, 1e9):
        hours = " / ".join(f"{docs / rate / 3600:,.0f}" for rate in per_core.values())
        sizes = " | ".join(f"{docs * o['bytes_per_doc'] / 1e9:,.0f} GB" for o in r["outputs"])
        lines.append(
            f"| 10^{len(str(int(docs))) - 1} | {hours} "
            f"| {docs / driver_docs_per_s / 3600:,.1f} / {docs / writer_docs_per_s / 3600:,.1f} "
            f"| {docs / sharded_driver_docs_per_s / 3600:,.1f} "
            f"| {worker_mb:.0f} MB per worker + Ray per node | {sizes} |"
        )
    lines += [
        "",
        "One driver writes the file. Counting all of its CPU time (Ray Data's executor loop, "
        f"fetching the blocks, writing) as work per document, it takes {driver_docs_per_s:,.0f} "
        f"docs/s, about {driver_docs_per_s / per_core['1 worker']:.0f} workers' output; its "
        f"Parquet writer alone takes {writer_docs_per_s:,.0f} docs/s of 256-d float32 (about "
        f"{writer_docs_per_s / per_core['1 worker']:.0f} workers). Past that, or past its "
        "network link, the driver is the bottleneck. With the output a folder of shards that the "
        "workers write, the vectors do not pass through the driver, and counted the same way "
        f"it takes {sharded_driver_docs_per_s:,.0f} docs/s (about "
        f"{sharded_driver_docs_per_s / per_core['1 worker']:.0f} workers' output): what remains "
        "in it is Ray Data's loop reading and re-batching the input, and one task per shard of "
        f"{SHARD_DOCS:,} documents.",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    default_data = Path(os.environ.get("SSE_DATA") or HERE.parent.parent / "shared" / "data")
    parser.add_argument("--data", type=Path, default=default_data)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--docs", type=int, default=60_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-load", type=float, default=2.5)
    parser.add_argument("--no-readme", action="store_true", help="leave bench/scale.md alone")
    args = parser.parse_args(argv)
    if os.getloadavg()[0] > args.max_load:
        sys.exit(
            f"load average {os.getloadavg()[0]:.1f} > {args.max_load}: other jobs would skew "
            "the figures; wait, or pass --max-load"
        )
    results = run(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scale.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = markdown(results)
    (args.out / "scale.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    if not args.no_readme:
        text = SCALE_MD.read_text(encoding="utf-8")
        head, rest = text.split(BEGIN, 1)
        SCALE_MD.write_text(f"{head}{BEGIN}\n{table}\n{END}{rest.split(END, 1)[1]}", "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
