"""``sse_onnx.Index`` against hostile input, untrusted and damaged files, kills and concurrency.

A query is text, never FTS5 syntax; texts, ids and metadata are stored as given; a file from
elsewhere (extra entries, another version, another application's database, random bytes) is
refused with an ``IndexFormatError`` that says why; a damaged file (fuzzed in subprocesses, so
that a crash names its case) ends in success or one ``SSEError``, never another exception or a
dead process; a writer killed with SIGKILL loses no returned ``add`` and leaves no partial one;
readers in other processes and threads see every commit; an interrupted ``add`` rolls back.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run_cases
from sse_onnx import Encoder, Hit, Index, IndexFormatError
from sse_onnx.index import store

MODES = ("hybrid", "dense", "keyword")
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
#: Words of the filler documents (real words, so the default model and porter both read them).
WORDS = [
    "river", "mountain", "apple", "orange", "music", "piano", "quantum", "physics", "database",
    "engine", "garden", "winter", "summer", "coffee", "market", "window", "letter", "silver",
    "forest", "ocean", "planet", "doctor", "bridge", "castle", "pepper", "salt", "lemon",
    "horse", "rabbit", "violin", "camera", "rocket",
]  # fmt: skip
#: Documents holding FTS5's operators and special characters as words.
SPECIAL = {
    "near": "The river flows NEAR the old mill.",
    "and": "Salt AND pepper, OR vinegar: NOT both.",
    "cat": "A cat sleeps on the warm mat.",
    "catalog": "The library catalog lists every book.",
    "text": "This text column holds a note.",
    "start": "Start the engine before dawn.",
    "nul": "before\x00after the NUL byte",
    "emoji": "👩‍👩‍👧‍👦 family picnic 東京の猫 مرحبا بالعالم",
}
#: Text that FTS5 or SQL would read as syntax, and text that strains a tokenizer.
HOSTILE = [
    "text:cat", "sse_fts:cat", "{text}: cat", "col:", "NEAR(a b)", "NEAR(cat river, 2)",
    '"unbalanced', '""', '"', "'", "a AND", "AND", "OR NOT", "NOT cat", "cat OR", "*", "cat*",
    "^start", "^", "-x", "- cat", "+", "(", ")", "((cat)", "a\x00b", "\x00", "cat\x00",
    "👩‍👩‍👧‍👦 family", "東京の猫", "مرحبا بالعالم", "שלום עולם", "\u202eevil\u202c",
    "\u200b\u200d\ufeff", "e\u0301", "'); DROP TABLE sse_docs;--", "cat' OR '1'='1", "%_%",
    "\\", "\\x00", "\t\n\r", "", "   ", "x" * 10_000, "0", "-1", "1e400", "NaN",
]  # fmt: skip


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder()


def filler(rng: random.Random, n: int, words: int = 12) -> list[str]:
    return [" ".join(rng.choices(WORDS, k=rng.randint(3, words))) for _ in range(n)]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, encoder: Encoder) -> Iterator[Index]:
    """60 documents: the SPECIAL ones and 52 of random words (seeded)."""
    texts = [*SPECIAL.values(), *filler(random.Random(3), 52)]
    ids = [*SPECIAL, *(f"f{i}" for i in range(52))]
    with Index(tmp_path_factory.mktemp("index") / "hostile.db", encoder=encoder) as opened:
        opened.add(texts, ids=ids, metadata=[{"n": i} for i in range(len(texts))])
        yield opened


def check_hits(hits: object, k: int, size: int, mode: str) -> list[Hit]:
    """``hits`` is a list of at most ``k`` distinct Hits with finite scores, best first."""
    assert isinstance(hits, list)
    assert all(isinstance(hit, Hit) for hit in hits)
    assert len(hits) <= k
    if mode != "keyword":  # every document takes part
        assert len(hits) == min(k, size)
    assert len({hit.id for hit in hits}) == len(hits)
    scores = [hit.score for hit in hits]
    assert all(math.isfinite(score) for score in scores), scores
    assert scores == sorted(scores, reverse=True)
    return hits


# --------------------------------------------------------------------------- hostile queries


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("query", HOSTILE)
def test_a_hostile_query_gives_results(index: Index, query: str, mode: str) -> None:
    check_hits(index.search(query, k=5, mode=mode), 5, len(index), mode)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", MODES)
def test_a_list_of_hostile_queries_gives_one_list_each(index: Index, mode: str) -> None:
    results = index.search(HOSTILE, k=3, mode=mode)  # type: ignore[arg-type]
    assert len(results) == len(HOSTILE)
    for hits in results:
        check_hits(hits, 3, len(index), mode)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("near", "near"),
        ("NEAR", "near"),
        ("NEAR(river mill)", "near"),
        ("AND", "and"),
        ("OR", "and"),
        ("NOT", "and"),
        ("NOT cat", "cat"),  # not an exclusion: both words are asked
        ("text:note", "text"),  # not a column filter: 'text' is a word of the document
        ("^start", "start"),
        ('"vinegar', "and"),
        ("after\x00", "nul"),
        ("東京の猫", "emoji"),
    ],
)
def test_fts5_operators_are_read_as_words(index: Index, query: str, expected: str) -> None:
    hits = index.search(query, mode="keyword", k=3)
    assert expected in [hit.id for hit in hits], [(hit.id, hit.score) for hit in hits]


def test_a_star_is_not_a_prefix_search(index: Index) -> None:
    found = {hit.id for hit in index.search("cat*", mode="keyword", k=20)}
    assert found == {"cat"}  # not "catalog"


def test_a_query_of_100_000_words_completes(index: Index) -> None:
    rng = random.Random(5)
    syntax = ["NEAR", "AND", "*", "(", '"', "cat", "river", "text:"]
    words = [f"w{rng.randrange(10**9)}" if i % 2 else rng.choice(syntax) for i in range(100_000)]
    query = " ".join(words)
    for mode in MODES:
        start = time.perf_counter()
        hits = check_hits(index.search(query, k=5, mode=mode), 5, len(index), mode)
        assert time.perf_counter() - start < 20, mode
        assert hits, mode  # 'cat' and 'river' are in the index


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("query", ["\ud800", "cat \udfff dog", "\udc80"])
def test_a_lone_surrogate_in_a_query_is_a_value_error(index: Index, query: str, mode: str) -> None:
    with pytest.raises(
        ValueError, match=r"query is not valid Unicode: it holds the lone surrogate"
    ):
        index.search(query, mode=mode)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"query\[1\] is not valid Unicode"):
        index.search(["cat", query], mode=mode)  # type: ignore[arg-type]


_SYNTAX = [
    "AND", "OR", "NOT", "NEAR", "NEAR(", "*", "^", '"', "'", "(", ")", ":", "-", "+", "{", "}",
    ",", "text:", "sse_fts", "\x00", "cat", "near", "river", "%", ";", "--",
]  # fmt: skip
_CHARACTERS = st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr))
_QUERIES = st.one_of(
    st.text(_CHARACTERS, max_size=60),
    st.lists(
        st.one_of(st.sampled_from(_SYNTAX), st.text(_CHARACTERS, max_size=6)), max_size=20
    ).flatmap(lambda parts: st.sampled_from([" ".join(parts), "".join(parts)])),
)


@settings(max_examples=200, deadline=None)
@given(query=_QUERIES, k=st.integers(1, 80), mode=st.sampled_from(MODES))
def test_any_text_is_a_query(index: Index, query: str, k: int, mode: str) -> None:
    if re.search("[\ud800-\udfff]", query):
        with pytest.raises(ValueError, match="lone surrogate"):
            index.search(query, k=k, mode=mode)  # type: ignore[arg-type]
        return
    hits = check_hits(index.search(query, k=k, mode=mode), k, len(index), mode)  # type: ignore[arg-type]
    ids = {id_ for id_, _, _ in index.documents()}
    assert {hit.id for hit in hits} <= ids


# --------------------------------------------------------------------------- hostile documents


def test_hostile_texts_and_ids_are_stored_as_given(tmp_path: Path, encoder: Encoder) -> None:
    texts = [text for text in HOSTILE if len(text) < 1000]
    ids = [*texts[1:], texts[0]]  # each hostile text under another hostile id
    ids += ["id\x00nul", "sse_fts", "sse_docs", " ", "\x00\x00"]
    texts += ["nul id", "fts id", "docs id", "space id", "two nul id"]
    assert len(set(ids)) == len(ids)
    metadata = [
        {"text": text, "a.b": i, "x y": [text], "it's": None} for i, text in enumerate(texts)
    ]
    given = {id_: (text, meta) for id_, text, meta in zip(ids, texts, metadata, strict=True)}
    with Index(tmp_path / "hostile.db", encoder=encoder) as index:
        assert index.add(texts, ids=ids, metadata=metadata).added == len(texts)
        assert list(index.documents()) == list(zip(ids, texts, metadata, strict=True))
        assert len(index) == len(texts)
        # Every hit comes back with its own text and metadata, NUL bytes and all.
        for text in texts:
            for mode in MODES:
                for hit in index.search(text, mode=mode, k=len(texts)):  # type: ignore[arg-type]
                    assert (hit.text, hit.metadata) == given[hit.id], repr(hit.id)
        hits = index.search("nul", mode="keyword", k=5)
        assert {hit.id for hit in hits} == {"id\x00nul", "\x00\x00"}
        assert index.search("a\x00b", mode="dense", k=1)[0].text == "a\x00b"
        # Adding the same again changes nothing; deleting by hostile ids works.
        assert index.add(texts, ids=ids, metadata=metadata).unchanged == len(texts)
        assert index.delete(["id\x00nul", "'); DROP TABLE sse_docs;--", ""]) == 3
        assert len(index) == len(texts) - 3
    with Index(tmp_path / "hostile.db", encoder=encoder) as reopened:
        assert len(reopened) == len(texts) - 3
        assert {id_ for id_, _, _ in reopened.documents()} == set(ids) - {
            "id\x00nul",
            "'); DROP TABLE sse_docs;--",
            "",
        }


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"a.b": 1}, ["dots"]),
        ({"x y": "v"}, ["dots"]),
        ({"it's": True}, ["dots"]),
        ({"": 5}, ["dots"]),
        ({"[0]": 1}, ["dots"]),
        ({"$": None}, ["dots"]),
        ({"a": 1}, []),  # "a.b" is one key, not a path
        ({"'); DROP TABLE sse_docs;--": 1}, []),
        ({"k": "'); DROP TABLE sse_docs;--"}, ["sql"]),
        ({"k": "a"}, []),
    ],
)
def test_where_keys_are_keys_not_paths(
    tmp_path: Path, encoder: Encoder, where: dict[str, Any], expected: list[str]
) -> None:
    metadata = [
        {"a.b": 1, "x y": "v", "it's": True, "": 5, "[0]": 1, "$": None},
        {"k": "'); DROP TABLE sse_docs;--"},
        {"k": "ab"},
        None,
    ]
    with Index(tmp_path / "where.db", encoder=encoder) as index:
        index.add(
            ["one", "two", "three", "four"], ids=["dots", "sql", "ab", "none"], metadata=metadata
        )
        for mode in MODES:
            found = [hit.id for hit in index.search("one two three", where=where, mode=mode)]  # type: ignore[arg-type]
            if mode == "keyword":  # only documents that hold a query word
                assert set(found) <= set(expected), mode
            else:
                assert found == expected, mode
        assert len(index) == 4


@pytest.mark.parametrize("key", ['a"b', '"', "a\\b", "\\"])
def test_a_where_key_with_quotes_is_a_value_error(index: Index, key: str) -> None:
    with pytest.raises(
        ValueError, match=r"where key .* must be a str without quotes, backslashes or NUL"
    ):
        index.search("cat", where={key: 1})


@pytest.mark.parametrize("where", [{"k": "a\x00b"}, {"a\x00b": 1}, {"\x00": "x"}])
def test_a_nul_in_where_finds_its_document_or_is_a_value_error(
    tmp_path: Path, encoder: Encoder, where: dict[str, Any]
) -> None:
    metadata: list[dict[str, Any]] = [
        {"k": "a\x00b"}, {"a\x00b": 1}, {"\x00": "x"}, {"k": "a"}, {"a": 1}, {"": "x"},
    ]  # fmt: skip
    ids = [f"m{i}" for i in range(len(metadata))]
    with Index(tmp_path / "nul.db", encoder=encoder) as index:
        index.add(["x"] * len(metadata), ids=ids, metadata=metadata)
        try:
            found = [hit.id for hit in index.search("x", where=where, mode="dense")]
        except ValueError as exc:  # refusing NUL is as good as matching it, if it says so
            assert "where" in str(exc), exc
            return
        assert found == [ids[metadata.index(where)]], found


@pytest.mark.parametrize(
    ("call", "match"),
    [
        pytest.param(
            lambda ix: ix.add(["x\ud800"], ids=["s"]), r"texts\[0\] is not valid", id="text"
        ),
        pytest.param(lambda ix: ix.add(["x"], ids=["\udfff"]), r"ids\[0\] is not valid", id="id"),
        pytest.param(
            lambda ix: ix.search("x", where={"k": "\ud800"}),
            r"where\['k'\] is not valid Unicode",
            id="where-value",
        ),
        pytest.param(
            lambda ix: ix.search("x", where={"\ud800": 1}),
            r"where.* (is not valid Unicode|lone surrogate)",
            id="where-key",
        ),
        pytest.param(
            lambda ix: ix.add(["x"], ids=["s"], metadata=[{"\ud800": 1}]),
            r"metadata\[0\] .*(is not valid Unicode|lone surrogate)",
            id="metadata-key",
        ),
        pytest.param(
            lambda ix: ix.add(["x"], ids=["s"], metadata=[{"k": "\ud800"}]),
            r"metadata\[0\] .*(is not valid Unicode|lone surrogate)",
            id="metadata-value",
        ),
    ],
)
def test_a_lone_surrogate_anywhere_is_one_clear_value_error(
    tmp_path: Path, encoder: Encoder, call: Any, match: str
) -> None:
    with Index(tmp_path / "surrogates.db", encoder=encoder) as index:
        index.add(["kept"], ids=["kept"])
        with pytest.raises(ValueError, match=match):
            call(index)
        assert [id_ for id_, _, _ in index.documents()] == ["kept"]


# --------------------------------------------------------------------------- untrusted files


def small_index(path: Path, encoder: Encoder, n: int = 20) -> Path:
    with Index(path, encoder=encoder) as index:
        index.add(filler(random.Random(n), n), ids=[f"d{i}" for i in range(n)])
    assert not Path(f"{path}-wal").exists()  # checkpointed into the file on close
    return path


def tamper(path: Path, *statements: str) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA writable_schema = ON")
        for statement in statements:
            connection.execute(statement)
        connection.execute("PRAGMA writable_schema = OFF")
    finally:
        connection.close()


@pytest.mark.parametrize(
    ("statements", "match"),
    [
        (
            ["CREATE TRIGGER evil AFTER INSERT ON sse_docs BEGIN DELETE FROM sse_meta; END"],
            r"unexpected: trigger evil; missing or changed: none\). It is refused unread",
        ),
        (
            ["CREATE TRIGGER sse_fts_x AFTER INSERT ON sse_docs BEGIN DELETE FROM sse_meta; END"],
            r"unexpected: trigger sse_fts_x;",
        ),
        (["CREATE VIEW sse_view AS SELECT id FROM sse_docs"], r"unexpected: view sse_view;"),
        (["CREATE VIEW sse_fts_v AS SELECT 1"], r"unexpected: view sse_fts_v;"),
        (["CREATE TABLE extra (x)"], r"unexpected: table extra;"),
        (["CREATE INDEX by_text ON sse_docs (text)"], r"unexpected: index by_text;"),
        (
            ["DROP TABLE sse_fts_config", "CREATE VIEW sse_fts_config AS SELECT 1 AS k, 2 AS v"],
            r"unexpected: view sse_fts_config; missing or changed: table sse_fts_config\)",
        ),
        (["DROP TABLE sse_fts"], r"unexpected: none; missing or changed: table sse_fts, "),
        (
            [
                "UPDATE sqlite_master SET sql = replace(sql, 'porter unicode61', 'trigram') "
                "WHERE name = 'sse_fts'"
            ],
            r"unexpected: table sse_fts; missing or changed: table sse_fts\)",
        ),
        (
            [
                "UPDATE sqlite_master SET sql = replace(sql, 'scale REAL NOT NULL', "
                "'scale REAL NOT NULL DEFAULT (load_extension(''x''))') WHERE name = 'sse_docs'"
            ],
            r"missing or changed: table sse_docs\)",
        ),
        (
            ["UPDATE sse_meta SET value = '3' WHERE key = 'schema_version'"],
            r"has index schema version 3, this sse-onnx reads version 2",
        ),
        (["DELETE FROM sse_meta WHERE key = 'schema_version'"], r"has index schema version None"),
        (
            ["UPDATE sse_meta SET value = '1' WHERE key = 'schema_version'"],
            r"written by an earlier sse-onnx \(index schema version 1; this one reads version 2\)"
            r"\. Build a new index from its texts",
        ),
        (
            ["UPDATE sse_meta SET value = 'other' WHERE key = 'format'"],
            r"is not an sse-onnx index \(format 'other'\)",
        ),
        (["UPDATE sse_meta SET value = x'00' WHERE key = 'dim'"], r"sse_meta holds values that"),
    ],
)
def test_a_tampered_file_is_refused_unchanged(
    tmp_path: Path, encoder: Encoder, statements: list[str], match: str
) -> None:
    path = small_index(tmp_path / "tampered.db", encoder)
    tamper(path, *statements)
    before = path.read_bytes()
    for readonly in (False, True):
        with pytest.raises(IndexFormatError, match=match):
            Index(path, encoder=encoder, readonly=readonly)
    assert path.read_bytes() == before
    # A read-only connection leaves SQLite's -shm, and an empty -wal, behind: nothing else.
    assert {p.name for p in tmp_path.iterdir()} <= {
        "tampered.db",
        "tampered.db-shm",
        "tampered.db-wal",
    }
    wal = tmp_path / "tampered.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0


def test_another_applications_database_is_refused(tmp_path: Path, encoder: Encoder) -> None:
    path = tmp_path / "app.db"
    connection = sqlite3.connect(path)
    connection.execute("CREATE TABLE users (name TEXT, email TEXT)")
    connection.execute("INSERT INTO users VALUES ('ada', 'ada@example.org')")
    connection.commit()
    connection.close()
    before = path.read_bytes()
    with pytest.raises(IndexFormatError, match=r"is an SQLite file but not an sse-onnx index \(it"):
        Index(path, encoder=encoder)
    assert path.read_bytes() == before


# SQLite reads a file of one byte as an empty database: it must not be overwritten either.
@pytest.mark.parametrize("size", [1, 100, 4096, 65536])
def test_a_file_of_random_bytes_is_refused(tmp_path: Path, encoder: Encoder, size: int) -> None:
    path = tmp_path / "random.db"
    path.write_bytes(random.Random(size).randbytes(size))
    for readonly in (False, True):
        with pytest.raises(
            IndexFormatError, match=r"random\.db is not an SQLite file, so not an sse-onnx index"
        ):
            Index(path, encoder=encoder, readonly=readonly)
    assert path.stat().st_size == size


def test_an_empty_file_becomes_a_new_index(tmp_path: Path, encoder: Encoder) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with pytest.raises(IndexFormatError, match=r"empty\.db is empty, not an sse-onnx index"):
        Index(path, encoder=encoder, readonly=True)
    with Index(path, encoder=encoder) as index:
        assert len(index) == 0
        index.add(["a cat"], ids=["c"])
    with Index(path, encoder=encoder, readonly=True) as index:
        assert [hit.id for hit in index.search("cat")] == ["c"]


def test_a_folder_is_refused(tmp_path: Path, encoder: Encoder) -> None:
    with pytest.raises(IndexFormatError, match=r"is a folder; pass the path of an index file"):
        Index(tmp_path, encoder=encoder)


# --------------------------------------------------------------------------- damaged files


def use(index: Index) -> None:
    """Every way of reading and writing an index, as the damaged-file worker below does."""
    len(index)
    for mode in MODES:
        index.search("river music database", mode=mode, k=100)  # type: ignore[arg-type]
        index.search("river", mode=mode, k=100, where={"n": 3})  # type: ignore[arg-type]
    index.add(["a new river document"], ids=["new"], metadata=[{"n": 3}])
    index.search("new river", k=5)
    list(index.documents())


@pytest.mark.parametrize(
    ("statements", "header", "match"),
    [
        pytest.param(
            ["UPDATE sse_docs SET vector = x'00' WHERE id = 'd3'"], None,
            r"document 'd3' does not have 256 int8 values", id="short-vector",
        ),
        pytest.param(
            ["UPDATE sse_docs SET scale = 1e300 WHERE id = 'd3'"], None,
            r"a vector's scale is not finite", id="infinite-scale",
            marks=pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
        ),
        # Damage inside values, which SQLite's quick_check does not read:
        # (FTS5's own segments are read only for words it reads as phrases and by writes; their
        # damage is among the mutated files below, where a clean result is also accepted.)
        pytest.param(
            ["UPDATE sse_postings SET docs = x'010203' WHERE term = CAST('river' AS BLOB)"], None,
            r"damaged\.db: A row of the index's postings is not a list", id="postings-docs",
        ),
        pytest.param(
            [
                "UPDATE sse_postings SET counts = zeroblob(3 * length(docs) / 4)"
                " WHERE term = CAST('river' AS BLOB)"
            ],
            None,
            r"postings has counts that do not match", id="postings-counts",
        ),
        pytest.param(
            ["UPDATE sse_docs SET text = CAST(x'61ff62' AS TEXT) WHERE id = 'd3'"], None,
            r"damaged\.db", id="text-not-utf8",
        ),
        pytest.param(
            ["UPDATE sse_docs SET id = CAST(x'64ff' AS TEXT) WHERE id = 'd3'"], None,
            r"damaged\.db", id="id-not-utf8",
        ),
        pytest.param(
            ["UPDATE sse_docs SET metadata = '{bad' WHERE id = 'd3'"], None,
            r"damaged\.db", id="metadata-not-json",
        ),
        # The header's write version (byte 18) above 2: SQLite opens the file read-only.
        pytest.param([], (18, 3), r"damaged\.db", id="write-version"),
        # A schema entry that SQLite's error message quotes, with bytes that are not UTF-8.
        pytest.param(
            [
                "UPDATE sqlite_master SET sql = CAST(x'435245415445205441424c4520782078ff' AS TEXT)"
                " WHERE name = 'sse_meta'"
            ],
            None, r"damaged\.db", id="schema-not-utf8",
        ),
    ],
)  # fmt: skip
def test_damage_inside_values_is_an_index_format_error(
    tmp_path: Path,
    encoder: Encoder,
    statements: list[str],
    header: tuple[int, int] | None,
    match: str,
) -> None:
    path = tmp_path / "damaged.db"
    with Index(path, encoder=encoder) as index:
        index.add(filler(random.Random(23), 20), ids=[f"d{i}" for i in range(20)])
        index.add(["meta"], ids=["m"], metadata=[{"n": 3}])
    tamper(path, *statements)
    if header is not None:
        data = bytearray(path.read_bytes())
        data[header[0]] = header[1]
        path.write_bytes(bytes(data))
    with pytest.raises(IndexFormatError, match=match), Index(path, encoder=encoder) as index:
        use(index)


#: Runs in a subprocess: opens each file named on stdin and uses it in every way, printing one
#: line before and one JSON line after each case, so that a crash names its case.
_DAMAGED_WORKER = """
import json, sys
from sse_onnx import Encoder, Index, SSEError
encoder = Encoder()
for line in sys.stdin:
    case = line.strip()
    print("start", case, flush=True)
    step = "open"
    try:
        with Index(case, encoder=encoder) as index:
            step = "len"
            len(index)
            for mode in ("hybrid", "dense", "keyword"):
                step = f"search {mode}"
                index.search("river music database", mode=mode, k=100)  # reads every text
                step = f"search {mode} where"
                index.search("river", mode=mode, k=100, where={"n": 3})
            step = "add"
            index.add(["a new river document"], ids=["new"], metadata=[{"n": 3}])
            step = "search after add"
            index.search("new river", k=5)
            step = "documents"
            list(index.documents())
        outcome = "ok"
    except SSEError as exc:
        outcome = f"{type(exc).__name__} at {step}: {exc}"
    except BaseException as exc:
        outcome = f"unclean {type(exc).__name__} at {step}: {exc}"
    print("end", json.dumps({"case": case, "outcome": outcome[:300]}), flush=True)
