"""Each term's documents and counts, stored beside FTS5 so that BM25 is array arithmetic.

FTS5's ``bm25()`` looks up each matching document's length, one B-tree search a row: about a
microsecond a document, so a common word costs a query hundreds of milliseconds in a million
documents. The index keeps what BM25 needs in its own table instead, written in the same
transaction as the text: for each term, the documents that hold it and how often (``tf``);
each document's length in terms is ``sse_docs.tokens``. A query reads a term's postings in a
few rows and scores them with numpy: FTS5's ``bm25()`` with the same terms, counts, lengths
and formula, in float64 (each term's part is then kept as float32; tests/test_index.py
compares the two).

Terms come from FTS5 itself: a batch of texts is put through a scratch FTS5 table with the
index's tokenizer, and its ``fts5vocab`` tables say which terms each document holds how often.

Storage (docs/index-format.md): ``sse_postings(term, segment, docs, counts)``, one row a term
and segment, ``docs`` the documents' numbers as little-endian uint32 and ``counts`` their
counts as uint8, uint16 or uint32 (the width is ``len(counts) / (len(docs) / 4)``). An add
writes segments (level 0) of up to ``SEGMENT_DOCUMENTS`` documents each; after each, every
level that holds ``FANOUT`` segments has them merged into one of the next level, dropping
the postings of documents that are gone. A deleted or replaced document's
postings stay until a merge reaches their segment (never, for a segment no later add merges
again): a posting counts only if its document is in ``sse_docs`` (a replaced text gets a
new number, so a number is never reused).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sse_onnx.errors import IndexFormatError
from sse_onnx.index.schema import FTS_TOKENIZER

__all__ = [
    "FANOUT",
    "K1",
    "MAX_DOC",
    "SEGMENT_DOCUMENTS",
    "B",
    "Postings",
    "TermReader",
    "Tokenizer",
    "bm25_part",
    "decode",
    "merge_segments",
    "write_segment",
]

#: FTS5's bm25() constants.
K1, B = 1.2, 0.75
#: Documents whose postings are gathered in memory before they are written as one segment.
SEGMENT_DOCUMENTS = 1 << 15
#: Segments of one level that are merged into one of the next.
FANOUT = 8
#: Document numbers are stored as uint32.
MAX_DOC = (1 << 32) - 1

U32 = npt.NDArray[np.uint32]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Postings:
    """Postings of some documents, grouped by term.

    Attributes:
        terms: The terms, each once.
        ends: Where each term's postings end in ``docs`` and ``counts``.
        docs: The documents' numbers.
        counts: How often the term occurs in each document.
    """

    terms: list[bytes]
    ends: I64
    docs: U32
    counts: U32

    @staticmethod
    def join(parts: list[Postings]) -> Postings:
        """One ``Postings`` of several, each term's postings in the order of ``parts``."""
        if len(parts) == 1:
            return parts[0]
        numbers: dict[bytes, int] = {}
        keys = []
        for part in parts:
            ids = np.array(
                [numbers.setdefault(term, len(numbers)) for term in part.terms], np.int64
            )
            keys.append(np.repeat(ids, np.diff(part.ends, prepend=0)))
        key = np.concatenate(keys) if keys else np.zeros(0, np.int64)
        order = np.argsort(key, kind="stable")
        docs = np.concatenate([part.docs for part in parts])[order]
        counts = np.concatenate([part.counts for part in parts])[order]
        ends = np.cumsum(np.bincount(key, minlength=len(numbers)))
        return Postings(list(numbers), ends.astype(np.int64), docs, counts)


