"""Hard negatives for the ranking loss, mined with BM25 over the training passages of a source.

For each training anchor, the passages of the same source are ranked by BM25 (word pieces as
terms, the anchor's pieces as a bag); one of the ranks ``SKIP`` to ``DEPTH`` that is not the
anchor's own positive and not of the same subject (the text before the first colon of the
anchor: another section of the same Wikipedia article or PEP) becomes its negative. The top
hits are skipped because they are most often unlabelled positives (duplicated passages,
overlapping sections). Deterministic given the seed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger("negatives")

K1, B = 0.9, 0.4
SKIP, DEPTH = 1, 12
#: Queries keep their ``QUERY_TERMS`` rarest terms found in at most ``MAX_DF`` of a source's
#: passages: common terms touch nearly every passage, rank little and make scoring quadratic.
MAX_DF = 0.01
QUERY_TERMS = 8
CHUNK = 1024


def _term_matrix(ids: Sequence[Sequence[int] | npt.NDArray[np.int64]], vocab: int) -> Any:
    from scipy.sparse import csr_matrix

    lengths = np.fromiter((len(seq) for seq in ids), dtype=np.int64, count=len(ids))
    indptr = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.fromiter((t for seq in ids for t in seq), dtype=np.int64, count=int(indptr[-1]))
    matrix = csr_matrix(
        (np.ones(len(flat), dtype=np.float32), flat, indptr), shape=(len(ids), vocab)
    )
    matrix.sum_duplicates()
    return matrix


def _rarest_terms(
    anchors: Sequence[Sequence[int] | npt.NDArray[np.int64]],
    df: npt.NDArray[np.int64],
    max_df: float,
    vocab: int,
) -> Any:
    """Binary query matrix: each anchor's ``QUERY_TERMS`` rarest distinct terms under ``max_df``."""
    from scipy.sparse import csr_matrix

    indptr, indices = [0], []
    for seq in anchors:
        terms = sorted({t for t in seq if 0 < df[t] <= max_df}, key=lambda t: (df[t], t))
        indices.extend(terms[:QUERY_TERMS])
        indptr.append(len(indices))
    data = np.ones(len(indices), dtype=np.float32)
    return csr_matrix(
        (data, np.array(indices, dtype=np.int64), indptr), shape=(len(anchors), vocab)
    )


def mine(
    anchors: Sequence[Sequence[int] | npt.NDArray[np.int64]],
    positives: Sequence[int],
    passages: Sequence[Sequence[int] | npt.NDArray[np.int64]],
    subjects: Sequence[str],
    vocab: int,
    seed: int,
) -> npt.NDArray[np.int64]:
    """One hard negative per anchor: an index into ``passages``, or -1 where none was found.

    Args:
        anchors: token ids of each anchor.
        positives: index into ``passages`` of each anchor's own positive.
        passages: token ids of the source's distinct passages.
        subjects: the subject of each passage's anchor (same length as ``passages``).
        vocab: vocabulary size.
        seed: seed of the choice among the candidate ranks.
    """
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    docs = _term_matrix(passages, vocab).tocsc()
    n = docs.shape[0]
    df = np.diff(docs.indptr)
    idf = np.log(1 + (n - df + 0.5) / (df + 0.5)).astype(np.float32)
    lengths = np.asarray(docs.sum(axis=1)).ravel()
    norm = K1 * (1 - B + B * lengths / max(lengths.mean(), 1.0))
    docs = docs.tocsr()
    tf = docs.data
    rows = np.repeat(np.arange(n), np.diff(docs.indptr))
    docs.data = idf[docs.indices] * tf * (K1 + 1) / (tf + norm[rows])
    weights = docs.T.tocsr()
    queries = _rarest_terms(anchors, df, MAX_DF * n, vocab)
    out = np.full(len(anchors), -1, dtype=np.int64)
    subject_ids = {s: i for i, s in enumerate(dict.fromkeys(subjects))}
    subject_of = np.array([subject_ids[s] for s in subjects])
    for start in range(0, len(anchors), CHUNK):
        scores = (queries[start : start + CHUNK] @ weights).tocsr()
        for row in range(scores.shape[0]):
            lo, hi = scores.indptr[row], scores.indptr[row + 1]
            if hi - lo == 0:
                continue
            cols, vals = scores.indices[lo:hi], scores.data[lo:hi]
            if len(vals) > DEPTH + 1:
                keep = np.argpartition(-vals, DEPTH)[: DEPTH + 1]
                cols, vals = cols[keep], vals[keep]
            top = cols[np.lexsort((cols, -vals))]
            own = positives[start + row]
            top = top[(top != own) & (subject_of[top] != subject_of[own])][SKIP:DEPTH]
            if len(top):
                out[start + row] = top[rng.integers(len(top))]
    logger.info(
        "negatives: %d of %d anchors over %d passages in %.0f s",
        int((out >= 0).sum()),
        len(anchors),
        n,
        time.perf_counter() - started,
    )
    return out