"""


def damaged_copies(data: bytes, root: Path, seed: int = 0) -> list[Path]:
    """160 mutated copies of the index file ``data``, 32 of each kind."""
    rng = random.Random(seed)
    header = int.from_bytes(data[16:18], "big")  # the page page_bytes (1 stands for 65536)
    page_bytes = 65536 if header == 1 else header
    pages = len(data) // page_bytes
    cases = []
    for i in range(160):
        out = bytearray(data)
        kind = ("truncated", "flipped", "zeroed", "header", "words")[i % 5]
        if kind == "truncated":  # at a page boundary or anywhere
            out = out[: rng.randrange(1, pages) * page_bytes if i % 2 else rng.randrange(len(out))]
        elif kind == "flipped":
            page = rng.randrange(pages)
            for _ in range(rng.randint(1, 8)):
                out[page * page_bytes + rng.randrange(page_bytes)] = rng.randrange(256)
        elif kind == "zeroed":
            page = rng.randrange(pages)
            out[page * page_bytes : (page + 1) * page_bytes] = bytes(page_bytes)
        elif kind == "header":
            for _ in range(rng.randint(1, 4)):
                out[rng.randrange(100)] = rng.randrange(256)
        else:  # 32-bit words (page numbers, cell pointers, lengths) near one place
            page = rng.randrange(pages)
            for _ in range(rng.randint(1, 3)):
                at = page * page_bytes + rng.randrange(page_bytes - 4)
                out[at : at + 4] = rng.randbytes(4)
        case = root / f"case-{i:03d}-{kind}.db"
        case.write_bytes(bytes(out))
        cases.append(case)
    return cases


def test_a_damaged_file_ends_in_an_sse_error_or_works(tmp_path: Path, encoder: Encoder) -> None:
    path = tmp_path / "base.db"
    rng = random.Random(7)
    with Index(path, encoder=encoder) as index:
        index.add(
            filler(rng, 60, 40),
            ids=[f"d{i}" for i in range(60)],
            metadata=[{"n": i} for i in range(60)],
        )
        index.delete([f"d{i}" for i in range(0, 60, 6)])  # some free space, some deleted terms
    assert not Path(f"{path}-wal").exists()  # every page is in the main file
    data = path.read_bytes()
    assert len(data) >= 8 * 4096
    root = tmp_path / "cases"
    root.mkdir()
    cases = damaged_copies(data, root)
    # The file with its WAL, as a copy taken while an index is open holds them: the WAL whole,
    # cut, or with bytes changed (SQLite checks each frame's checksum).
    with Index(path, encoder=encoder) as index:
        index.add(filler(rng, 30, 40), ids=[f"w{i}" for i in range(30)])
        live, wal = path.read_bytes(), Path(f"{path}-wal").read_bytes()
    assert len(wal) > 4096
    for i in range(12):
        changed = bytearray(wal)
        if i % 3 == 1:
            changed = changed[: rng.randrange(len(changed))]
        elif i % 3 == 2:
            for _ in range(rng.randint(1, 8)):
                changed[rng.randrange(len(changed))] = rng.randrange(256)
        case = root / f"case-wal-{i:02d}.db"
        case.write_bytes(live)
        Path(f"{case}-wal").write_bytes(bytes(changed))
        cases.append(case)

    outcomes = run_cases(_DAMAGED_WORKER, cases)
    classes = {name: outcome.split(" ")[0] for name, outcome in outcomes.items()}
    bad = {Path(name).name: outcomes[name] for name, kind in classes.items() if kind not in (
        "ok", "IndexFormatError", "ModelMismatchError", "DuplicateIdError", "SSEError",
    )}  # fmt: skip
    assert not bad, "\n".join(f"{name}: {outcome}" for name, outcome in sorted(bad.items()))
    # The mutations reach past the first checks: some files still work, some are refused.
    assert {"ok", "IndexFormatError"} <= set(classes.values())


# --------------------------------------------------------------------------- SIGKILL

#: Adds batches of 50 documents until killed, logging each batch number after its add returned.
_WRITER = """
import random, sys
from sse_onnx import Index
path, log, run = sys.argv[1], sys.argv[2], sys.argv[3]
words = sys.argv[4].split()
rng = random.Random(run)
with Index(path) as index, open(log, "a", encoding="utf-8") as out:
    for batch in range(10**9):
        texts = [" ".join(rng.choices(words, k=rng.randint(3, 30))) for _ in range(50)]
        ids = [f"{run}-b{batch}-{i}" for i in range(50)]
        index.add(texts, ids=ids, metadata=[{"batch": batch}] * 50)
        out.write(f"{batch}\\n")
        out.flush()
