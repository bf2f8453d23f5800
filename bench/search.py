"""Search with ``sse_onnx.Index``: quality on the dev collections, speed and memory at scale.

``--quality``: nDCG@10 of ``mode="dense"``, ``"keyword"`` (FTS5 BM25, porter) and
``"hybrid"`` on SciFact, Vaswani and Cranfield (and SciFact's train queries, on which the
fusion was chosen), each through a real index file. Also the dense part with float32 vectors
instead of the stored int8, and ``--teacher`` adds all-MiniLM-L6-v2 alone for scale (needs the
exporter's torch and the teacher wheel).

``--speed``: synthetic collections of ``--sizes`` documents made of real sentences (the three
corpora's, shuffled with a fixed seed): ``add`` throughput, then, in a fresh process, search
latency (p50/p99 over SciFact's 300 test queries, one thread) for each mode, resident memory,
file size per document, and the index's hybrid ranking against a brute-force fusion on each
collection's queries with its corpus inside 100,000 documents. ``--vectors`` compares
the stored vector types (float32, float16, int8) by size, dense scoring time and nDCG@10.

Writes ``search.json`` and ``search.md`` to ``--out``. Timings are one run on this machine.

Example::

    python bench/search.py --quality --out bench/results
    python bench/search.py --speed --sizes 100000 1000000 --vectors --out bench/results
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sse_export.evaluate import DATASETS, RetrievalData, RetrievalSpec, default_data_dir, ndcg_at_k
from sse_export.evaluate import load_dataset as _load_dataset
from sse_onnx import Encoder, Index
from sse_onnx.index import DEFAULT_ALPHA
from sse_onnx.index.fusion import fuse, top_k
from sse_onnx.index.vectors import Vectors, quantize_rows

# bench/ is on sys.path as `python bench/search.py`; `python -m bench.search` runs from the root.
harness = importlib.import_module("bench.harness" if __package__ else "harness")

HERE = Path(__file__).resolve().parent
COLLECTIONS = ("scifact", "vaswani", "cranfield", "scifact-train")
MODES = ("dense", "keyword", "hybrid")
#: Sizes of the synthetic collections (--speed), and the size the index is checked against a
#: brute-force fusion at.
SIZES = (100_000, 1_000_000)
BRUTE_FORCE_AT = 100_000
#: SciFact queries timed at a size other than all 300 (none now: every size takes all).
QUERIES: dict[int, int] = {}
K = 10


def load(name: str, data: Path) -> RetrievalData:
    spec = DATASETS[name]
    assert isinstance(spec, RetrievalSpec)
    loaded = _load_dataset(spec, data)
    if not isinstance(loaded, RetrievalData):
        raise SystemExit(f"{name} not found under {data}; set SSE_DATA or --data.")
    return loaded


def ndcg(hits: Sequence[Sequence[str]], collection: RetrievalData) -> float:
    scores = [
        ndcg_at_k(ranked, collection.qrels[query_id])
        for ranked, query_id in zip(hits, collection.query_ids, strict=True)
    ]
    return float(np.mean(scores))


def build(path: Path, texts: Sequence[str], ids: Sequence[str], encoder: Encoder) -> float:
    """Write an index of ``texts``; return documents added a second."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    start = time.perf_counter()
    with Index(path, encoder=encoder) as index:
        index.add(texts, ids=ids)
    return len(texts) / (time.perf_counter() - start)


# --------------------------------------------------------------------------- quality


def quality(data: Path, work: Path, teacher: bool) -> dict[str, Any]:
    encoder = Encoder()
    results: dict[str, Any] = {}
    for name in COLLECTIONS:
        collection = load(name, data)
        logging.info("quality: %s (%d docs)", name, len(collection.doc_ids))
        path = work / f"{name}.db"
        build(path, collection.doc_texts, collection.doc_ids, encoder)
        row: dict[str, float] = {}
        with Index(path, encoder=encoder) as index:
            queries = collection.query_texts
            for mode in MODES:
                found = index.search(queries, k=K, mode=mode)  # type: ignore[call-overload]
                row[mode] = ndcg([[hit.id for hit in hits] for hits in found], collection)
        row.update(_float32_rows(collection, encoder, path))
        if teacher:
            row["teacher"] = _teacher(collection)
        results[name] = row
    return results


