"""Retrieval (nDCG@10) and STS-B (Spearman) scoring on the BEIR-layout evaluation data.

The one home of the evaluation that the exporter's quality report, ``bench/`` and the default
model's recipe (``models/``) use. It needs numpy only: importing it loads neither the exporter
(torch, onnx) nor the runtime's onnxruntime (it normalises with :mod:`sse_onnx.embeddings`,
numpy only), so every one of them can import it.

The scoring functions take embeddings or any ``embed(texts) -> (n, dim) array`` callable, so
the same code scores the PyTorch reference, an exported folder and the teacher. Data is read
from ``$SSE_DATA``, or ``../shared/data`` beside the source tree; an absent dataset is skipped.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sse_onnx.embeddings import normalize

__all__ = [
    "DATASETS",
    "DEFAULT_DATASETS",
    "Embed",
    "RetrievalData",
    "RetrievalSpec",
    "StsData",
    "StsSpec",
    "average_ranks",
    "default_data_dir",
    "evaluate",
    "load_dataset",
    "load_named",
    "load_retrieval",
    "load_sts",
    "ndcg_at_k",
    "retrieval_ndcg",
    "retrieval_ndcg_from_embeddings",
    "spearman",
    "sts_spearman",
    "sts_spearman_from_embeddings",
    "truncate",
]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
#: A text encoder: a list of ``n`` texts to an ``(n, dim)`` float array (normalised or not).
Embed = Callable[[list[str]], FloatArray]

DATA_ENV = "SSE_DATA"
MATRYOSHKA_DIMS = (384, 256, 128, 64, 32)
NDCG_K = 10


# --------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class RetrievalSpec:
    """A BEIR-layout retrieval collection under the data folder.

    Attributes:
        title: Column name in the results table.
        folder: Folder relative to the data root, holding ``corpus.jsonl`` and ``queries.jsonl``.
        split: Qrels split, read from ``qrels/<split>.tsv``.
    """

    title: str
    folder: str
    split: str


@dataclass(frozen=True)
class StsSpec:
    """An STS Benchmark csv file under the data folder.

    Attributes:
        title: Column name in the results table.
        file: Path of the tab-separated file relative to the data root.
    """

    title: str
    file: str


#: Known datasets by CLI name. ``scifact-train`` is the only split that may be used for tuning.
DATASETS: dict[str, RetrievalSpec | StsSpec] = {
    "scifact": RetrievalSpec("SciFact", "retrieval/scifact", "test"),
    "vaswani": RetrievalSpec("Vaswani", "retrieval/vaswani", "test"),
    "cranfield": RetrievalSpec("Cranfield", "retrieval/cranfield", "test"),
    "stsb-dev": StsSpec("STS-B dev", "sts/sts-dev.csv"),
    "scifact-train": RetrievalSpec("SciFact train", "retrieval/scifact_train", "train"),
}
DEFAULT_DATASETS = ("scifact", "vaswani", "cranfield", "stsb-dev")


@dataclass(frozen=True)
class RetrievalData:
    """A loaded retrieval collection.

    Attributes:
        doc_ids: Corpus ids, in file order.
        doc_texts: ``title + " " + text``, stripped, aligned with ``doc_ids``.
        query_ids: Ids of the judged queries (those with a positive qrel), in file order.
        query_texts: Texts aligned with ``query_ids``.
        qrels: Query id -> {doc id -> relevance}, positive relevances only.
    """

    doc_ids: list[str]
    doc_texts: list[str]
    query_ids: list[str]
    query_texts: list[str]
    qrels: dict[str, dict[str, int]]


@dataclass(frozen=True)
class StsData:
    """Sentence pairs with gold similarity scores (0-5).

    Attributes:
        sentences1: First sentence of each pair.
        sentences2: Second sentence of each pair.
        scores: Gold scores, aligned with the pairs.
    """

    sentences1: list[str]
    sentences2: list[str]
    scores: npt.NDArray[np.float64]


def default_data_dir() -> Path:
    """Return the evaluation data root: ``$SSE_DATA`` or ``../shared/data`` beside the repo."""
    override = os.environ.get(DATA_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def _read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels tsv (with header), keeping only positive relevances."""
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as handle:
        next(handle)  # header: query-id, corpus-id, score
        for line in handle:
            if not line.strip():
                continue
            query_id, doc_id, score = line.rstrip("\n").split("\t")
            relevance = int(score)
            # Graded collections may carry 0 or -1 for judged non-relevant documents.
            if relevance > 0:
                qrels.setdefault(query_id, {})[doc_id] = relevance
    return qrels