"""


def check_integrity(path: Path) -> None:
    """SQLite's integrity check, and FTS5's, of the index and of the index against the texts."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        assert connection.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        connection.execute("INSERT INTO sse_fts (sse_fts) VALUES ('integrity-check')")
        # rank = 1: also compare the index with its external content, sse_docs.
        connection.execute("INSERT INTO sse_fts (sse_fts, rank) VALUES ('integrity-check', 1)")
        counts = "SELECT (SELECT count(*) FROM sse_docs), (SELECT count(*) FROM sse_fts_docsize)"
        documents, indexed = connection.execute(counts).fetchone()
        assert documents == indexed
    finally:
        connection.close()


def logged_batches(log: Path) -> list[int]:
    lines = log.read_text(encoding="utf-8").split("\n") if log.exists() else []
    return [int(line) for line in lines[:-1]]  # the last line may be cut


def test_a_killed_writer_loses_no_returned_add(tmp_path: Path, encoder: Encoder) -> None:
    path = tmp_path / "killed.db"
    rng = random.Random(11)
    kept: dict[str, int] = {}  # documents of the earlier runs
    for run in range(14):
        log = tmp_path / f"run{run}.log"
        writer = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), str(log), f"r{run}", " ".join(WORDS)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wanted = rng.randint(1, 4)
            deadline = time.monotonic() + 60
            while len(logged_batches(log)) < wanted:
                assert writer.poll() is None, writer.communicate()[1][-3000:]
                assert time.monotonic() < deadline, "the writer logged no batch in 60 s"
                time.sleep(0.002)
            time.sleep(rng.uniform(0, 0.05))  # a random moment of a later batch
            writer.send_signal(signal.SIGKILL)
            writer.communicate()
        finally:
            if writer.poll() is None:
                writer.kill()
                writer.communicate()
        assert writer.returncode == -signal.SIGKILL

        check_integrity(path)
        returned = logged_batches(log)
        assert returned == list(range(len(returned)))
        with Index(path, encoder=encoder) as index:
            ids = [id_ for id_, _, _ in index.documents()]
            present: dict[int, int] = {}
            for id_ in ids:
                if id_.startswith(f"r{run}-"):
                    batch = int(id_.split("-")[1].removeprefix("b"))
                    present[batch] = present.get(batch, 0) + 1
            assert all(count == 50 for count in present.values()), present  # no partial batch
            assert set(returned) <= set(present), (returned, sorted(present))
            assert set(present) - set(returned) <= {len(returned)}, (returned, sorted(present))
            assert len(index) == len(ids)
            earlier = [id_.split("-")[0] for id_ in ids if not id_.startswith(f"r{run}-")]
            assert {r: earlier.count(r) for r in kept} == kept  # nothing lost since
            kept[f"r{run}"] = 50 * len(present)
            # Both parts of the index hold the last batch: FTS5 and the vectors.
            last = max(present)
            text = next(t for i, t, _ in index.documents() if i == f"r{run}-b{last}-0")
            for mode in ("dense", "keyword"):
                hits = index.search(text, mode=mode, k=len(ids), where={"batch": last})
                assert f"r{run}-b{last}-0" in [hit.id for hit in hits], mode