def _float32_rows(collection: RetrievalData, encoder: Encoder, path: Path) -> dict[str, float]:
    """Dense and hybrid with float32 vectors in place of the stored int8 (same BM25)."""
    docs = encoder.encode(collection.doc_texts, show_progress_bar=False)
    queries = encoder.encode(collection.query_texts, show_progress_bar=False)
    cosines = queries @ docs.T
    dense_hits, hybrid_hits = [], []
    ids = np.array(collection.doc_ids)
    position = {doc: i for i, doc in enumerate(collection.doc_ids)}
    with Index(path, encoder=encoder) as index:
        everything = len(index)
        for i, query in enumerate(collection.query_texts):
            keyword = np.zeros(len(ids), np.float32)
            for hit in index.search(query, k=everything, mode="keyword"):
                keyword[position[hit.id]] = hit.score
            dense_hits.append(list(ids[top_k(cosines[i], K)]))
            hybrid_hits.append(list(ids[top_k(fuse(cosines[i], keyword, DEFAULT_ALPHA), K)]))
    return {
        "dense float32": ndcg(dense_hits, collection),
        "hybrid float32": ndcg(hybrid_hits, collection),
    }


def _teacher(collection: RetrievalData) -> float:
    sys.path.insert(0, str(HERE.parent))
    from models import teacher

    docs = np.asarray(teacher.encode(collection.doc_texts), np.float32)
    queries = np.asarray(teacher.encode(collection.query_texts), np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    ids = np.array(collection.doc_ids)
    return ndcg([list(ids[top_k(row, K)]) for row in queries @ docs.T], collection)


# --------------------------------------------------------------------------- speed


def synthetic(size: int, data: Path, seed: int = 0) -> list[str]:
    """``size`` documents of real sentences, each as long (in sentences) as a real document."""
    sentences: list[str] = []
    lengths: list[int] = []
    for name in ("scifact", "vaswani", "cranfield"):
        for text in load(name, data).doc_texts:
            parts = [part for part in re.split(r"(?<=[.!?])\s+", text) if part]
            sentences.extend(parts)
            lengths.append(len(parts))
    rng = random.Random(seed)
    return [
        " ".join(rng.choice(sentences) for _ in range(min(rng.choice(lengths), 12)))
        for _ in range(size)
    ]


#: Runs in a fresh process: opens an index, searches, prints latencies and memory as JSON.
_SEARCHER = """
import json, sys, time
import numpy as np
import numpy.typing as npt
from sse_onnx import Encoder, Index
def rss():
    fields = dict(line.split(':', 1) for line in open('/proc/self/status'))
    return {key: int(fields[key].split()[0]) * 1024 for key in ('VmRSS', 'VmHWM')}
path, queries = sys.argv[1], json.loads(sys.stdin.read())
encoder = Encoder(threads=1)
encoder.encode(queries[:8])
before = rss()
start = time.perf_counter()
index = Index(path, encoder=encoder)
opened = time.perf_counter() - start
out = {'open_s': opened, 'documents': len(index), 'vector_bytes': index.vectors.nbytes()}
for name, mode in (('hybrid first', 'hybrid'), ('hybrid second', 'hybrid'),
                   ('keyword second', 'keyword'), ('dense', 'dense')):
    times = []
    for query in queries:
        start = time.perf_counter()
        index.search(query, k=10, mode=mode)
        times.append(time.perf_counter() - start)
    out[name] = [float(np.percentile(times, 50)) * 1e3, float(np.percentile(times, 99)) * 1e3]
after = rss()
out['rss_before_index'] = before['VmRSS']
out['rss'] = after['VmRSS']
out['peak_rss'] = after['VmHWM']
print(json.dumps(out))
"""


def speed(data: Path, work: Path, sizes: Sequence[int]) -> dict[str, Any]:
    encoder = Encoder(threads=1)
    scifact = load("scifact", data)
    results: dict[str, Any] = {}
    largest = max(sizes)
    texts = synthetic(largest, data)
    for size in sorted(sizes):
        path = work / f"synthetic-{size}.db"
        ids = [f"s{i}" for i in range(size)]
        logging.info("speed: adding %d documents", size)
        row: dict[str, Any] = {"add_docs_per_s": build(path, texts[:size], ids, encoder)}
        row.update(_searched(path, scifact.query_texts[: QUERIES.get(size, 300)]))
        row["queries"] = QUERIES.get(size, 300)
        row["file_bytes_per_doc"] = path.stat().st_size / size
        results[str(size)] = row
    results["add SciFact"] = _add_speed(scifact, work)
    at = min(BRUTE_FORCE_AT, largest)
    for name in ("scifact", "vaswani", "cranfield"):
        collection = load(name, data)
        distractors = texts[: at - len(collection.doc_ids)]
        results[f"brute force {name}"] = _against_brute_force(collection, distractors, work)
    return results


def _searched(path: Path, queries: list[str]) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _SEARCHER, str(path)],
        input=json.dumps(queries),
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


