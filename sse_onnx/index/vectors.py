"""The index's vectors: int8 rows with a scale each, held in memory and scored exactly.

A document's unit vector ``v`` is stored as ``round(v / s)`` in int8 with ``s = max|v| / 127``
(a row of ``dim`` bytes and a float32 scale); a query is quantized the same way, and their
cosine is ``s_doc * s_query * (int8 . int8)``. Every document is scored (no approximate index):
``scores.onnx`` computes the integer dot products with onnxruntime's ``MatMulInteger``, which
takes its first input as uint8, so rows are held shifted by 128 (their top bit flipped) and
``128 * sum(query)`` is taken back off. Why int8, against float32 and float16, is measured in
bench/results/search.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from sse_onnx.errors import IndexFormatError

__all__ = ["Vectors", "dequantize", "find", "held_positions", "quantize_rows"]

#: The scoring graph, written by ``python -m sse_export.score_graph`` (export/score_graph.py).
SCORE_GRAPH = Path(__file__).resolve().parent / "scores.onnx"
_DOCUMENTS, _QUERIES, _SCORES = "documents", "queries", "scores"
_LEVELS = 127.0
_G = TypeVar("_G", bound=np.generic)


def quantize_rows(
    rows: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """Each row as int8 and its scale, ``rows ~= q * scale[:, None]`` (a zero row: scale 0)."""
    rows = np.asarray(rows, dtype=np.float32)
    peak = np.abs(rows).max(axis=1) if rows.size else np.zeros(len(rows), np.float32)
    scales = (peak / _LEVELS).astype(np.float32)
    safe = np.where(scales > 0, scales, np.float32(1))
    q = np.rint(rows / safe[:, None]).clip(-_LEVELS, _LEVELS).astype(np.int8)
    return q, scales


def dequantize(q: npt.NDArray[np.int8], scales: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The float32 rows that ``quantize_rows`` stands for."""
    return (q.astype(np.float32) * scales[:, None]).astype(np.float32)


class Vectors:
    """The rows of an index in memory, in the order of their document numbers (ascending):
    each document's number, vector, scale, and length in terms (for BM25).

    Args:
        dim: Width of every row.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.docs = np.zeros(0, dtype=np.int64)
        self._shifted = np.zeros((0, dim), dtype=np.uint8)
        self.scales = np.zeros(0, dtype=np.float32)
        self.lengths = np.zeros(0, dtype=np.int32)
        self._count = 0
        options = ort.SessionOptions()
        # One core: a search is a small call among many; threads cost more than they save.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(SCORE_GRAPH), options, providers=["CPUExecutionProvider"]
        )

    def __len__(self) -> int:
        return self._count

    def nbytes(self) -> int:
        """Bytes held by the rows, their scales and their document numbers."""
        return int(
            self._shifted.nbytes + self.scales.nbytes + self.docs.nbytes + self.lengths.nbytes
        )

    def reset(self, count: int) -> None:
        """Empty the rows and make room for ``count`` of them."""
        self.docs = np.zeros(count, dtype=np.int64)
        self._shifted = np.zeros((count, self.dim), dtype=np.uint8)
        self.scales = np.zeros(count, dtype=np.float32)
        self.lengths = np.zeros(count, dtype=np.int32)
        self._count = 0

    def append(
        self,
        docs: npt.NDArray[np.int64],
        q: npt.NDArray[np.int8],
        scales: npt.NDArray[np.float32],
        lengths: npt.NDArray[np.int32],
    ) -> None:
        """Add rows whose document numbers are all above those held."""
        n = len(docs)
        end = self._count + n
        if end > len(self.docs):
            grown = max(end, 2 * len(self.docs), 1024)
            self.docs = _grown(self.docs, grown)
            self._shifted = _grown(self._shifted, grown)
            self.scales = _grown(self.scales, grown)
            self.lengths = _grown(self.lengths, grown)
        self.docs[self._count : end] = docs
        self._shifted[self._count : end] = q.view(np.uint8) ^ np.uint8(0x80)
        self.scales[self._count : end] = scales
        self.lengths[self._count : end] = lengths
        self._count = end

    def remove(self, docs: npt.NDArray[np.int64]) -> None:
        """Drop the rows of these documents (those not held are ignored)."""
        keep = ~np.isin(self.docs[: self._count], docs)
        kept = int(keep.sum())
        self.docs[:kept] = self.docs[: self._count][keep]
        self._shifted[:kept] = self._shifted[: self._count][keep]
        self.scales[:kept] = self.scales[: self._count][keep]
        self.lengths[:kept] = self.lengths[: self._count][keep]
        self._count = kept

    def positions(self, docs: npt.NDArray[np.int64]) -> npt.NDArray[np.intp]:
        """Where each of ``docs`` sits among the rows.

        Raises:
            IndexFormatError: if a document is not held (the file's full-text index names a
                document its table does not hold: it is damaged).
        """
        return held_positions(self.docs[: self._count], docs)

    def cosines(self, queries: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """``(m, n)`` cosines of unit ``queries`` against every row held."""
        n = self._count
        if n == 0:
            return np.zeros((len(queries), 0), dtype=np.float32)
        q, q_scales = quantize_rows(queries)
        (dots,) = self._session.run(
            [_SCORES],
            {_DOCUMENTS: self._shifted[:n], _QUERIES: np.ascontiguousarray(q.T)},
        )
        # The rows were shifted by +128: take 128 * sum(query) back off, exactly, in int32.
        dots -= 128 * q.astype(np.int32).sum(axis=1)
        out: npt.NDArray[np.float32] = dots.T.astype(np.float32)
        out *= self.scales[:n]
        out *= q_scales[:, None]
        return out


def find(held: npt.NDArray[np.int64], docs: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Where each of ``docs`` sits in ``held`` (ascending document numbers), -1 where absent."""
    if len(held) == 0:
        return np.full(len(docs), -1, np.int64)
    at = np.searchsorted(held, docs).clip(0, len(held) - 1)
    return np.where(held[at] == docs, at, -1)


def held_positions(
    held: npt.NDArray[np.int64], docs: npt.NDArray[np.int64]
) -> npt.NDArray[np.int64]:
    """Where each of ``docs`` sits in ``held``.

    Raises:
        IndexFormatError: if a document is not held (the file's full-text index names a
            document its table does not hold: it is damaged).
    """
    at = find(held, docs)
    if (at < 0).any():
        raise IndexFormatError(
            "The index's full-text part names documents its table does not hold; the file "
            "is damaged. Build the index again from its texts."
        )
    return at


def _grown(array: npt.NDArray[_G], rows: int) -> npt.NDArray[_G]:
    out = np.zeros((rows, *array.shape[1:]), dtype=array.dtype)
    out[: len(array)] = array
    return out
