"""The index file's format: its tables, its version, and how a file is opened safely.

One SQLite file holds everything (docs/index-format.md describes it for other readers):

- ``sse_meta(key, value)``: the schema version and what produced the vectors (the model's
  name, the sha256 of its ``manifest.json``, variant, width, vector type).
- ``sse_docs``: one row a document: its number ``doc`` (the rowid, never reused), the caller's
  ``id``, the ``text``, ``metadata`` (a JSON object or NULL), the text's ``sha256``, its int8
  ``vector`` and the vector's ``scale`` (:mod:`sse_onnx.index.vectors`), and its length in
  FTS5 terms, ``tokens``.
- ``sse_fts``: an FTS5 index of ``sse_docs.text`` (external content, ``porter unicode61``),
  kept in step by the index itself within each transaction (no triggers).
- ``sse_segments`` and ``sse_postings``: each term's documents and counts, for BM25 without
  FTS5's cost per document (:mod:`sse_onnx.index.postings`).

A file from elsewhere is untrusted, as SQLite's "Defense Against The Dark Arts" advises:
``trusted_schema`` off, cell size checks on, memory mapping off, a ``quick_check``, and the
schema compared entry by entry with the one this module creates, so that a trigger, view or
table that this module did not write is refused before anything runs.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from sse_onnx.errors import IndexFormatError, SSEError

__all__ = [
    "FTS_TOKENIZER",
    "SCHEMA_VERSION",
    "check",
    "connect",
    "create",
    "damaged",
    "has_fts5",
    "is_empty",
    "read_meta",
    "transaction",
    "translated",
    "write_meta",
]

#: Version of the tables below; a file of another version is refused.
SCHEMA_VERSION = 2
#: Identifies an index file in ``sse_meta`` (``format``).
FORMAT_NAME = "sse-onnx-index"
#: Words are split by Unicode class, folded to lower case without diacritics, then stemmed.
FTS_TOKENIZER = "porter unicode61"

_TABLES = (
    "CREATE TABLE sse_meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL)",
    "CREATE TABLE sse_docs ("
    "doc INTEGER PRIMARY KEY AUTOINCREMENT, "
    "id TEXT NOT NULL UNIQUE, "
    "text TEXT NOT NULL, "
    "metadata TEXT, "
    "sha256 BLOB NOT NULL, "
    "vector BLOB NOT NULL, "
    "scale REAL NOT NULL, "
    "tokens INTEGER NOT NULL)",
    "CREATE VIRTUAL TABLE sse_fts USING fts5("
    f"text, content='sse_docs', content_rowid='doc', tokenize='{FTS_TOKENIZER}')",
    "CREATE TABLE sse_segments (segment INTEGER PRIMARY KEY, level INTEGER NOT NULL)",
    "CREATE TABLE sse_postings ("
    "term BLOB NOT NULL, "
    "segment INTEGER NOT NULL, "
    "docs BLOB NOT NULL, "
    "counts BLOB NOT NULL, "
    "PRIMARY KEY (term, segment))",
    "CREATE INDEX sse_postings_segment ON sse_postings (segment)",
)


#: Reads ``sqlite_master`` as compared by :func:`check`. FTS5 writes its shadow tables'
#: definitions itself, and another SQLite release may word them otherwise: only their names count.
_SCHEMA_ROWS = (
    "SELECT type, name, tbl_name, CASE WHEN name LIKE 'sse\\_fts\\_%' ESCAPE '\\' "
    "THEN NULL ELSE sql END FROM sqlite_master"
)


def _expected_schema() -> set[tuple[str, str, str, str | None]]:
    """The ``sqlite_master`` rows (less root pages) that :func:`create` writes."""
    probe = sqlite3.connect(":memory:")
    try:
        for statement in _TABLES:
            probe.execute(statement)
        return set(probe.execute(_SCHEMA_ROWS))
    finally:
        probe.close()


def has_fts5() -> bool:
    """Whether this Python's SQLite was built with FTS5."""
    probe = sqlite3.connect(":memory:")
    try:
        probe.execute("CREATE VIRTUAL TABLE t USING fts5(x)")
    except sqlite3.OperationalError:
        return False
    finally:
        probe.close()
    return True


def connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    """Open ``path`` with SQLite's settings for files of unknown origin.

    Raises:
        IndexFormatError: if the file is not an SQLite database, or cannot be opened.
    """
    uri = path.resolve().as_uri() + ("?mode=ro" if readonly else "?mode=rwc")
    try:
        connection = sqlite3.connect(
            uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30.0
        )
    except (sqlite3.Error, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"Cannot open {path} as an SQLite file ({exc}).") from exc
    try:
        connection.execute("PRAGMA trusted_schema = OFF")
        connection.execute("PRAGMA cell_size_check = ON")
        connection.execute("PRAGMA mmap_size = 0")
        defensive = getattr(sqlite3, "SQLITE_DBCONFIG_DEFENSIVE", None)
        if defensive is not None and hasattr(connection, "setconfig"):  # Python >= 3.12
            connection.setconfig(defensive, True)
    except (sqlite3.Error, UnicodeDecodeError) as exc:
        connection.close()
        raise damaged(path, exc) from exc
    return connection