def load_retrieval(folder: Path, split: str) -> RetrievalData:
    """Load a BEIR-layout collection, keeping only queries that have a positive qrel.

    Args:
        folder: Folder with ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.
        split: Qrels split name.

    Returns:
        The collection; documents are scored as ``title + " " + text`` (stripped).
    """
    corpus = _read_jsonl(folder / "corpus.jsonl")
    queries = _read_jsonl(folder / "queries.jsonl")
    qrels = _read_qrels(folder / "qrels" / f"{split}.tsv")
    judged = [query for query in queries if query["_id"] in qrels]
    missing = set(qrels) - {query["_id"] for query in judged}
    if missing:
        logger.warning("%s: %d judged queries are absent from queries.jsonl", folder, len(missing))
    return RetrievalData(
        doc_ids=[doc["_id"] for doc in corpus],
        doc_texts=[f"{doc.get('title', '')} {doc.get('text', '')}".strip() for doc in corpus],
        query_ids=[query["_id"] for query in judged],
        query_texts=[query["text"] for query in judged],
        qrels={query["_id"]: qrels[query["_id"]] for query in judged},
    )


def load_sts(path: Path) -> StsData:
    """Load an STS Benchmark file.

    The file is tab-separated without a header: genre, file, year, id, score, sentence 1,
    sentence 2, then optional source columns. Quotes are literal text, so no csv quoting applies.

    Args:
        path: The ``sts-*.csv`` file.

    Returns:
        The sentence pairs and gold scores.
    """
    first: list[str] = []
    second: list[str] = []
    scores: list[float] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            if len(fields) < 7:
                continue
            scores.append(float(fields[4]))
            first.append(fields[5])
            second.append(fields[6])
    return StsData(first, second, np.asarray(scores, dtype=np.float64))


def load_dataset(spec: RetrievalSpec | StsSpec, data_dir: Path) -> RetrievalData | StsData | None:
    """Load a dataset by its spec, or return ``None`` if its files are absent."""
    if isinstance(spec, RetrievalSpec):
        folder = data_dir / spec.folder
        if not (folder / "qrels" / f"{spec.split}.tsv").is_file():
            return None
        return load_retrieval(folder, spec.split)
    path = data_dir / spec.file
    return load_sts(path) if path.is_file() else None


# --------------------------------------------------------------------------- metrics


def ndcg_at_k(ranked_ids: Sequence[str], relevance: Mapping[str, int], k: int = NDCG_K) -> float:
    """Return nDCG@k with gain ``2**rel - 1`` and discount ``log2(rank + 1)``.

    The ideal DCG is computed from all the query's judgments, including judged documents the
    ranking never returned.

    Args:
        ranked_ids: Document ids, best first.
        relevance: Doc id -> relevance for this query; missing or non-positive is non-relevant.
        k: Cut-off.

    Returns:
        nDCG@k in [0, 1]; 0 when the query has no relevant document.

    Example (by hand: DCG = 3/log2(2) + 0 + 1/log2(4) = 3.5; ideal = 3 + 1/log2(3) = 3.6309):

    >>> round(ndcg_at_k(["d2", "d3", "d1"], {"d1": 1, "d2": 2}), 4)
    0.9639
    >>> ndcg_at_k(["d3"], {"d1": 1})
    0.0
    """
    gains = np.array([max(relevance.get(doc, 0), 0) for doc in ranked_ids[:k]], dtype=np.float64)
    ideal = np.sort(np.array([rel for rel in relevance.values() if rel > 0], dtype=np.float64))
    ideal = ideal[::-1][:k]
    ideal_dcg = _dcg(ideal)
    return float(_dcg(gains) / ideal_dcg) if ideal_dcg > 0 else 0.0


def _dcg(relevances: npt.NDArray[np.float64]) -> float:
    discounts = np.log2(np.arange(2, relevances.size + 2, dtype=np.float64))
    return float(np.sum((2.0**relevances - 1.0) / discounts))