#: Runs in a fresh process: SciFact's corpus added to a new index with a new encoder (its word
#: cache empty), then the encoder alone twice (cold, then warm), then the corpus added again
#: with that warm encoder; and FTS5 alone. Prints docs/s as JSON.
_ADDER = """
import json, sqlite3, sys, time
from sse_onnx import Encoder, Index
work, texts = sys.argv[1], json.loads(sys.stdin.read())
ids = [str(i) for i in range(len(texts))]
def rate(call):
    start = time.perf_counter()
    call()
    return len(texts) / (time.perf_counter() - start)
def add(name, encoder):
    def call():
        with Index(f'{work}/{name}.db', encoder=encoder) as index:
            index.add(texts, ids=ids)
    return rate(call)
out = {'index_add_cold': add('cold', Encoder(threads=1))}
encoder = Encoder(threads=1)
out['encoder_alone_cold'] = rate(lambda: encoder.encode(texts, show_progress_bar=False))
out['encoder_alone_warm'] = rate(lambda: encoder.encode(texts, show_progress_bar=False))
out['index_add_warm'] = add('warm', encoder)
connection = sqlite3.connect(f'{work}/fts.db', isolation_level=None)
connection.execute("CREATE VIRTUAL TABLE f USING fts5(text, tokenize='porter unicode61')")
def fts():
    connection.execute('BEGIN')
    connection.executemany('INSERT INTO f (text) VALUES (?)', [(text,) for text in texts])
    connection.execute('COMMIT')
out['fts5_alone'] = rate(fts)
print(json.dumps(out))
"""


