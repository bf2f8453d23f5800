"""``Index``: texts, their metadata, an FTS5 index and their vectors in one SQLite file."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

import numpy as np
import numpy.typing as npt

from sse_onnx import folder as fmt
from sse_onnx.embeddings import normalize
from sse_onnx.errors import DuplicateIdError, IndexFormatError, ModelMismatchError, SSEError
from sse_onnx.index import schema
from sse_onnx.index.fusion import MODES, Mode, fuse, top_k
from sse_onnx.index.inputs import (
    Row,
    check_positive_int,
    checked_alpha,
    checked_embeddings,
    checked_ids,
    checked_queries,
    checked_rows,
    checked_where,
)
from sse_onnx.index.keyword import KeywordSearch
from sse_onnx.index.postings import (
    MAX_DOC,
    SEGMENT_DOCUMENTS,
    Postings,
    Tokenizer,
    merge_segments,
    write_segment,
)
from sse_onnx.index.vectors import Vectors, find, quantize_rows
from sse_onnx.texts import check_unicode

if TYPE_CHECKING:
    from sse_onnx.encoder import Encoder

__all__ = ["DEFAULT_ALPHA", "AddResult", "Hit", "Index"]

_T = TypeVar("_T")

#: The dense part's weight in ``mode="hybrid"``: the best on SciFact's train queries for this
#: fusion (bench/results/fusion.md, `python bench/fusion_study.py`).
DEFAULT_ALPHA = 0.45
#: Texts encoded at once while the previous batch is written (bounds the memory of an add).
ADD_BATCH = 2048
#: Rows read at once when the vectors are loaded.
_LOAD_ROWS = 1 << 16
_SQLITE_HEADER = b"SQLite format 3\x00"
#: Host parameters per statement (SQLite's default limit is 32,766 since 3.32; older: 999).
_PARAMETERS = 900
#: A document's length in terms is held as int32.
_MAX_TOKENS = (1 << 31) - 1
_IDENTITY = ("model_name", "model_sha256", "variant", "dim", "vector_type")


@dataclass(frozen=True)
class Hit:
    """One search result.

    Attributes:
        id: The document's id, as given to :meth:`Index.add`.
        score: The fused score (``mode="hybrid"``), the cosine (``"dense"``) or the BM25 score
            (``"keyword"``); higher is better.
        text: The document's text.
        metadata: Its metadata, or ``None``.
    """

    id: str
    score: float
    text: str
    metadata: dict[str, Any] | None


@dataclass(frozen=True)
class AddResult:
    """What one :meth:`Index.add` did: ids added, texts replaced, and ids left as they were."""

    added: int
    replaced: int
    unchanged: int


class Index:
    """Hybrid search over one SQLite file: BM25 (FTS5) and the dense model, fused.

    Args:
        path: The index file; created (with its folder's existing parent) if it does not exist.
        encoder: The model that embeds texts and queries; ``None`` loads the bundled default.
            A file built with another model is refused (see ``reembed``).
        readonly: Open an existing file for searching only.
        reembed: If the file was built with another model, embed its texts again with
            ``encoder`` (one transaction) instead of refusing it.

    Raises:
        IndexFormatError: if the file is damaged, not an index, of another schema version, or
            holds tables, triggers or views the index did not write.
        ModelMismatchError: if the file was built with another model (and not ``reembed``).
        SSEError: if this Python's SQLite lacks FTS5.

    Example:
        >>> from sse_onnx import Index
        >>> with Index("notes.db") as index:  # doctest: +SKIP
        ...     index.add(["SQLite is a database.", "Cats sleep a lot."], ids=["db", "cat"])
        ...     index.search("where do I store data?", k=1)[0].id
        'db'
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        encoder: Encoder | None = None,
        readonly: bool = False,
        reembed: bool = False,
    ) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or a path, not {type(path).__name__}.")
        if not schema.has_fts5():
            raise SSEError(
                f"This Python's SQLite ({sqlite3.sqlite_version}) was built without FTS5, which "
                "the index needs. Use a Python whose sqlite3 module has FTS5 (python.org's "
                "installers, Debian/Ubuntu, Homebrew and conda builds all do)."
            )
        self.path = Path(path)
        if self.path.is_dir():
            raise IndexFormatError(f"{self.path} is a folder; pass the path of an index file.")
        if readonly and not self.path.is_file():
            raise FileNotFoundError(f"{self.path} does not exist; readonly=True opens a file.")
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"Folder {self.path.parent} does not exist; create it first.")
        if encoder is None:
            from sse_onnx.encoder import Encoder

            encoder = Encoder()
        self.encoder = encoder
        self._identity = _identity(encoder)
        self._lock = threading.RLock()
        self._tokenizer: Tokenizer | None = None
        if self.path.is_file() and not _sqlite_or_empty(self.path):
            raise IndexFormatError(
                f"{self.path} is not an SQLite file, so not an sse-onnx index; pass an index "
                "file, or a new path to create one."
            )
        self._connection = schema.connect(self.path, readonly=readonly)
        try:
            with schema.translated(self.path):
                self._keyword = KeywordSearch(self._connection)
                self._open(readonly=readonly, reembed=reembed)
        except BaseException:
            self._connection.close()
            raise

    # ------------------------------------------------------------------ opening

    def _open(self, *, readonly: bool, reembed: bool) -> None:
        connection = self._connection
        if schema.is_empty(connection, self.path):
            if readonly:
                raise IndexFormatError(f"{self.path} is empty, not an sse-onnx index.")
            schema.create(connection, self._identity)
        else:
            meta = schema.check(connection, self.path)
            if any(meta.get(key) != self._identity[key] for key in _IDENTITY):
                if not reembed or readonly:
                    raise ModelMismatchError(_mismatch(self.path, meta, self._identity))
                self._reembed()
        self.vectors = Vectors(int(self._identity["dim"]))
        self._version: int | None = None
        with self._read():  # loads the vectors
            pass

    def _load(self) -> None:
        """Read every vector into memory, inside the caller's read transaction.

        Called within :func:`schema.translated`, like every use of the file: SQLite's errors
        become this package's there.
        """
        connection, dim, path = self._connection, self.vectors.dim, self.path
        bad = connection.execute(
            "SELECT id FROM sse_docs WHERE typeof(vector) != 'blob' OR length(vector) != ?"
            " OR typeof(scale) NOT IN ('real', 'integer') OR typeof(tokens) != 'integer'"
            " OR tokens NOT BETWEEN 0 AND ? OR doc NOT BETWEEN 1 AND ? LIMIT 1",
            (dim, _MAX_TOKENS, MAX_DOC),
        ).fetchone()
        if bad is not None:
            raise IndexFormatError(
                f"{path}: document {bad[0]!r} does not have {dim} int8 values, a scale, a "
                "length and a number the index writes; the file is damaged. Build the index "
                "again from its texts."
            )
        self.vectors.reset(connection.execute("SELECT count(*) FROM sse_docs").fetchone()[0])
        cursor = connection.execute("SELECT doc, vector, scale, tokens FROM sse_docs ORDER BY doc")
        while rows := cursor.fetchmany(_LOAD_ROWS):
            docs, blobs, scales, lengths = zip(*rows, strict=True)
            self.vectors.append(
                np.array(docs, np.int64),
                np.frombuffer(b"".join(blobs), np.int8).reshape(len(rows), dim),
                _scales(scales),
                np.array(lengths, np.int32),
            )
        self._version = self._data_version()
        self._keyword.forget()
        if not np.isfinite(self.vectors.scales[: len(self.vectors)]).all():
            raise IndexFormatError(f"{path}: a vector's scale is not finite; the file is damaged.")

    def _data_version(self) -> int:
        return int(self._connection.execute("PRAGMA data_version").fetchone()[0])

    @contextmanager
    def _read(self) -> Iterator[None]:
        """One read transaction: a snapshot of the file, with the vectors of that snapshot.

        Another connection's commits (another process, another ``Index`` on the same file)
        change SQLite's ``data_version``; the vectors are then read again.
        """
        connection = self._connection
        if connection.in_transaction:
            yield
            return
        connection.execute("BEGIN")
        try:
            if self._data_version() != self._version:
                self._load()
            yield
        finally:
            connection.execute("COMMIT")

    # ------------------------------------------------------------------ life

    def close(self) -> None:
        """Close the file (the index cannot be used afterwards)."""
        with self._lock:
            self._connection.close()
            if self._tokenizer is not None:
                self._tokenizer.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def __len__(self) -> int:
        with self._lock, schema.translated(self.path), self._read():
            return len(self.vectors)

    def __repr__(self) -> str:
        return (
            f"Index({str(self.path)!r}, model={self._identity['model_name']!r}, "
            f"documents={len(self.vectors)})"
        )

    # ------------------------------------------------------------------ writing

    def add(
        self,
        texts: Sequence[str],
        *,
        ids: Sequence[str],
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        replace: bool = False,
        embeddings: npt.ArrayLike | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> AddResult:
        """Add documents, in one transaction: all of them or, on an error, none.

        An id already in the index with the same text and metadata is left as it is (no
        encoding). Any other id already in the index is refused, unless ``replace=True``: then
        its metadata is updated, and its text is embedded again only if it changed (a changed
        text is a new document under the same id, after every other in :meth:`documents`).

        Args:
            texts: The documents' texts.
            ids: One unique string id a text.
            metadata: One JSON-serialisable dict (or ``None``) a text, for ``where=`` filters.
            replace: Update documents whose id is already in the index.
            embeddings: The texts' embeddings, ``(len(texts), dim)``, if they were already
                made by this index's model (``encoder.encode(texts)``, as ``sse-embed`` writes
                them): they are stored instead of encoding the texts again. Nothing can check
                that they come from the same model; the CLI checks an ``sse-embed`` folder's
                manifest before it passes them.
            progress: Called with the number of texts written after each batch.

        Returns:
            How many ids were added, replaced, and left unchanged.

        Raises:
            DuplicateIdError: if ``ids`` repeats an id, or names one already in the index with
                another text or metadata (without ``replace=True``).
            TypeError, ValueError: for texts, ids or metadata of the wrong type or length.
        """
        rows = checked_rows(texts, ids, metadata)
        given = (
            None
            if embeddings is None
            else checked_embeddings(embeddings, len(rows), self.vectors.dim)
        )
        with self._lock, schema.translated(self.path):
            return self._write(lambda: self._add(rows, replace, given, progress))

    def delete(self, ids: Sequence[str], *, missing_ok: bool = False) -> int:
        """Delete documents by id, in one transaction, and return how many were deleted.

        Raises:
            KeyError: if an id is not in the index (nothing is deleted), unless ``missing_ok``.
        """
        wanted = list(dict.fromkeys(checked_ids(ids, "ids")))
        with self._lock, schema.translated(self.path):
            return self._write(lambda: self._delete(wanted, missing_ok))

    def _write(self, work: Callable[[], _T]) -> _T:
        """Run ``work`` in one write transaction; the vectors in memory follow only its commit."""
        with schema.transaction(self._connection):
            if self._data_version() != self._version:
                self._load()
            self._pending: list[Callable[[], None]] = []
            result = work()
            # Read inside the transaction: this connection's own commit leaves data_version as
            # it is, and another writer's commit after it changes it (the next use reloads).
            version = self._data_version()
            # Until the vectors in memory follow this commit, the next read reloads them.
            self._version = None
        for change in self._pending:
            change()
        self._keyword.forget()
        self._version = version
        return result

    def _existing(self, ids: Sequence[str]) -> dict[str, tuple[int, bytes, str | None, str]]:
        """``id -> (doc, sha256, metadata, text)`` of the ids already in the index."""
        found: dict[str, tuple[int, bytes, str | None, str]] = {}
        for start in range(0, len(ids), _PARAMETERS):
            part = ids[start : start + _PARAMETERS]
            marks = ",".join("?" * len(part))
            for id_, doc, sha, meta, text in self._connection.execute(
                f"SELECT id, doc, sha256, metadata, text FROM sse_docs WHERE id IN ({marks})",
                part,
            ):
                found[id_] = (doc, sha, meta, text)
        return found

    def _add(
        self,
        rows: list[Row],
        replace: bool,
        given: npt.NDArray[np.float32] | None,
        progress: Callable[[int], object] | None,
    ) -> AddResult:
        existing = self._existing([row.id for row in rows])
        new = [row for row in rows if row.id not in existing]
        same = [row for row in rows if row.id in existing and _same(row, existing[row.id])]
        changed = [row for row in rows if row.id in existing and not _same(row, existing[row.id])]
        if changed and not replace:
            shown = ", ".join(repr(row.id) for row in changed[:5])
            raise DuplicateIdError(
                f"{len(changed)} id(s) are already in {self.path} with another text or "
                f"metadata ({shown}{', ...' if len(changed) > 5 else ''}); pass replace=True "
                "to update them, or delete them first."
            )
        retext = [row for row in changed if row.sha256 != existing[row.id][1]]
        remeta = [row for row in changed if row.sha256 == existing[row.id][1]]
        self._connection.executemany(
            "UPDATE sse_docs SET metadata = ? WHERE id = ?",
            [(row.metadata, row.id) for row in remeta],
        )
        # A changed text is a new document: the old one goes, and its postings with it.
        gone = [existing[row.id] for row in retext]
        self._remove([(doc, text) for doc, _, _, text in gone])
        first = self._next_doc()
        written = new + retext
        if first + len(written) - 1 > MAX_DOC:
            raise SSEError(
                f"{self.path} has numbered {first - 1:,} documents, the most an index can; "
                "build a new index from its texts."
            )
        numbered = list(enumerate(written, first))
        if given is not None:
            where = {row.id: i for i, row in enumerate(rows)}
            given = given[[where[row.id] for row in written]]
        removed = np.array([doc for doc, _, _, _ in gone], np.int64)
        held = self.vectors.docs[: len(self.vectors)]
        postings = _PostingsWriter(self._connection, first, removed, held)
        for batch, prepared in self._prepared(numbered, given):
            self._write_batch(batch, prepared)
            postings.add(prepared.postings, len(batch))
            if progress is not None:
                progress(len(batch))
        postings.close()
        if progress is not None and same:
            progress(len(same))
        return AddResult(added=len(new), replaced=len(changed), unchanged=len(same))

    def _next_doc(self) -> int:
        """The next document's number: above any held or ever held (AUTOINCREMENT)."""
        (top,) = self._connection.execute(
            "SELECT max(coalesce((SELECT max(doc) FROM sse_docs), 0), coalesce((SELECT seq "
            "FROM sqlite_sequence WHERE name = 'sse_docs'), 0))"
        ).fetchone()
        if not isinstance(top, int):
            raise IndexFormatError(
                f"{self.path}: its sqlite_sequence holds {top!r} for sse_docs, not a number; the "
                "file is damaged. Build the index again from its texts."
            )
        return top + 1

    def _prepared(
        self, numbered: list[tuple[int, Row]], given: npt.NDArray[np.float32] | None
    ) -> Iterator[tuple[list[tuple[int, Row]], _Prepared]]:
        """Batches with their vectors and postings: a thread encodes the next batch while
        this one reads a batch's terms and writes it.

        onnxruntime and SQLite both let go of the GIL, so encoding and writing overlap. (A
        third thread for the terms was measured no faster on two cores: both FTS5 passes then
        compete for the same caches.)
        """
        starts = range(0, len(numbered), ADD_BATCH)
        batches = [numbered[i : i + ADD_BATCH] for i in starts]
        if not batches:
            return
        if self._tokenizer is None:
            self._tokenizer = Tokenizer()
        tokenizer = self._tokenizer

        def embed(start: int, batch: list[tuple[int, Row]]) -> npt.NDArray[np.float32]:
            if given is not None:
                return normalize(given[start : start + len(batch)])
            return self.encoder.encode([row.text for _, row in batch], show_progress_bar=False)

        def read(batch: list[tuple[int, Row]]) -> tuple[Postings, npt.NDArray[np.int64]]:
            return tokenizer([doc for doc, _ in batch], [row.text for _, row in batch])

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sse-index-encode") as pool:
            pending = pool.submit(embed, 0, batches[0])
            for i, batch in enumerate(batches):
                postings, lengths = read(batch)
                vectors = pending.result()
                if i + 1 < len(batches):
                    pending = pool.submit(embed, starts[i + 1], batches[i + 1])
                yield batch, _Prepared(*quantize_rows(vectors), postings, lengths)

    def _write_batch(self, batch: list[tuple[int, Row]], prepared: _Prepared) -> None:
        executemany = self._connection.executemany
        q, scales, lengths = prepared.q, prepared.scales, prepared.lengths
        executemany(
            "INSERT INTO sse_docs (doc, id, text, metadata, sha256, vector, scale, tokens) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (doc, row.id, row.text, row.metadata, row.sha256, vector, scale, length)
                for (doc, row), vector, scale, length in zip(
                    batch, _rows_bytes(q), scales.tolist(), lengths.tolist(), strict=True
                )
            ],
        )
        executemany(
            "INSERT INTO sse_fts (rowid, text) VALUES (?, ?)",
            [(doc, row.text) for doc, row in batch],
        )
        docs = np.array([doc for doc, _ in batch], np.int64)
        self._pending.append(lambda: self.vectors.append(docs, q, scales, lengths.astype(np.int32)))

    def _remove(self, entries: list[tuple[int, str]]) -> None:
        """Delete ``(doc, text)`` documents: their rows and their FTS5 entries.

        External-content FTS5: an entry is deleted with the text it was indexed from. Their
        postings stay until their segments are merged, and count no more (their documents are
        gone).
        """
        connection = self._connection
        connection.executemany(
            "INSERT INTO sse_fts (sse_fts, rowid, text) VALUES ('delete', ?, ?)", entries
        )
        connection.executemany("DELETE FROM sse_docs WHERE doc = ?", [(doc,) for doc, _ in entries])
        docs = np.array([doc for doc, _ in entries], np.int64)
        if len(docs):
            self._pending.append(lambda: self.vectors.remove(docs))

    def _delete(self, ids: list[str], missing_ok: bool) -> int:
        existing = self._existing(ids)
        missing = [id_ for id_ in ids if id_ not in existing]
        if missing and not missing_ok:
            shown = ", ".join(repr(id_) for id_ in missing[:5])
            raise KeyError(
                f"{len(missing)} id(s) are not in {self.path} ({shown}"
                f"{', ...' if len(missing) > 5 else ''}); nothing was deleted. Pass "
                "missing_ok=True to delete the others."
            )
        found = list(existing.values())
        self._remove([(doc, text) for doc, _, _, text in found])
        return len(found)

    def _reembed(self) -> None:
        """Embed every text again with this index's encoder and record its identity."""
        connection = self._connection
        with schema.transaction(connection):
            cursor = connection.execute("SELECT doc, text FROM sse_docs ORDER BY doc")
            while rows := cursor.fetchmany(ADD_BATCH):
                docs, texts = zip(*rows, strict=True)
                q, scales = quantize_rows(self.encoder.encode(list(texts), show_progress_bar=False))
                connection.executemany(
                    "UPDATE sse_docs SET vector = ?, scale = ? WHERE doc = ?",
                    [(q[i].tobytes(), float(scales[i]), doc) for i, doc in enumerate(docs)],
                )
            schema.write_meta(connection, self._identity)

    # ------------------------------------------------------------------ reading

    @overload
    def search(  # type: ignore[overload-overlap]
        self,
        query: str,
        *,
        k: int = ...,
        mode: Mode = ...,
        alpha: float | None = ...,
        where: Mapping[str, Any] | None = ...,
    ) -> list[Hit]: ...

    @overload
    def search(
        self,
        query: Sequence[str],
        *,
        k: int = ...,
        mode: Mode = ...,
        alpha: float | None = ...,
        where: Mapping[str, Any] | None = ...,
    ) -> list[list[Hit]]: ...

    def search(
        self,
        query: str | Sequence[str],
        *,
        k: int = 10,
        mode: Mode = "hybrid",
        alpha: float | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> list[Hit] | list[list[Hit]]:
        """The ``k`` best documents for a query (or one list a query, for a list of queries).

        Args:
            query: Text; never read as FTS5 syntax.
            k: How many hits at most.
            mode: ``"hybrid"`` (both parts fused), ``"dense"`` (cosine alone) or ``"keyword"``
                (BM25 alone: only documents that hold a query word).
            alpha: The dense part's weight in ``"hybrid"`` (0 to 1); ``None`` takes
                :data:`DEFAULT_ALPHA`.
            where: Keep only documents whose metadata has each of these keys with exactly this
                value (a string, number, bool or ``None``), before ranking, in both parts.

        Returns:
            Hits, best first.
        """
        single = isinstance(query, str)
        queries = [query] if isinstance(query, str) else checked_queries(query)
        for i, text in enumerate(queries):
            check_unicode(text, f"query[{i}]" if not single else "query")
        check_positive_int("k", k)
        if mode not in MODES:
            raise ValueError(f"mode={mode!r} is not one of {MODES}.")
        weight = DEFAULT_ALPHA if alpha is None else checked_alpha(alpha)
        filters = checked_where(where)
        with self._lock, schema.translated(self.path), self._read():
            allowed = self._allowed(filters)
            dense = (
                self.vectors.cosines(self.encoder.encode(queries, show_progress_bar=False))
                if mode != "keyword"
                else None
            )
            ranked = []
            for i, text in enumerate(queries):
                positions, scores = self._rank(
                    text, None if dense is None else dense[i], k, mode, weight, allowed
                )
                ranked.append(self._hits(positions, scores))
        return ranked[0] if single else ranked

    def _rank(
        self,
        query: str,
        dense: npt.NDArray[np.float32] | None,
        k: int,
        mode: Mode,
        alpha: float,
        allowed: npt.NDArray[np.bool_] | None,
    ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
        """Positions among the vectors of the best ``k`` documents, and their scores."""
        if mode == "dense":
            assert dense is not None
            best = top_k(dense, k, allowed)
            return best, dense[best]
        n = len(self.vectors)
        keyword, matched = self._keyword.scores(
            query, self.vectors.docs[:n], self.vectors.lengths[:n]
        )
        if mode == "keyword":
            if allowed is not None:
                matched &= allowed
            best = top_k(keyword, k, matched)
            return best, keyword[best]
        assert dense is not None
        fused = fuse(dense, keyword, alpha, allowed)
        best = top_k(fused, k, allowed)
        return best, fused[best]

    def _allowed(self, filters: list[tuple[str, str, Any]]) -> npt.NDArray[np.bool_] | None:
        """Which rows pass ``where`` (``None``: all)."""
        if not filters:
            return None
        clauses = " AND ".join(
            "json_type(metadata, ?) = ?"
            + (
                " AND json_extract(metadata, ?) = ?"
                if v is not None and not isinstance(v, bool)
                else ""
            )
            for _, _, v in filters
        )
        params: list[Any] = []
        for path, kind, value in filters:
            params += [path, kind]
            if value is not None and not isinstance(value, bool):
                params += [path, value]
        docs = np.array(
            [
                row[0]
                for row in self._connection.execute(
                    f"SELECT doc FROM sse_docs WHERE metadata IS NOT NULL AND {clauses}", params
                )
            ],
            np.int64,
        )
        allowed = np.zeros(len(self.vectors), bool)
        allowed[self.vectors.positions(docs)] = True
        return allowed

    def _hits(self, positions: npt.NDArray[np.intp], scores: npt.NDArray[np.float32]) -> list[Hit]:
        if len(positions) == 0:
            return []
        docs = self.vectors.docs[positions]
        marks = ",".join("?" * len(docs))
        rows = {
            doc: (id_, text, meta)
            for doc, id_, text, meta in self._connection.execute(
                f"SELECT doc, id, text, metadata FROM sse_docs WHERE doc IN ({marks})",
                [int(doc) for doc in docs],
            )
        }
        hits = []
        for doc, score in zip(docs.tolist(), scores.tolist(), strict=True):
            id_, text, meta = rows[doc]
            hits.append(Hit(id_, float(score), text, _metadata(meta)))
        return hits

    def documents(self) -> Iterator[tuple[str, str, dict[str, Any] | None]]:
        """Every document's ``(id, text, metadata)``, in the order they were added."""
        with self._lock, schema.translated(self.path), self._read():
            rows = [
                (id_, text, _metadata(meta))
                for id_, text, meta in self._connection.execute(
                    "SELECT id, text, metadata FROM sse_docs ORDER BY doc"
                )
            ]
        yield from rows

    def info(self) -> dict[str, Any]:
        """What the file holds and what produced it."""
        with self._lock, schema.translated(self.path), self._read():
            meta = schema.read_meta(self._connection, self.path)
            count = len(self.vectors)
        size = sum(
            file.stat().st_size
            for file in (self.path, self.path.with_name(self.path.name + "-wal"))
            if file.exists()
        )
        return {
            "path": str(self.path),
            "documents": count,
            "file_bytes": size,
            "bytes_per_document": round(size / count, 1) if count else None,
            **meta,
        }


@dataclass(frozen=True)
class _Prepared:
    """A batch made ready to write: int8 vectors, their scales, postings, lengths in terms."""

    q: npt.NDArray[np.int8]
    scales: npt.NDArray[np.float32]
    postings: Postings
    lengths: npt.NDArray[np.int64]


class _PostingsWriter:
    """Gathers one add's postings and writes them as segments of ``SEGMENT_DOCUMENTS``,
    merging segments after each (inside the add's transaction), so that a large add merges
    ``FANOUT`` segments at a time rather than all of them at its end.

    Args:
        connection: The index's connection, in a write transaction.
        first: The first document number this add writes (those from it on are alive).
        removed: Documents this add removed (replaced texts).
        held: The documents held before the add (ascending).
    """

    def __init__(
        self,
        connection: sqlite3.Connection,
        first: int,
        removed: npt.NDArray[np.int64],
        held: npt.NDArray[np.int64],
    ) -> None:
        self._connection = connection
        self._first = first
        self._removed = removed
        self._held = held
        self._parts: list[Postings] = []
        self._documents = 0

    def add(self, postings: Postings, documents: int) -> None:
        self._parts.append(postings)
        self._documents += documents
        if self._documents >= SEGMENT_DOCUMENTS:
            self._flush()

    def close(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if self._parts:
            write_segment(self._connection, Postings.join(self._parts))
            merge_segments(self._connection, self._alive)
        self._parts, self._documents = [], 0

    def _alive(self, docs: npt.NDArray[np.uint32]) -> npt.NDArray[np.bool_]:
        numbers = docs.astype(np.int64)
        before = find(self._held, numbers) >= 0
        if len(self._removed):
            before &= ~np.isin(numbers, self._removed)
        alive: npt.NDArray[np.bool_] = before | (numbers >= self._first)
        return alive


def _rows_bytes(q: npt.NDArray[np.int8]) -> list[bytes]:
    """Each row of ``q`` as bytes (one copy, then slices)."""
    data, width = np.ascontiguousarray(q).tobytes(), q.shape[1]
    return [data[i : i + width] for i in range(0, len(data), width)]


def _identity(encoder: Encoder) -> dict[str, str]:
    """What produced an index's vectors, as its ``sse_meta`` records it."""
    return {
        "model_name": encoder.manifest.model_name,
        "model_sha256": fmt.sha256_file(encoder.folder / fmt.MANIFEST_FILE),
        "variant": encoder.variant,
        "dim": str(encoder.dim),
        "vector_type": "int8",
    }


def _mismatch(path: Path, found: Mapping[str, str], wanted: Mapping[str, str]) -> str:
    def describe(meta: Mapping[str, str]) -> str:
        return (
            f"{meta.get('model_name')!r} ({meta.get('variant')}, {meta.get('dim')} dims, "
            f"manifest sha256 {str(meta.get('model_sha256'))[:12]})"
        )

    return (
        f"{path} was built with model {describe(found)}, not with {describe(wanted)}; its "
        "vectors cannot be mixed. Open it with that model (Index(path, encoder=Encoder(FOLDER))), "
        "or embed its texts again with this one: Index(path, encoder=..., reembed=True), or "
        "`sse-index reembed PATH --model FOLDER`."
    )


def _sqlite_or_empty(path: Path) -> bool:
    """Whether ``path`` is empty or starts as an SQLite database does."""
    with open(path, "rb") as handle:
        head = handle.read(len(_SQLITE_HEADER))
    return head in (b"", _SQLITE_HEADER)


def _scales(values: Sequence[float]) -> npt.NDArray[np.float32]:
    """Stored scales as float32 (any outside float32's range becomes infinite, and is refused)."""
    with np.errstate(over="ignore"):
        return np.array(values, np.float64).astype(np.float32)


def _metadata(text: str | None) -> dict[str, Any] | None:
    """A stored metadata object (a value that is not one means the file was damaged)."""
    if text is None:
        return None
    value = json.loads(text)
    if not isinstance(value, dict):
        raise json.JSONDecodeError("metadata is not a JSON object", text, 0)
    return value


def _same(row: Row, existing: tuple[int, bytes, str | None, str]) -> bool:
    return row.sha256 == existing[1] and row.metadata == existing[2]
