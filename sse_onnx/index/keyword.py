"""A query's keyword part: its words as FTS5 terms, never as FTS5 syntax, and their BM25 scores.

A query is text. Its words (runs of Unicode letters and digits) are each quoted, so that
``AND``, ``NEAR``, ``*``, ``^``, ``column:``, parentheses and quotes in a search box are words
or nothing, never operators (sqlite-utils' ``escape_fts`` does the same, for the same reason),
and joined with ``OR``: a document matches if it holds any of them, and ``bm25()`` ranks it.

FTS5 stems each word itself (``porter unicode61``). The words are also put through a scratch
FTS5 table with the same tokenizer, which says how FTS5 reads each one: words that read as the
same terms are asked once, words that read as none are dropped, and each is looked up in the
index's vocabulary for the number of documents that hold it. A word held by more than
``max_df`` of the documents (``COMMON_FRACTION`` by default, and by more than
``COMMON_FLOOR``) is left out of the keyword part:
FTS5 reads every document of every term it is asked for, and such words carry little weight in
BM25. (How much this costs in quality, and saves in time, is in bench/results/search.md.)
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from sse_onnx.index.schema import FTS_TOKENIZER

__all__ = ["COMMON_FLOOR", "COMMON_FRACTION", "MAX_TERMS", "KeywordSearch", "Terms"]

#: Words held by more than this fraction of the documents, and by more than COMMON_FLOOR
#: documents, are left out (the rarest word of a query is always kept).
COMMON_FRACTION = 0.05
#: FTS5 reads a few thousand documents of a word in well under a millisecond: below this, no
#: word is left out, whatever the fraction (a small collection is searched exactly).
COMMON_FLOOR = 5000
#: The rarest this many distinct words of a query are asked of FTS5 (a pasted page, not a
#: query, would otherwise make one FTS5 expression of thousands of words).
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

    Creates three scratch tables in the connection's ``temp`` schema (nothing is written to
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
        self._frequency: dict[str, int] = {}
        connection.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS temp.sse_vocabulary "
            "USING fts5vocab(main, sse_fts, row)"
        )

    def terms(self, query: str, documents: int, *, max_df: float | None) -> Terms:
        """The words of ``query`` to ask FTS5 for, among ``documents`` documents.

        Args:
            query: The query text.
            documents: Documents in the index (for ``max_df``).
            max_df: Leave out words held by more than this fraction of the documents (the
                rarest word is always kept); ``None`` keeps every word, however common.
        """
        words = list(dict.fromkeys(_WORD.findall(query)))
        if not words:
            return Terms((), ())
        read = self._read(words)
        distinct: dict[tuple[str, ...], str] = {}
        for word, terms in zip(words, read, strict=True):
            if terms:
                distinct.setdefault(terms, word)
        if not distinct:
            return Terms((), ())
        frequency = self._document_frequency({t for terms in distinct for t in terms})
        # A word read as several terms is a phrase: held by at most its rarest term's documents.
        # Words no document holds add nothing to any score and are not asked.
        held = sorted(
            (min(frequency.get(t, 0) for t in terms), word) for terms, word in distinct.items()
        )
        held = [(df, word) for df, word in held if df > 0]
        limit = float("inf") if max_df is None else max(documents * max_df, COMMON_FLOOR)
        kept = [word for rank, (df, word) in enumerate(held) if rank == 0 or df <= limit]
        if max_df is not None:
            kept = kept[:MAX_TERMS]
        return Terms(tuple(kept), tuple(word for _, word in held if word not in set(kept)))

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

    def _document_frequency(self, terms: set[str]) -> dict[str, int]:
        """Documents that hold each term (0 for absent terms).

        FTS5 counts a term's documents by reading them all, so the counts are remembered until
        the index changes; common words, the costly ones, are the ones queries repeat.
        """
        known = self._frequency
        if len(known) > MAX_REMEMBERED:
            known.clear()
        execute = self._connection.execute
        for term in terms - known.keys():
            row = execute("SELECT doc FROM temp.sse_vocabulary WHERE term = ?", (term,)).fetchone()
            known[term] = 0 if row is None else int(row[0])
        return {term: known[term] for term in terms}