class Tokenizer:
    """Reads texts as the index's FTS5 table does, in a scratch in-memory database.

    Used by one thread at a time.
    """

    def __init__(self) -> None:
        connection = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        # Contentless and without lengths: only the terms are read back (lengths are counted).
        connection.execute(
            "CREATE VIRTUAL TABLE b USING fts5(text, content='', columnsize=0, "
            f"tokenize='{FTS_TOKENIZER}')"
        )
        connection.execute("CREATE VIRTUAL TABLE b_instance USING fts5vocab(b, instance)")
        connection.execute("CREATE VIRTUAL TABLE b_row USING fts5vocab(b, row)")
        self._connection = connection

    def close(self) -> None:
        self._connection.close()

    def __call__(self, docs: list[int], texts: list[str]) -> tuple[Postings, I64]:
        """The postings of ``texts`` numbered ``docs`` (ascending), and each text's length."""
        connection = self._connection
        connection.execute("BEGIN")
        try:
            connection.executemany(
                "INSERT INTO b (rowid, text) VALUES (?, ?)", zip(docs, texts, strict=True)
            )
            # Every occurrence's document, in FTS5's order: by term, then document.
            (joined,) = connection.execute("SELECT group_concat(doc) FROM b_instance").fetchone()
            rows = connection.execute("SELECT CAST(term AS BLOB), doc, cnt FROM b_row").fetchall()
        finally:
            connection.execute("ROLLBACK")
        found = np.fromstring(joined, dtype=np.int64, sep=",") if joined else np.zeros(0, np.int64)
        terms = [row[0] for row in rows]
        per_term = np.array([row[1] for row in rows], np.int64)
        occurrences = np.array([row[2] for row in rows], np.int64)
        ends = np.cumsum(occurrences)
        if len(found) != (int(ends[-1]) if len(ends) else 0):
            raise RuntimeError("FTS5's vocabulary tables disagree on the number of occurrences.")
        # Runs of one document within one term are its count. E.g. terms "cat" (3 occurrences)
        # and "dog" (2), occurrences' documents [4, 4, 7, 7, 9]: runs [4, 4], [7] | [7], [9]
        # give "cat": docs 4, 7 counts 2, 1; "dog": docs 7, 9 counts 1, 1.
        first = np.ones(len(found), bool)
        first[1:] = found[1:] != found[:-1]
        first[ends[:-1]] = True
        starts = np.flatnonzero(first)
        counts = np.diff(np.append(starts, len(found)))
        term_ends = np.cumsum(per_term)
        if len(starts) != (int(term_ends[-1]) if len(term_ends) else 0):
            raise RuntimeError("FTS5's vocabulary tables disagree on the documents of a term.")
        numbers = np.array(docs, np.int64)
        if len(numbers) and numbers[-1] - numbers[0] == len(numbers) - 1:  # consecutive
            at = found - numbers[0]
        else:
            at = np.searchsorted(numbers, found)
        lengths = np.bincount(at, minlength=len(docs))
        postings = Postings(
            terms, term_ends, found[starts].astype(np.uint32), counts.astype(np.uint32)
        )
        return postings, lengths.astype(np.int64)


def write_segment(connection: sqlite3.Connection, postings: Postings, level: int = 0) -> None:
    """Write ``postings`` as a new segment (inside the caller's transaction)."""
    if not postings.terms:
        return
    (segment,) = connection.execute(
        "SELECT coalesce(max(segment), 0) + 1 FROM sse_segments"
    ).fetchone()
    connection.execute("INSERT INTO sse_segments (segment, level) VALUES (?, ?)", (segment, level))
    ends = postings.ends.tolist()
    starts = [0, *ends[:-1]]
    # Each term's counts in the narrowest of uint8/16/32 that holds its largest: the bytes of
    # all postings are made once per width, and each row takes its slice.
    peaks = np.maximum.reduceat(postings.counts, np.array(starts, np.int64)).tolist()
    docs = postings.docs.astype("<u4").tobytes()
    widths: dict[int, bytes] = {}

    def counts(width: int) -> bytes:
        if width not in widths:
            widths[width] = postings.counts.astype(f"<u{width}").tobytes()
        return widths[width]

    rows = []
    for term, start, end, peak in zip(postings.terms, starts, ends, peaks, strict=True):
        width = 1 if peak < 1 << 8 else 2 if peak < 1 << 16 else 4
        rows.append(
            (term, segment, docs[4 * start : 4 * end], counts(width)[width * start : width * end])
        )
    connection.executemany(
        "INSERT INTO sse_postings (term, segment, docs, counts) VALUES (?, ?, ?, ?)", rows
    )


