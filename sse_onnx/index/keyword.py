"""A query's keyword part: its words as FTS5 terms, never as FTS5 syntax, and their BM25 scores.

A query is text. Its words (runs of Unicode letters and digits) are each quoted, so that
``AND``, ``NEAR``, ``*``, ``^``, ``column:``, parentheses and quotes in a search box are words
or nothing, never operators (sqlite-utils' ``escape_fts`` does the same, for the same reason).
FTS5 stems each word itself (``porter unicode61``); the words are also put through a scratch
FTS5 table with the same tokenizer, which says how FTS5 reads each one, so that words read as
the same terms count once and words read as none are dropped.

A document's score is FTS5's ``bm25()`` of the query's words joined with ``OR``: a sum over
the words, each word's part depending only on that word and the document. So each word's part
is asked of FTS5 alone (``MATCH '"word"'``, every document that holds it) and the parts are
added. FTS5 reads every document of a word to score it, and that is the cost of a query; the
parts of words are kept in memory (up to ``CACHED_POSTINGS`` documents in all; the words asked
least often leave first) until the index changes: common words, the costly ones, are the ones
queries repeat. Scores are exact either way.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from sse_onnx.index.schema import FTS_TOKENIZER

__all__ = ["CACHED_POSTINGS", "MAX_WORDS", "KeywordSearch", "expression"]

#: Documents' word scores kept in memory (8 bytes each: 64 MB).
CACHED_POSTINGS = 1 << 23
#: Words whose number of asks is kept (then the counts start again).
MAX_COUNTED = 1 << 20
#: Distinct words of a query that are scored, the first ones (a pasted page is not a query).
MAX_WORDS = 1024
_WORD = re.compile(r"[^\W_]+")

Positions = Callable[[npt.NDArray[np.int64]], npt.NDArray[np.intp]]


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
        self._cache: dict[str, tuple[npt.NDArray[np.int32], npt.NDArray[np.float32]]] = {}
        self._cached = 0
        self._asked: dict[str, int] = {}  # how often each word was asked, across changes
        connection.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS temp.sse_query "
            f"USING fts5(word, tokenize='{FTS_TOKENIZER}')"
        )
        connection.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS temp.sse_query_terms "
            "USING fts5vocab(temp, sse_query, instance)"
        )

    def words(self, query: str) -> list[str]:
        """The words of ``query`` that FTS5 reads as terms, one for each distinct reading."""
        words = list(dict.fromkeys(_WORD.findall(query)))
        distinct: dict[tuple[str, ...], str] = {}
        for word, terms in zip(words, self._read(words), strict=True):
            if terms:
                distinct.setdefault(terms, word)
        return list(distinct.values())[:MAX_WORDS]

    def scores(
        self, query: str, documents: int, positions: Positions
    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_]]:
        """Each document's BM25 score for ``query`` (0 where no word matches), and the matches.

        Args:
            query: The query text.
            documents: How many documents the index holds (the length of the results).
            positions: Maps document numbers to their positions in the results.
        """
        total = np.zeros(documents, np.float64)
        matched = np.zeros(documents, bool)
        for word in self.words(query):
            where, part = self._postings(word, positions)
            total[where] += part
            matched[where] = True
        return total.astype(np.float32), matched

    def forget(self) -> None:
        """Drop the word scores kept in memory (the index changed)."""
        self._cache.clear()
        self._cached = 0

    def _postings(
        self, word: str, positions: Positions
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
        rows = self._connection.execute(
            "SELECT rowid, bm25(sse_fts) FROM sse_fts WHERE sse_fts MATCH ?", (expression(word),)
        ).fetchall()
        docs, scores = zip(*rows, strict=True) if rows else ((), ())
        where = positions(np.array(docs, np.int64)).astype(np.int32)
        # FTS5's bm25() is negative, lower is better.
        part = -np.array(scores, np.float32)
        if len(rows) <= CACHED_POSTINGS:
            cache[word] = (where, part)
            self._cached += len(rows)
            if self._cached > CACHED_POSTINGS:
                self._evict()
        return where, part

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

    def _read(self, words: list[str]) -> list[tuple[str, ...]]:
        """How FTS5's tokenizer reads each word: its terms, in order (none for some)."""
        connection = self._connection
        connection.executemany(
            "INSERT INTO temp.sse_query (rowid, word) VALUES (?, ?)", enumerate(words)
        )
        try:
            found: list[list[str]] = [[] for _ in words]
            for doc, term in connection.execute(
                "SELECT doc, term FROM temp.sse_query_terms ORDER BY doc, offset"
            ):
                found[doc].append(term)
        finally:
            connection.execute("DELETE FROM temp.sse_query")
        return [tuple(terms) for terms in found]
