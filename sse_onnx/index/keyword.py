"""A query's keyword part: its words as FTS5 terms, never as FTS5 syntax, and their BM25 scores.

A query is text. Its words (runs of Unicode letters and digits) are each quoted, so that
``AND``, ``NEAR``, ``*``, ``^``, ``column:``, parentheses and quotes in a search box are words
or nothing, never operators (sqlite-utils' ``escape_fts`` does the same, for the same reason).
FTS5 stems each word itself (``porter unicode61``); the words are also put through a scratch
FTS5 table with the same tokenizer, which says how FTS5 reads each one, so that words read as
the same terms count once and words read as none are dropped.

A document's score is FTS5's ``bm25()`` of the query's words joined with ``OR``: a sum over
the words, each word's part depending only on that word and the document. A word that FTS5
reads as one term (nearly all) is scored from the index's own postings of that term
(:mod:`sse_onnx.index.postings`: numpy, no lookup per document); a word read as several terms
is a phrase, and its part is asked of FTS5 (``MATCH '"word"'``, ``bm25()``). The parts are
added, and kept in memory (up to ``CACHED_POSTINGS`` documents in all; the words asked least
often leave first) until the index changes. A part is computed in float64 and kept as float32
whether or not it is kept in memory, so a query scores the same either way.
"""

from __future__ import annotations

import re
import sqlite3

import numpy as np
import numpy.typing as npt

from sse_onnx.index.postings import TermReader, bm25_part
from sse_onnx.index.schema import FTS_TOKENIZER
from sse_onnx.index.vectors import find, held_positions

__all__ = ["CACHED_POSTINGS", "MAX_WORDS", "KeywordSearch", "expression"]

#: Documents' word scores kept in memory (8 bytes each: 64 MB).
CACHED_POSTINGS = 1 << 23
#: Words whose number of asks is kept (then the counts start again).
MAX_COUNTED = 1 << 20
#: Distinct words of a query that are scored, the first ones (a pasted page is not a query).
MAX_WORDS = 1024
_WORD = re.compile(r"[^\W_]+")
#: Document numbers are mapped to positions with a table when it is at most this much larger
#: than the number of documents (else by binary search).
_SPARSE = 4

I64 = npt.NDArray[np.int64]


def expression(word: str) -> str:
    """``word`` as an FTS5 string: in double quotes, so never syntax."""
    return '"' + word.replace('"', '""') + '"'