def create(connection: sqlite3.Connection, meta: Mapping[str, str]) -> None:
    """Write the tables and ``meta`` into an empty database, in one transaction."""
    connection.execute("PRAGMA journal_mode = WAL")
    with transaction(connection):
        for statement in _TABLES:
            connection.execute(statement)
        write_meta(
            connection,
            {"format": FORMAT_NAME, "schema_version": str(SCHEMA_VERSION), **meta},
        )


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: committed when the block ends, rolled back if it raises."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if connection.in_transaction:
            connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def is_empty(connection: sqlite3.Connection, path: Path) -> bool:
    """Whether the database has no tables yet (a new file)."""
    try:
        return bool(connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0)
    except sqlite3.DatabaseError as exc:
        raise damaged(path, exc) from exc


def check(connection: sqlite3.Connection, path: Path) -> dict[str, str]:
    """Check an existing file before use and return its ``sse_meta``.

    Raises:
        IndexFormatError: if the file is damaged, is not an sse-onnx index, has another schema
            version, or holds an entry (a trigger, view, table, index) this module did not write.
    """
    try:
        problems = [row[0] for row in connection.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise IndexFormatError(
                f"{path} is damaged (SQLite's quick_check: {'; '.join(problems[:3])}). Restore it "
                "from a copy, or build the index again from its texts."
            )
        found = set(connection.execute(_SCHEMA_ROWS))
    except sqlite3.DatabaseError as exc:
        raise damaged(path, exc) from exc
    expected = _expected_schema()
    if not any(row[1] == "sse_meta" for row in found):
        raise IndexFormatError(
            f"{path} is an SQLite file but not an sse-onnx index (it has no sse_meta table); "
            "pass a file written by sse_onnx.Index, or a new path to create one."
        )
    meta = read_meta(connection, path)
    if meta.get("format") != FORMAT_NAME:
        raise IndexFormatError(f"{path} is not an sse-onnx index (format {meta.get('format')!r}).")
    version = meta.get("schema_version")
    if version is not None and version.isdigit() and int(version) < SCHEMA_VERSION:
        raise IndexFormatError(
            f"{path} was written by an earlier sse-onnx (index schema version {version}; this "
            f"one reads version {SCHEMA_VERSION}). Build a new index from its texts, which are "
            "in its sse_docs table: sqlite3 FILE 'SELECT id, text, metadata FROM sse_docs'."
        )
    if version != str(SCHEMA_VERSION):
        raise IndexFormatError(
            f"{path} has index schema version {version}, this sse-onnx reads version "
            f"{SCHEMA_VERSION}; open it with the sse-onnx that wrote it, or build it again."
        )
    if found != expected:
        unexpected = sorted(f"{row[0]} {row[1]}" for row in found - expected)
        missing = sorted(f"{row[0]} {row[1]}" for row in expected - found)
        raise IndexFormatError(
            f"{path} does not have the tables of an sse-onnx index "
            f"(unexpected: {', '.join(unexpected) or 'none'}; missing or changed: "
            f"{', '.join(missing) or 'none'}). It is refused unread: entries such as triggers "
            "or views run code. Build the index again from its texts."
        )
    return meta


def read_meta(connection: sqlite3.Connection, path: Path) -> dict[str, str]:
    """The ``sse_meta`` table as a dict."""
    try:
        rows = connection.execute("SELECT key, value FROM sse_meta").fetchall()
    except sqlite3.DatabaseError as exc:
        raise damaged(path, exc) from exc
    if not all(isinstance(key, str) and isinstance(value, str) for key, value in rows):
        raise IndexFormatError(f"{path}: sse_meta holds values that are not text; it is damaged.")
    return dict(rows)


def write_meta(connection: sqlite3.Connection, meta: Mapping[str, str]) -> None:
    """Set keys of ``sse_meta`` (inside the caller's transaction)."""
    connection.executemany(
        "INSERT INTO sse_meta (key, value) VALUES (?, ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        sorted(meta.items()),
    )


@contextmanager
def translated(path: Path) -> Iterator[None]:
    """Turn SQLite's errors on ``path`` into one clear error of this package.

    A file can be damaged in ways ``quick_check`` does not see (FTS5's own pages, text that is
    not UTF-8, metadata that is not JSON): they surface only when read, here.
    """
    try:
        yield
    except IndexFormatError as exc:
        if str(path) in str(exc):
            raise
        raise IndexFormatError(f"{path}: {exc}") from exc
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if "locked" in text or "busy" in text:
            raise SSEError(
                f"{path} is being written by another connection and stayed locked ({text}); "
                "try again when that writer has finished."
            ) from exc
        if "readonly" in text and os.access(path, os.W_OK) and os.access(path.parent, os.W_OK):
            raise IndexFormatError(
                f"{path} cannot be written although its file and folder can ({text}): its "
                "header says a newer SQLite file format, or it is damaged. Open it with "
                "readonly=True to search it, or build the index again from its texts."
            ) from exc
        if "readonly" in text:
            raise SSEError(
                f"{path} cannot be written ({text}): the file or its folder is read-only. "
                "Open it with readonly=True to search it, or copy it somewhere writable."
            ) from exc
        raise damaged(path, exc) from exc
    except (sqlite3.DatabaseError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise damaged(path, exc) from exc


def damaged(path: Path, exc: BaseException) -> IndexFormatError:
    return IndexFormatError(
        f"{path} is not a readable sse-onnx index ({exc}): it is damaged or not an SQLite "
        "file. Restore it from a copy, or build the index again from its texts."
    )