# --------------------------------------------------------------------------- concurrency


def read_while_writing(
    path: Path, state: Path, *, readonly: bool, ready: Callable[[], object]
) -> dict[str, Any]:
    """Search ``path`` until ``state`` says that the writer is done: what this reader saw.

    ``state`` is replaced by the writer after each commit; a search that starts after it was
    read must see that commit (its vectors too).
    """
    sizes: list[int] = []
    errors: list[str] = []
    seen: set[int] = set()
    with Index(path, readonly=readonly) as index:
        ready()
        while True:
            committed = _last_commit(state)
            try:
                size = len(index)
                if sizes and size < sizes[-1]:
                    errors.append(f"len went from {sizes[-1]} to {size}")
                sizes.append(size)
                for mode in MODES:
                    index.search("river music", mode=mode, k=5)  # type: ignore[arg-type]
                if committed is not None:
                    _check_commit(index, committed, size, errors)
                    seen.add(committed["batch"])
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            if committed is not None and committed["done"]:
                return {"reads": len(sizes), "errors": errors[:20], "seen": sorted(seen)}


def _last_commit(state: Path) -> dict[str, Any] | None:
    """The writer's last published commit, or ``None`` before its first."""
    try:
        committed: dict[str, Any] = json.loads(state.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # not written yet
        return None
    return committed


def _check_commit(index: Index, committed: dict[str, Any], size: int, errors: list[str]) -> None:
    """Add to ``errors`` what a reader of ``size`` documents misses of the ``committed`` batch."""
    batch = committed["batch"]
    dense = index.search(committed["text"], mode="dense", k=3)
    if committed["id"] not in [hit.id for hit in dense]:
        errors.append(f"batch {batch}: a dense search missed its document")
    keyword = index.search(committed["word"], mode="keyword", k=1)
    if [hit.id for hit in keyword] != [committed["id"]]:
        errors.append(f"batch {batch}: a keyword search missed its document")
    if size < committed["size"]:
        errors.append(f"batch {batch}: len {size} < {committed['size']}")


def write_batches(index: Index, state: Path, batches: int) -> None:
    """Add ``batches`` batches of 40 documents, publishing each commit to ``state``."""
    rng = random.Random(13)
    for batch in range(batches):
        texts = filler(rng, 40, 20)
        texts[0] = f"zebra{batch}x " + texts[0]  # one word only this document holds
        ids = [f"w{batch}-{i}" for i in range(40)]
        index.add(texts, ids=ids)
        committed = {
            "batch": batch, "id": ids[0], "text": texts[0], "word": f"zebra{batch}x",
            "size": len(index), "done": batch == batches - 1,
        }  # fmt: skip
        state.with_suffix(".tmp").write_text(json.dumps(committed), encoding="utf-8")
        os.replace(state.with_suffix(".tmp"), state)
        time.sleep(0.02)


def test_readers_in_other_processes_and_threads_see_every_commit(
    tmp_path: Path, encoder: Encoder
) -> None:
    path = small_index(tmp_path / "shared.db", encoder)
    state = tmp_path / "state.json"
    script = (
        "import json, sys; from pathlib import Path; "
        "from test_index_robustness import read_while_writing; "
        "ready = lambda: print('ready', flush=True); "
        "seen = read_while_writing(Path(sys.argv[1]), Path(sys.argv[2]), readonly=True, "
        "ready=ready); "
        "print(json.dumps(seen))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)])}
    reader = subprocess.Popen(
        [sys.executable, "-c", script, str(path), str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    results: dict[str, Any] = {}

    def in_thread() -> None:
        results["thread"] = read_while_writing(path, state, readonly=False, ready=started.set)

    started = threading.Event()
    thread = threading.Thread(target=in_thread)
    try:
        assert reader.stdout is not None
        assert reader.stdout.readline().strip() == "ready", reader.communicate()[1][-3000:]
        thread.start()
        assert started.wait(60)
        with Index(path, encoder=encoder) as writer:
            write_batches(writer, state, 40)
        out, err = reader.communicate(timeout=120)
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.communicate()
        thread.join(timeout=120)
    assert reader.returncode == 0, err[-3000:]
    results["process"] = json.loads(out.strip().split("\n")[-1])
    for name, result in results.items():
        assert result["errors"] == [], (name, result)
        assert result["reads"] > 10, (name, result)
        assert 39 in result["seen"] and len(result["seen"]) > 5, (name, result)


def test_two_indexes_on_one_file_in_one_process(tmp_path: Path, encoder: Encoder) -> None:
    path = small_index(tmp_path / "two.db", encoder)
    with Index(path, encoder=encoder) as first, Index(path, encoder=encoder) as second:
        assert len(first) == len(second) == 20
        first.add(["a zebra crossing the savanna"], ids=["zebra"])
        assert len(second) == 21
        assert second.search("a zebra crossing the savanna", mode="dense", k=1)[0].id == "zebra"
        assert second.search("zebra", mode="keyword")[0].id == "zebra"
        second.add(["a zebra in the city"], ids=["zebra"], replace=True)
        assert first.search("a zebra in the city", mode="dense", k=1)[0].text == (
            "a zebra in the city"
        )
        assert [hit.id for hit in first.search("savanna", mode="keyword")] == []
        assert second.delete(["zebra", "d0"]) == 2
        assert len(first) == 19
        assert "zebra" not in {hit.id for hit in first.search("zebra city", k=19)}
        first.add(["d0 again"], ids=["d0"])
        assert {hit.id for hit in second.search("d0 again", k=20)} == {f"d{i}" for i in range(20)}


# --------------------------------------------------------------------------- interrupted add


def snapshot(index: Index) -> tuple[object, ...]:
    queries = ["river music", "zebra", "the"]
    searches = [
        [(hit.id, hit.score, hit.text) for hit in index.search(query, mode=mode, k=50)]  # type: ignore[arg-type]
        for query in queries
        for mode in MODES
    ]
    return len(index), list(index.documents()), searches


class Interrupt:
    """A ``progress`` callback that raises KeyboardInterrupt at its ``at``-th call."""

    def __init__(self, at: int) -> None:
        self.at, self.calls = at, 0

    def __call__(self, done: int) -> None:
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("new", "replace", "at"),
    [
        (10, False, 1),  # after the only batch is written
        (store.ADD_BATCH + 10, False, 1),  # after the first of two batches
        (store.ADD_BATCH + 10, False, 2),  # after both, before the commit
        (10, True, 1),  # texts of existing ids replaced, then interrupted
    ],
)
def test_an_interrupted_add_leaves_the_index_as_it_was(
    tmp_path: Path, encoder: Encoder, new: int, replace: bool, at: int
) -> None:
    path = small_index(tmp_path / "interrupted.db", encoder)
    rng = random.Random(17)
    texts = [f"zebra {text}" for text in filler(rng, new)]
    ids = [f"d{i}" for i in range(new)] if replace else [f"n{i}" for i in range(new)]
    with Index(path, encoder=encoder) as index:
        before = snapshot(index)
        interrupt = Interrupt(at)
        with pytest.raises(KeyboardInterrupt):
            index.add(texts, ids=ids, replace=replace, progress=interrupt)
        assert interrupt.calls == at
        assert snapshot(index) == before
        with Index(path, encoder=encoder) as other:  # the file too
            assert snapshot(other) == before
        # Still usable: the same add now goes through in full.
        result = index.add(texts, ids=ids, replace=replace)
        assert (result.added, result.replaced) == ((0, new) if replace else (new, 0))
        assert len(index) == 20 + (0 if replace else new)
        assert index.search(texts[0], mode="dense", k=1)[0].id == ids[0]
    check_integrity(path)


def test_an_interrupt_in_the_encoder_rolls_back(
    tmp_path: Path, encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = small_index(tmp_path / "interrupted.db", encoder)
    texts = filler(random.Random(19), store.ADD_BATCH + 5)
    ids = [f"n{i}" for i in range(len(texts))]
    with Index(path, encoder=encoder) as index:
        before = snapshot(index)
        encode = encoder.encode
        calls: list[int] = []

        def interrupted(batch: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(batch, list) and len(batch) < store.ADD_BATCH and calls:
                raise KeyboardInterrupt  # the second batch, after the first was written
            if isinstance(batch, list) and len(batch) == store.ADD_BATCH:
                calls.append(len(batch))
            return encode(batch, *args, **kwargs)

        with monkeypatch.context() as patch:
            patch.setattr(encoder, "encode", interrupted)
            with pytest.raises(KeyboardInterrupt):
                index.add(texts, ids=ids)
        assert calls == [store.ADD_BATCH]
        assert snapshot(index) == before
        assert index.add(texts, ids=ids).added == len(texts)
        assert len(index) == 20 + len(texts)
        np.testing.assert_equal(len(list(index.documents())), 20 + len(texts))


def test_a_commit_by_another_writer_just_after_ours_is_seen(
    tmp_path: Path, encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another connection commits between this one's commit and its bookkeeping: this one
    must still notice (else it would search without that writer's documents, and a merge of
    its postings would drop theirs as gone)."""
    path = tmp_path / "two.db"
    with Index(path, encoder=encoder) as first, Index(path, encoder=encoder) as second:
        first.add(["a first text"], ids=["f1"])
        forget = first._keyword.forget
        pending = [lambda: second.add(["a zebra from the other writer"], ids=["s1"])]

        def other_writer_commits() -> None:
            forget()
            while pending:
                pending.pop()()

        monkeypatch.setattr(first._keyword, "forget", other_writer_commits)
        first.add(["a second text"], ids=["f2"])
        assert [hit.id for hit in first.search("zebra", mode="keyword")] == ["s1"]
        assert len(first) == 3
        assert first.search("zebra", k=1)[0].id == "s1"