def merge_segments(
    connection: sqlite3.Connection, alive: Callable[[U32], npt.NDArray[np.bool_]]
) -> None:
    """Merge all the segments of each level holding ``FANOUT`` or more into one segment of the
    next level (inside the caller's transaction).

    Postings whose document is not ``alive`` are dropped.
    """
    while True:
        row = connection.execute(
            "SELECT level FROM sse_segments GROUP BY level HAVING count(*) >= ? "
            "ORDER BY level LIMIT 1",
            (FANOUT,),
        ).fetchone()
        if row is None:
            return
        level = row[0]
        segments = [
            s
            for (s,) in connection.execute(
                "SELECT segment FROM sse_segments WHERE level = ? ORDER BY segment", (level,)
            )
        ]
        marks = ",".join("?" * len(segments))
        terms: list[bytes] = []
        docs: list[U32] = []
        counts: list[U32] = []
        ends: list[int] = []
        total = 0
        current = None
        for term, blob, counted in connection.execute(
            f"SELECT term, docs, counts FROM sse_postings WHERE segment IN ({marks}) "
            "ORDER BY term, segment",
            segments,
        ):
            d, c = decode(blob, counted)
            keep = alive(d)
            d, c = d[keep], c[keep]
            if term != current:
                if current is not None and total > (ends[-1] if ends else 0):
                    terms.append(current)
                    ends.append(total)
                current = term
            docs.append(d)
            counts.append(c)
            total += len(d)
        if current is not None and total > (ends[-1] if ends else 0):
            terms.append(current)
            ends.append(total)
        connection.execute(f"DELETE FROM sse_postings WHERE segment IN ({marks})", segments)
        connection.execute(f"DELETE FROM sse_segments WHERE segment IN ({marks})", segments)
        merged = Postings(
            terms,
            np.array(ends, np.int64),
            np.concatenate(docs) if docs else np.zeros(0, np.uint32),
            np.concatenate(counts) if counts else np.zeros(0, np.uint32),
        )
        write_segment(connection, merged, level + 1)


def decode(docs: object, counts: object) -> tuple[U32, U32]:
    """A row's ``docs`` and ``counts`` blobs as arrays.

    Raises:
        IndexFormatError: if they are not blobs of matching lengths (a damaged file).
    """
    if not isinstance(docs, bytes) or not isinstance(counts, bytes) or len(docs) % 4:
        raise IndexFormatError(
            "A row of the index's postings is not a list of documents and counts; the file "
            "is damaged. Build the index again from its texts."
        )
    n = len(docs) // 4
    width = len(counts) // n if n else 0
    if n == 0 or width not in (1, 2, 4) or width * n != len(counts):
        raise IndexFormatError(
            "A row of the index's postings has counts that do not match its documents; the "
            "file is damaged. Build the index again from its texts."
        )
    kind = {1: "<u1", 2: "<u2", 4: "<u4"}[width]
    return (
        np.frombuffer(docs, "<u4").astype(np.uint32),
        np.frombuffer(counts, kind).astype(np.uint32),
    )


class TermReader:
    """A term's postings (document numbers and counts, in no set order) from one connection."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def __call__(self, term: bytes) -> tuple[U32, U32]:
        rows = self._connection.execute(
            "SELECT docs, counts FROM sse_postings WHERE term = ?", (term,)
        ).fetchall()
        if not rows:
            return np.zeros(0, np.uint32), np.zeros(0, np.uint32)
        parts = [decode(docs, counts) for docs, counts in rows]
        if len(parts) == 1:
            return parts[0]
        return (
            np.concatenate([docs for docs, _ in parts]),
            np.concatenate([counts for _, counts in parts]),
        )


def bm25_part(
    counts: npt.NDArray[np.float64],
    lengths: npt.NDArray[np.float64],
    documents: int,
    average_length: float,
) -> npt.NDArray[np.float64]:
    """One term's part of FTS5's bm25() in each document that holds it (positive).

    Args:
        counts: The term's count in each of those documents.
        lengths: Their lengths in terms.
        documents: How many documents the index holds.
        average_length: Their mean length.
    """
    held = len(counts)
    idf = float(np.log((documents - held + 0.5) / (held + 0.5)))
    if idf <= 0.0:
        idf = 1e-6
    # The same operations in the same order as FTS5's fts5Bm25Function, in float64.
    part: npt.NDArray[np.float64] = idf * (
        (counts * (K1 + 1.0)) / (counts + K1 * (1 - B + B * lengths / average_length))
    )
    return part