def average_ranks(values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Return 1-based ranks, ties sharing their average rank (as ``scipy.stats.rankdata``).

    >>> average_ranks([10.0, 20.0, 10.0, 30.0]).tolist()
    [1.5, 3.0, 1.5, 4.0]
    """
    data = np.asarray(values)
    order = np.argsort(data, kind="stable")
    ordered = data[order]
    group_starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    group_ends = np.r_[group_starts[1:], data.size]
    group_rank = (group_starts + group_ends + 1) / 2.0  # mean of 1-based ranks start+1 .. end
    group_of = np.cumsum(np.r_[True, ordered[1:] != ordered[:-1]]) - 1
    ranks = np.empty(data.size, dtype=np.float64)
    ranks[order] = group_rank[group_of]
    return ranks


def spearman(x: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Return Spearman's rank correlation (Pearson correlation of average ranks).

    >>> round(spearman([1, 2, 3, 4], [10, 20, 20, 40]), 4)
    0.9487
    """
    return float(np.corrcoef(average_ranks(x), average_ranks(y))[0, 1])


def truncate(vectors: npt.NDArray[np.floating[Any]], dim: int | None) -> FloatArray:
    """Return the first ``dim`` columns, L2-normalised (all columns if ``dim`` is ``None``)."""
    return normalize(vectors if dim is None else vectors[:, :dim])


def _top_k(queries: FloatArray, docs: FloatArray, k: int) -> npt.NDArray[np.intp]:
    """Return, per query, the indices of the ``k`` best docs by dot product, best first.

    Ties are broken by corpus order so that the ranking is deterministic.
    """
    scores = queries @ docs.T
    k = min(k, docs.shape[0])
    candidates = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    candidate_scores = np.take_along_axis(scores, candidates, axis=1)
    order = np.lexsort((candidates, -candidate_scores), axis=1)
    return np.take_along_axis(candidates, order, axis=1)


def retrieval_ndcg_from_embeddings(
    data: RetrievalData, query_vectors: FloatArray, doc_vectors: FloatArray, k: int = NDCG_K
) -> float:
    """Return mean nDCG@k of exact cosine retrieval over all documents.

    Args:
        data: The collection the vectors were computed from.
        query_vectors: One L2-normalised row per ``data.query_ids``.
        doc_vectors: One L2-normalised row per ``data.doc_ids``.
        k: Cut-off.

    Returns:
        nDCG@k averaged over the judged queries.
    """
    doc_ids = np.asarray(data.doc_ids, dtype=object)
    scores = []
    for start in range(0, len(data.query_ids), 256):
        block = _top_k(query_vectors[start : start + 256], doc_vectors, k)
        for query_id, ranked in zip(data.query_ids[start : start + 256], block, strict=True):
            scores.append(ndcg_at_k(list(doc_ids[ranked]), data.qrels[query_id], k))
    return float(np.mean(scores))


def retrieval_ndcg(data: RetrievalData, embed: Embed, k: int = NDCG_K) -> float:
    """Embed a collection's queries and documents with ``embed`` and return mean nDCG@k."""
    queries = normalize(embed(data.query_texts))
    docs = normalize(embed(data.doc_texts))
    return retrieval_ndcg_from_embeddings(data, queries, docs, k)


def sts_spearman_from_embeddings(
    data: StsData, vectors1: FloatArray, vectors2: FloatArray
) -> float:
    """Return Spearman's correlation between pair cosines and gold scores.

    Args:
        data: The pairs the vectors were computed from.
        vectors1: L2-normalised rows for ``data.sentences1``.
        vectors2: L2-normalised rows for ``data.sentences2``.
    """
    cosines = np.sum(vectors1 * vectors2, axis=1, dtype=np.float64)
    return spearman(cosines, data.scores)


def sts_spearman(data: StsData, embed: Embed) -> float:
    """Embed both sides of each pair with ``embed`` and return Spearman's correlation."""
    vectors1 = normalize(embed(data.sentences1))
    vectors2 = normalize(embed(data.sentences2))
    return sts_spearman_from_embeddings(data, vectors1, vectors2)


def evaluate(
    embed: Embed,
    datasets: Mapping[str, RetrievalData | StsData],
    dims: Sequence[int | None],
) -> dict[int | None, dict[str, float]]:
    """Score ``embed`` on every dataset at every width, embedding each text set once.

    Args:
        embed: Full-width encoder; its output is sliced to each width and renormalised.
        datasets: Column title -> loaded dataset.
        dims: Widths to report; ``None`` means the encoder's full width without slicing.

    Returns:
        Width -> {column title -> score}.
    """
    results: dict[int | None, dict[str, float]] = {dim: {} for dim in dims}
    for title, data in datasets.items():
        started = time.perf_counter()
        if isinstance(data, RetrievalData):
            queries, docs = embed(data.query_texts), embed(data.doc_texts)
            for dim in dims:
                results[dim][title] = retrieval_ndcg_from_embeddings(
                    data, truncate(queries, dim), truncate(docs, dim)
                )
        else:
            first, second = embed(data.sentences1), embed(data.sentences2)
            for dim in dims:
                results[dim][title] = sts_spearman_from_embeddings(
                    data, truncate(first, dim), truncate(second, dim)
                )
        logger.info("%s done in %.1f s", title, time.perf_counter() - started)
    return results


def load_named(name: str, data_dir: Path) -> RetrievalData | StsData | None:
    """Load a dataset of :data:`DATASETS` by name, or ``None`` if its files are absent."""
    return load_dataset(DATASETS[name], data_dir)
