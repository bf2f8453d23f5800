"""How the dense and keyword scores of one query become one ranking (numpy only).

Every document that passes the filter takes part. Its dense score is its cosine with the query;
its keyword score is FTS5's BM25 (``-bm25()``) where it matches a query term, else 0. Each part
is standardised over those documents (z-score: minus the mean, over the standard deviation;
a part that does not vary counts 0) and the two are mixed, ``alpha * dense + (1 - alpha) *
keyword``. Chosen on SciFact's train queries (the only split tuned on) among the alternatives
in bench/results/fusion.md (RRF, min-max, DBSF, candidate sets): none beat this mix there by more
than its noise, and this one needs no candidate cut-off; ``alpha`` is its best on that split.

Because documents with no match score 0, the keyword part's mean and deviation over all
documents follow from the matches alone, so the whole fusion costs one pass over the dense
scores.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = ["MODES", "Mode", "fuse", "standardize", "top_k"]

Mode = Literal["hybrid", "dense", "keyword"]
MODES: tuple[Mode, ...] = ("hybrid", "dense", "keyword")

FloatArray = npt.NDArray[np.float32]


def standardize(scores: FloatArray, allowed: npt.NDArray[np.bool_] | None = None) -> FloatArray:
    """``(scores - mean) / std`` over the allowed entries (all when ``None``), in float64 sums.

    A part whose allowed scores are all equal (or that has none) gives zeros.
    """
    chosen = scores if allowed is None else scores[allowed]
    if chosen.size == 0:
        return np.zeros_like(scores)
    values = chosen.astype(np.float64)
    mean = values.mean()
    std = values.std()
    if not np.isfinite(std) or std <= 1e-12 * max(1.0, abs(mean)):
        return np.zeros_like(scores)
    standardized: FloatArray = ((scores - mean) / std).astype(np.float32)
    return standardized


def fuse(
    dense: FloatArray,
    keyword: FloatArray,
    alpha: float,
    allowed: npt.NDArray[np.bool_] | None = None,
) -> FloatArray:
    """``alpha * z(dense) + (1 - alpha) * z(keyword)``, standardised over the allowed entries."""
    mixed = standardize(dense, allowed)
    mixed *= np.float32(alpha)
    mixed += np.float32(1 - alpha) * standardize(keyword, allowed)
    return mixed


def top_k(
    scores: FloatArray, k: int, allowed: npt.NDArray[np.bool_] | None = None
) -> npt.NDArray[np.intp]:
    """Positions of the ``k`` highest allowed scores, best first; ties go to the lower position.

    Ties are broken the same way whatever the size, so the result does not depend on how
    ``argpartition`` happens to split equal scores.
    """
    candidates = (
        np.arange(len(scores), dtype=np.intp) if allowed is None else np.flatnonzero(allowed)
    )
    values = scores[candidates]
    if len(candidates) > k:
        kth = np.partition(values, len(values) - k)[len(values) - k]
        keep = values >= kth
        candidates, values = candidates[keep], values[keep]
    order = np.lexsort((candidates, -values))[:k]
    return candidates[order]
