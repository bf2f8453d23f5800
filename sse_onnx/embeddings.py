"""Post-processing of embeddings: L2 normalisation, precision conversion and similarity.

The one home of L2 normalisation, numpy only (the package imports it without onnxruntime):
:func:`normalize` for a new array, :func:`normalized_row` and :func:`normalize_in_place` for the
encoder's one query and its blocks of texts; every one divides by ``max(norm, NORM_EPS)``.

The conventions are sentence-transformers' (``normalize_embeddings``, ``precision``,
``quantize_embeddings``, ``similarity``), so results can be compared one to one.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal, get_args

import numpy as np
import numpy.typing as npt

__all__ = ["PRECISIONS", "Precision", "normalize", "quantize", "similarity"]

logger = logging.getLogger(__name__)

Precision = Literal["float32", "int8", "uint8", "binary", "ubinary"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
#: torch.nn.functional.normalize's eps: a zero row stays zero rather than becoming NaN.
NORM_EPS = 1e-12
#: Rows normalised at a time in place: the squares of a block, not of a whole corpus.
_NORMALIZE_ROWS = 256


def normalize(embeddings: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
    """L2-normalise rows as ``torch.nn.functional.normalize(eps=1e-12)`` does, in float32.

    A zero row stays zero rather than becoming NaN. Float64 rows are normalised in float64,
    then rounded.
    """
    # What np.linalg.norm computes, without its per-call overhead (a query is one small row).
    norms = np.sqrt(np.square(embeddings).sum(axis=-1, keepdims=True))
    np.maximum(norms, NORM_EPS, out=norms)
    out: npt.NDArray[np.float32] = (embeddings / norms).astype(np.float32, copy=False)
    return out


def normalized_row(row: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """One row L2-normalised exactly as :func:`normalize_in_place` does each row of a list.

    Both take the sum of squares from BLAS's dot of the row with itself (``matmul`` of stacked
    vectors calls the same dot), a third of the cost of numpy's pairwise sum for one row; the
    float64 square root rounded to float32 is the float32 square root (53 >= 2 * 24 + 2 bits).
    """
    norm = np.float32(math.sqrt(row.dot(row)))
    out: npt.NDArray[np.float32] = row / (norm if norm > NORM_EPS else np.float32(NORM_EPS))
    return out


def normalize_in_place(rows: npt.NDArray[np.float32]) -> None:
    """L2-normalise ``rows`` in place as ``torch.nn.functional.normalize(eps=1e-12)`` does, a
    block of rows at a time.

    A corpus's embeddings are the largest array of a call; ``normalize`` would hold two more
    of its size at once (the squares, then the result).
    """
    for start in range(0, len(rows), _NORMALIZE_ROWS):
        block = rows[start : start + _NORMALIZE_ROWS]
        norms = np.sqrt(np.matmul(block[:, None, :], block[:, :, None])[:, 0])
        np.maximum(norms, NORM_EPS, out=norms)
        np.divide(block, norms, out=block)


def quantize(
    embeddings: npt.NDArray[np.float32],
    precision: Precision,
    *,
    ranges: npt.NDArray[np.float32] | None = None,
) -> npt.NDArray[np.generic]:
    """Convert float embeddings ``(n, dim)`` to ``precision`` as sentence-transformers does.

    ``int8``/``uint8`` use 256 buckets per dimension between the minimum and maximum of the
    given embeddings (so they need at least two, and are steadier with hundreds), or of
    ``ranges``; ``binary``/``ubinary`` pack the sign bits into ``ceil(dim / 8)`` bytes, offset by
    -128 for ``binary``.

    Args:
        embeddings: Float embeddings ``(n, dim)``.
        precision: One of :data:`PRECISIONS`.
        ranges: For int8/uint8, a ``(2, dim)`` array of each dimension's minimum and maximum
            (sentence-transformers' ``ranges``), e.g. taken once from a calibration sample so
            that an embedding's buckets do not depend on the texts quantized with it; values
            outside are clipped to the end buckets. ``None`` takes them from ``embeddings``.

    Raises:
        ValueError: for an unknown precision, ``ranges`` of the wrong shape, or int8/uint8
            ranges asked of a single embedding.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not supported; choose one of {PRECISIONS}.")
    if precision == "float32":
        return embeddings
    if precision in ("binary", "ubinary"):
        packed = np.packbits(embeddings > 0, axis=-1)
        return (packed.astype(np.int16) - 128).astype(np.int8) if precision == "binary" else packed
    if ranges is not None:
        dim = embeddings.shape[-1]
        if ranges.shape != (2, dim):
            raise ValueError(
                f"ranges has shape {ranges.shape}; {precision} of {dim}-dim embeddings needs "
                f"(2, {dim}): each dimension's minimum and maximum."
            )
        return _buckets(embeddings, ranges[0], ranges[1], precision)
    if embeddings.shape[0] == 0:
        return np.zeros(embeddings.shape, dtype=np.int8 if precision == "int8" else np.uint8)
    if embeddings.shape[0] == 1:
        raise ValueError(
            f"Cannot compute {precision} quantization ranges from a single embedding; encode a "
            "representative batch of texts at once, or use precision='float32' and quantize later."
        )
    if embeddings.shape[0] < 100:
        logger.warning(
            "Computing %s buckets from %d embeddings; ranges are steadier from more texts.",
            precision,
            embeddings.shape[0],
        )
    return _buckets(embeddings, embeddings.min(axis=0), embeddings.max(axis=0), precision)


def _buckets(
    embeddings: npt.NDArray[np.float32],
    lows: npt.NDArray[np.float32],
    highs: npt.NDArray[np.float32],
    precision: Precision,
) -> npt.NDArray[np.generic]:
    """Each value's bucket among 256 equal ones per dimension from ``lows`` to ``highs``."""
    steps = (highs - lows) / 255
    steps = np.where(steps == 0, 1, steps)
    buckets = np.clip(np.floor((embeddings - lows) / steps), 0, 255)
    result: npt.NDArray[np.generic] = (
        buckets.astype(np.uint8) if precision == "uint8" else (buckets - 128).astype(np.int8)
    )
    return result


def similarity(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
) -> npt.NDArray[np.float32]:
    """Cosine similarity between every row of ``a`` and every row of ``b``.

    Args:
        a: ``(n, dim)`` or ``(dim,)`` float embeddings.
        b: ``(m, dim)`` or ``(dim,)`` float embeddings.

    Returns:
        A float32 ``(n, m)`` matrix (1-D inputs count as one row).

    Example:
        >>> similarity([[1.0, 0.0]], [[1.0, 0.0], [0.0, 2.0]])
        array([[1., 0.]], dtype=float32)
    """
    left = np.atleast_2d(np.asarray(a, dtype=np.float32))
    right = np.atleast_2d(np.asarray(b, dtype=np.float32))
    if left.ndim != 2 or right.ndim != 2 or left.shape[1] != right.shape[1]:
        raise ValueError(
            f"similarity needs two (n, dim) arrays of the same dim; got shapes {left.shape} and "
            f"{right.shape}."
        )
    scores: npt.NDArray[np.float32] = normalize(left) @ normalize(right).T
    return scores