class KeywordSearch:
    """Keyword scores from one connection to an index (its ``sse_fts`` table).

    Creates two scratch tables in the connection's ``temp`` schema (nothing is written to the
    file).
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        self._term = TermReader(connection)
        self._cache: dict[str, tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]] = {}
        self._cached = 0
        self._asked: dict[str, int] = {}  # how often each word was asked, across changes
        self._table: npt.NDArray[np.int32] | None = None
        self._average: float | None = None  # the documents' mean length
        connection.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS temp.sse_query "
            f"USING fts5(word, tokenize='{FTS_TOKENIZER}')"
        )
        connection.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS temp.sse_query_terms "
            "USING fts5vocab(temp, sse_query, instance)"
        )

    def words(self, query: str) -> list[tuple[str, tuple[bytes, ...]]]:
        """The words of ``query`` that FTS5 reads as terms (one for each distinct reading),
        each with its terms."""
        words = list(dict.fromkeys(_WORD.findall(query)))
        distinct: dict[tuple[bytes, ...], str] = {}
        for word, terms in zip(words, self._read(words), strict=True):
            if terms:
                distinct.setdefault(terms, word)
        return [(word, terms) for terms, word in distinct.items()][:MAX_WORDS]

    def scores(
        self, query: str, docs: I64, lengths: npt.NDArray[np.int32]
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """Each document's BM25 score for ``query`` (0 where no word matches), and the matches.

        Args:
            query: The query text.
            docs: The numbers of the documents the index holds, ascending (the results follow
                their order).
            lengths: Each document's length in terms.
        """
        total = np.zeros(len(docs), np.float64)
        matched = np.zeros(len(docs), bool)
        for word, terms in self.words(query):
            where, part = self._part(word, terms, docs, lengths)
            total[where] += part
            matched[where] = True
        return total.astype(np.float32), matched

    def forget(self) -> None:
        """Drop what is kept in memory (the index changed)."""
        self._cache.clear()
        self._cached = 0
        self._table = None
        self._average = None

    def _part(
        self, word: str, terms: tuple[bytes, ...], docs: I64, lengths: npt.NDArray[np.int32]
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
        """The positions of the documents holding ``word`` and its part of their scores.

        Parts are float32 whether or not they were kept, so a query scores the same each time.
        """
        cache = self._cache
        if len(self._asked) > MAX_COUNTED:
            self._asked.clear()
        self._asked[word] = self._asked.get(word, 0) + 1
        if word in cache:
            return cache[word]
        if len(terms) == 1:
            where, part = self._from_postings(terms[0], docs, lengths)
        else:
            where, part = self._from_fts5(word, docs)
        if len(where) <= CACHED_POSTINGS:
            cache[word] = (where, part)
            self._cached += len(where)
            if self._cached > CACHED_POSTINGS:
                self._evict()
        return where, part

    def _from_postings(
        self, term: bytes, docs: I64, lengths: npt.NDArray[np.int32]
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
        """A term's part, from the index's postings (documents no longer held are skipped)."""
        numbers, counts = self._term(term)
        where = self._positions(numbers.astype(np.int64), docs)
        held = where >= 0
        where, counts = where[held], counts[held]
        if len(where) == 0:
            return where.astype(np.int32), np.zeros(0, np.float32)
        part = bm25_part(
            counts.astype(np.float64),
            lengths[where].astype(np.float64),
            len(docs),
            self._average_length(lengths),
        )
        return where.astype(np.int32), part.astype(np.float32)

    def _from_fts5(
        self, word: str, docs: I64
    ) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]:
        """A phrase's part (a word FTS5 reads as several terms), from FTS5's bm25()."""
        rows = self._connection.execute(
            "SELECT rowid, bm25(sse_fts) FROM sse_fts WHERE sse_fts MATCH ?", (expression(word),)
        ).fetchall()
        numbers, scores = zip(*rows, strict=True) if rows else ((), ())
        where = held_positions(docs, np.array(numbers, np.int64))
        # FTS5's bm25() is negative, lower is better.
        return where.astype(np.int32), -np.array(scores, np.float32)

    def _average_length(self, lengths: npt.NDArray[np.int32]) -> float:
        if self._average is None:
            self._average = float(lengths.sum(dtype=np.int64)) / len(lengths)
        return self._average

    def _positions(self, numbers: I64, docs: I64) -> npt.NDArray[np.int64]:
        """Where each document number sits in ``docs`` (-1 where it is not held)."""
        if len(docs) == 0 or len(numbers) == 0:
            return np.full(len(numbers), -1, np.int64)
        top = int(docs[-1])
        if top <= _SPARSE * len(docs) + (1 << 20):
            if self._table is None:
                table = np.full(top + 1, -1, np.int32)
                table[docs] = np.arange(len(docs), dtype=np.int32)
                self._table = table
            inside = numbers <= top
            out = np.full(len(numbers), -1, np.int64)
            out[inside] = self._table[numbers[inside]]
            return out
        return find(docs, numbers)

    def _evict(self) -> None:
        """Drop the words asked least often (the smaller first) down to 3/4 of the budget.

        Queries repeat common words far more than rare ones, and those are the costly ones to
        ask again: keeping the most asked beats keeping the most recent.
        """
        asked = self._asked
        for word in sorted(self._cache, key=lambda w: (asked.get(w, 0), len(self._cache[w][0]))):
            if self._cached <= CACHED_POSTINGS * 3 // 4:
                break
            self._cached -= len(self._cache.pop(word)[0])

    def _read(self, words: list[str]) -> list[tuple[bytes, ...]]:
        """How FTS5's tokenizer reads each word: its terms' bytes, in order (none for some).

        Bytes, not text: FTS5 cuts a term longer than 32,768 bytes, which can split a character.
        """
        connection = self._connection
        connection.executemany(
            "INSERT INTO temp.sse_query (rowid, word) VALUES (?, ?)", enumerate(words)
        )
        try:
            found: list[list[bytes]] = [[] for _ in words]
            for doc, term in connection.execute(
                "SELECT doc, CAST(term AS BLOB) FROM temp.sse_query_terms ORDER BY doc, offset"
            ):
                found[doc].append(term)
        finally:
            connection.execute("DELETE FROM temp.sse_query")
        return [tuple(terms) for terms in found]