def _add_speed(scifact: RetrievalData, work: Path) -> dict[str, float]:
    """SciFact's corpus: Index.add (cold and warm encoder), FTS5 alone, the encoder alone."""
    folder = work / "add"
    folder.mkdir()
    done = subprocess.run(
        [sys.executable, "-c", _ADDER, str(folder)],
        input=json.dumps(scifact.doc_texts),
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    result: dict[str, float] = json.loads(done.stdout)
    return result


def _against_brute_force(
    collection: RetrievalData, distractors: list[str], work: Path
) -> dict[str, float]:
    """A collection's queries over its corpus plus distractors: the index's hybrid search
    against a brute-force fusion that scores every document with one FTS5 query a query
    (``bm25()`` of all its words joined with OR) and every cosine."""
    path = work / "brute-force.db"
    texts = collection.doc_texts + distractors
    ids = collection.doc_ids + [f"x{i}" for i in range(len(distractors))]
    build(path, texts, ids, Encoder())
    position = {doc: i for i, doc in enumerate(ids)}
    words = re.compile(r"[^\W_]+")
    brute, same = [], 0
    connection = sqlite3.connect(path)
    with Index(path) as index:
        fast = index.search(collection.query_texts, k=K)
        for query, hits in zip(collection.query_texts, fast, strict=True):
            # The vectors are held in the order documents were added, as ``ids`` are.
            dense = index.vectors.cosines(index.encoder.encode([query]))[0]
            keyword = np.zeros(len(ids), np.float32)
            quoted = [f'"{word}"' for word in dict.fromkeys(words.findall(query))]
            for id_, score in connection.execute(
                "SELECT d.id, -bm25(sse_fts) FROM sse_fts JOIN sse_docs d ON d.doc = sse_fts.rowid"
                " WHERE sse_fts MATCH ?",
                (" OR ".join(quoted),),
            ):
                keyword[position[id_]] = score
            best = [ids[i] for i in top_k(fuse(dense, keyword, DEFAULT_ALPHA), K)]
            brute.append(best)
            same += best == [hit.id for hit in hits]
    connection.close()
    return {
        "documents": float(len(texts)),
        "index": ndcg([[hit.id for hit in hits] for hits in fast], collection),
        "brute force": ndcg(brute, collection),
        "same top 10": same / len(brute),
    }


# --------------------------------------------------------------------------- vector types


def vector_types(data: Path, sizes: Sequence[int]) -> dict[str, Any]:
    """Bytes a document, dense scoring time for one query, and dense nDCG@10 by vector type."""
    encoder = Encoder()
    rng = np.random.default_rng(0)
    query = encoder.encode("how do cells respond to stress")
    results: dict[str, Any] = {"bytes_per_doc": {"float32": 1024, "float16": 512, "int8": 260}}
    for size in sizes:
        results[f"ms at {size}"] = _timings(rng.normal(size=(size, encoder.dim)), query)
    quality_rows = {}
    for name in ("scifact", "vaswani", "cranfield"):
        collection = load(name, data)
        docs = encoder.encode(collection.doc_texts, show_progress_bar=False)
        queries = encoder.encode(collection.query_texts, show_progress_bar=False)
        ids = np.array(collection.doc_ids)
        q_docs, doc_scales = quantize_rows(docs)
        int8 = Vectors(encoder.dim)
        int8.reset(len(docs))
        int8.append(
            np.arange(len(docs), dtype=np.int64), q_docs, doc_scales, np.zeros(len(docs), np.int32)
        )
        kinds = {
            "float32": queries @ docs.T,
            "float16": (queries.astype(np.float16) @ docs.T.astype(np.float16)).astype(np.float32),
            "int8": int8.cosines(queries),
        }
        quality_rows[name] = {
            kind: ndcg([list(ids[top_k(row, K)]) for row in scores], collection)
            for kind, scores in kinds.items()
        }
    results["dense nDCG@10"] = quality_rows
    return results


def _timings(rows: npt.NDArray[np.float64], query: npt.NDArray[np.float32]) -> dict[str, float]:
    """Dense scoring time of one query against ``rows`` (normalised here) in each type."""
    unit = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    vectors = Vectors(unit.shape[1])
    vectors.reset(len(unit))
    vectors.append(
        np.arange(len(unit), dtype=np.int64), *quantize_rows(unit), np.zeros(len(unit), np.int32)
    )
    half = unit.astype(np.float16)
    return {
        "float32 (numpy)": _time(lambda: unit @ query),
        "float16 (numpy)": _time(lambda: half @ query.astype(np.float16)),
        "int8 (onnxruntime MatMulInteger)": _time(lambda: vectors.cosines(query[None])),
    }


def _time(call: Any, repeat: int = 5) -> float:
    call()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


# --------------------------------------------------------------------------- report


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Search: quality, speed, memory",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} with `python bench/search.py "
        + " ".join(results["argv"])
        + f"` ({results['environment']['cpu']}, {results['environment']['cores']} cores, SQLite "
        f"{results['environment']['sqlite']}). One run; timings on one thread.",
    ]
    if "quality" in results:
        lines += _quality_table(results["quality"])
    if "speed" in results:
        lines += _speed_tables(results["speed"])
    if "vectors" in results:
        lines += _vector_tables(results["vectors"])
    return "\n".join(lines) + "\n"


