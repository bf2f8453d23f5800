"""A query's keyword part: its words as FTS5 terms, never as FTS5 syntax, and their BM25 scores.

A query is text. Its words (runs of Unicode letters and digits) are each quoted, so that
``AND``, ``NEAR``, ``*``, ``^``, ``column:``, parentheses and quotes in a search box are words
or nothing, never operators (sqlite-utils' ``escape_fts`` does the same, for the same reason),
and joined with ``OR``: a document matches if it holds any of them, and ``bm25()`` ranks it.

FTS5 stems each word itself (``porter unicode61``). The words are also put through a scratch
FTS5 table with the same tokenizer, which says how FTS5 reads each one: words that read as the
same terms are asked once, and words that read as none, or that no document holds, are dropped.

FTS5 reads, and ``bm25()`` scores, every document of every word it is asked for, so a query's
cost grows with the documents its words are in. The fast path asks for the rarest words first
and stops before their documents add up to more than ``POSTINGS_BUDGET`` (the rarest word is
always asked): in a small collection that is every word; in a large one the words left out are
the most common, which weigh least in BM25. ``exact=True`` asks for every word. (What this
costs in quality and saves in time: bench/results/search.md.)
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sse_onnx.index.schema import FTS_TOKENIZER

__all__ = ["MAX_TERMS", "POSTINGS_BUDGET", "KeywordSearch", "Terms"]

#: Documents (summed over the words asked) FTS5 reads for one query on the fast path: about
#: 30 ms of bm25() on one core (bench/results/search.md).
POSTINGS_BUDGET = 10_000
#: The rarest this many distinct words of a query are asked of FTS5 on the fast path (a pasted
#: page, not a query, would otherwise make one FTS5 expression of thousands of words).
MAX_TERMS = 128
#: Document frequencies remembered at most (a few MB).
MAX_REMEMBERED = 1 << 16
_WORD = re.compile(r"[^\W_]+")


@dataclass(frozen=True)
class Terms:
    """The words of one query that FTS5 is asked for, and the FTS5 expression that asks."""

    words: tuple[str, ...]
    dropped: tuple[str, ...]  # read by FTS5, but left out as too common (or past MAX_TERMS)

    @property
    def expression(self) -> str:
        """``"w1" OR "w2" ...``: every word a quoted FTS5 string, so none is syntax."""
        return " OR ".join('"' + word.replace('"', '""') + '"' for word in self.words)


class KeywordSearch:
    """Keyword scores from one connection to an index (its ``sse_fts`` table).

    Creates two scratch tables in the connection's ``temp`` schema (nothing is written to
    the file).
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection
        connection.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS temp.sse_query "
            f"USING fts5(word, tokenize='{FTS_TOKENIZER}')"
        )
        connection.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS temp.sse_query_terms "
            "USING fts5vocab(temp, sse_query, instance)"
        )
        self._frequency: dict[tuple[tuple[str, ...], int], int] = {}

    def terms(self, query: str, *, budget: int | None) -> Terms:
        """The words of ``query`` to ask FTS5 for.

        Args:
            query: The query text.
            budget: Ask for the rarest words while their documents add up to at most this many
                (the rarest word always); ``None`` asks for every word, however common.
        """
        words = list(dict.fromkeys(_WORD.findall(query)))
        distinct: dict[tuple[str, ...], str] = {}
        for word, terms in zip(words, self._read(words), strict=True):
            if terms:
                distinct.setdefault(terms, word)
        if budget is None:
            return Terms(tuple(distinct.values()), ())
        held = sorted(
            (df, word)
            for terms, word in distinct.items()
            if (df := self._documents(terms, word, budget + 1)) > 0
        )
        kept: list[str] = []
        total = 0
        for df, word in held[:MAX_TERMS]:
            if kept and total + df > budget:
                break
            kept.append(word)
            total += df
        return Terms(tuple(kept), tuple(word for _, word in held[len(kept) :]))

    def scores(self, terms: Terms) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Document numbers matching any of ``terms`` and their BM25 scores (higher is better)."""
        if not terms.words:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        rows = self._connection.execute(
            "SELECT rowid, bm25(sse_fts) FROM sse_fts WHERE sse_fts MATCH ? ORDER BY rowid",
            (terms.expression,),
        ).fetchall()
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        docs, values = zip(*rows, strict=True)
        # FTS5's bm25() is negative, lower is better.
        return np.array(docs, np.int64), -np.array(values, np.float32)

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

    def forget(self) -> None:
        """Drop the remembered document frequencies (the index changed)."""
        self._frequency.clear()

    def _documents(self, terms: tuple[str, ...], word: str, cap: int) -> int:
        """Documents that hold ``word`` (FTS5 reads it as ``terms``), counted up to ``cap``.

        FTS5 counts documents by reading them, so a count stops at the cap (a word past the
        budget is not asked anyway), and counts are remembered until the index changes: the
        common words, the costly ones, are the ones queries repeat.
        """
        known = self._frequency
        key = (terms, cap)
        count = known.get(key)
        if count is None:
            if len(known) > MAX_REMEMBERED:
                known.clear()
            count = self._connection.execute(
                "SELECT count(*) FROM (SELECT 1 FROM sse_fts WHERE sse_fts MATCH ? LIMIT ?)",
                (Terms((word,), ()).expression, cap),
            ).fetchone()[0]
            known[key] = count
        return int(count)