def _quality_table(quality: dict[str, dict[str, float]]) -> list[str]:
    names = [name for name in COLLECTIONS if name in quality]
    test = [name for name in names if name != "scifact-train"]
    columns = list(next(iter(quality.values())))
    lines = [
        "",
        "## nDCG@10 on the dev collections",
        "",
        'The index\'s default (`mode="hybrid"`, alpha = 0.45, int8 vectors) beside each part '
        "alone; `float32` rows score the dense part with unquantized vectors. SciFact train is "
        "the split the fusion was chosen on (bench/results/fusion.md).",
        "",
        "| | " + " | ".join(names) + " | mean (test) |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for column in columns:
        values = [quality[name][column] for name in names]
        mean = np.mean([quality[name][column] for name in test])
        lines.append(f"| {column} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {mean:.3f} |")
    return lines


def _speed_tables(speed: dict[str, Any]) -> list[str]:
    sizes = [key for key in speed if key.isdigit()]
    lines = [
        "",
        "## Speed and memory at scale (synthetic collections of real sentences)",
        "",
        "Latency over SciFact's first `queries` test queries, k = 10, one thread, p50 / p99 in "
        "ms. `first` starts with nothing in memory; `second` is the same queries again, when "
        "the words' BM25 parts kept in memory (up to 8M documents' worth) can be reused. "
        "Memory: resident set of the searching process at the end, and what opening and "
        "searching the index added to it (an `Encoder` is loaded before).",
        "",
        "| documents | queries | add docs/s | open s | hybrid first | hybrid second | "
        "keyword second | dense | RSS MB | RSS from index MB | file bytes/doc |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for size in sizes:
        row = speed[size]

        def pair(key: str, row: dict[str, Any] = row) -> str:
            return f"{row[key][0]:.1f} / {row[key][1]:.1f}"

        lines.append(
            f"| {int(size):,} | {row['queries']} | {row['add_docs_per_s']:,.0f} | "
            f"{row['open_s']:.1f} | {pair('hybrid first')} | {pair('hybrid second')} | "
            f"{pair('keyword second')} | {pair('dense')} | {row['rss'] / 1e6:.0f} | "
            f"{(row['rss'] - row['rss_before_index']) / 1e6:.0f} | "
            f"{row['file_bytes_per_doc']:,.0f} |"
        )
    add = speed["add SciFact"]
    lines += [
        "",
        f"`add` of SciFact's 5,183 documents in a fresh process, `Encoder(threads=1)`: "
        f"{add['index_add_cold']:,.0f} docs/s with a new encoder (its word cache empty), "
        f"{add['index_add_warm']:,.0f} with one that has encoded these texts once (its cache "
        f"warm, as in a process that has run a while). The encoder alone: "
        f"{add['encoder_alone_cold']:,.0f} docs/s cold, {add['encoder_alone_warm']:,.0f} warm; "
        f"FTS5 alone (one `INSERT` a text, one transaction): {add['fts5_alone']:,.0f}.",
    ]
    lines += [
        "",
        f"The index against a brute-force fusion (one FTS5 `bm25()` query of all the query's "
        f"words, every cosine), each collection's queries over its corpus plus synthetic "
        f"documents up to {BRUTE_FORCE_AT:,}: nDCG@10 and the share of queries with the same "
        "top 10.",
        "",
        "| collection | documents | index | brute force | same top 10 |",
        "|---|---|---|---|---|",
    ]
    for key, value in speed.items():
        if key.startswith("brute force "):
            lines.append(
                f"| {key.removeprefix('brute force ')} | {value['documents']:,.0f} | "
                f"{value['index']:.4f} | {value['brute force']:.4f} | "
                f"{value['same top 10']:.1%} |"
            )
    return lines


def _vector_tables(vectors: dict[str, Any]) -> list[str]:
    lines = ["", "## Stored vector type", "", "| | bytes/doc |"]
    timing_keys = [key for key in vectors if key.startswith("ms at")]
    lines = [
        "",
        "## Stored vector type",
        "",
        "Dense scoring of one query against every document (ms, median of 5), bytes a "
        "document in memory (256 dims; int8 with a float32 scale), and dense nDCG@10.",
        "",
        "| type | bytes/doc | "
        + " | ".join(key for key in timing_keys)
        + " | SciFact | Vaswani | Cranfield |",
        "|---|---|" + "---|" * (len(timing_keys) + 3),
    ]
    names = {"float32": "float32 (numpy)", "float16": "float16 (numpy)"}
    for kind in ("float32", "float16", "int8"):
        label = names.get(kind, "int8 (onnxruntime MatMulInteger)")
        timings = " | ".join(f"{vectors[key][label]:.1f}" for key in timing_keys)
        quality = " | ".join(
            f"{vectors['dense nDCG@10'][name][kind]:.4f}"
            for name in ("scifact", "vaswani", "cranfield")
        )
        lines.append(f"| {label} | {vectors['bytes_per_doc'][kind]} | {timings} | {quality} |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quality", action="store_true", help="nDCG@10 on the dev collections")
    parser.add_argument("--teacher", action="store_true", help="with --quality: the teacher too")
    parser.add_argument("--speed", action="store_true", help="add, search and memory at --sizes")
    parser.add_argument("--vectors", action="store_true", help="compare stored vector types")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--data", type=Path, default=default_data_dir())
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    if not (args.quality or args.speed or args.vectors):
        parser.error("give at least one of --quality, --speed, --vectors")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    results: dict[str, Any] = {
        "argv": list(argv if argv is not None else sys.argv[1:]),
        "environment": harness.environment(),
    }
    with tempfile.TemporaryDirectory(prefix="sse-search-") as work:
        if args.quality:
            results["quality"] = quality(args.data, Path(work), args.teacher)
        if args.speed:
            results["speed"] = speed(args.data, Path(work), args.sizes)
        if args.vectors:
            results["vectors"] = vector_types(args.data, args.sizes)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "search.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = markdown(results)
    (args.out / "search.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
