"""sse_onnx.Index: the API, filters, ids, given embeddings, model identity, and exact scores.

Every expected score is computed here, independently: BM25 restated from FTS5's definition of
``bm25()`` (https://sqlite.org/fts5.html, section "The bm25() function"; only FTS5's tokenizer is
borrowed, from a scratch in-memory table fed the texts the index should hold), cosines from
``Encoder().encode`` in float64, and the z-score fusion from its formula. The robustness of the
index (hostile queries, damaged files, crashes, concurrency) is tested elsewhere.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from sse_onnx import DuplicateIdError, Encoder, Hit, Index, ModelMismatchError
from sse_onnx.index import AddResult
from sse_onnx.index.fusion import fuse, standardize, top_k
from sse_onnx.index.vectors import Vectors, dequantize, quantize_rows

F64 = npt.NDArray[np.float64]

#: Short English sentences: repeated words, lengths from 1 to 12 words, and words whose Porter
#: stems collide (connect/connected/connection/connecting, run/runs/running, snow/snows).
CORPUS = [
    "the cat sat on the mat",
    "a dog chased the cat across the garden",
    "connect the printer to the network",
    "the printer connected to the network after a restart",
    "a stable network connection matters for video calls",
    "connections between servers are encrypted",
    "she is connecting the database to the web server",
    "the database stores every order and every invoice",
    "databases need backups",
    "backups of the database run every night at midnight",
    "running shoes for long distance runners",
    "he runs every morning before work",
    "the river runs through the old town",
    "cats sleep most of the day",
    "dogs and cats can live together in a small flat",
    "the garden has roses tulips and a small pond",
    "water the roses in the garden every evening",
    "a recipe for tomato soup with fresh basil",
    "tomato tomato tomato sauce",
    "fresh bread from the bakery on the corner",
    "the bakery opens early and the bread sells out",
    "learning to play the piano takes years of practice",
    "piano lessons for children",
    "the train to the city leaves every hour",
    "trains are late when it snows",
    "snow",
    "the old town hall hosts a market every saturday",
    "the market sells fresh fish fresh bread and fresh cheese",
    "network network network security",
    "an encrypted connection protects passwords sent over the network",
]
IDS = [f"d{i:02d}" for i in range(len(CORPUS))]
TOPICS = ["pets", "tech", "tech", "tech", "tech", "tech", "tech", "tech", "tech", "tech"]
TOPICS += ["sport", "sport", "places", "pets", "pets", "garden", "garden", "food", "food", "food"]
TOPICS += ["food", "music", "music", "travel", "travel", "travel", "places", "food", "tech", "tech"]
METADATA: list[dict[str, Any]] = [
    {"topic": topic, "year": 2020 + i % 4, "rating": [0.5, 1.5][i % 2], "even": i % 2 == 0}
    for i, topic in enumerate(TOPICS)
]
#: Queries of one word, of words sharing a stem, of a word in most documents (its IDF is
#: clamped), of no known word, and of a mix.
QUERIES = [
    "connection",
    "Connect connecting CONNECTION",
    "connected database networks",
    "the cat",
    "running dogs and cats in the garden",
    "fresh tomato bread",
    "quantum chromodynamics",
    "snow trains",
]
K1, B = 1.2, 0.75


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder()


def build(
    path: Path,
    encoder: Encoder,
    texts: Sequence[str] = CORPUS,
    ids: Sequence[str] = IDS,
    metadata: Sequence[Mapping[str, Any] | None] | None = None,
) -> Index:
    index = Index(path, encoder=encoder)
    index.add(texts, ids=ids, metadata=metadata)
    return index


@pytest.fixture
def index(tmp_path: Path, encoder: Encoder) -> Iterator[Index]:
    with build(tmp_path / "corpus.db", encoder, metadata=METADATA) as index:
        yield index


class Counter:
    """Wraps ``encoder.encode`` and records the texts of each call."""

    def __init__(self, encode: Callable[..., Any]) -> None:
        self.encode = encode
        self.calls: list[list[str]] = []

    def __call__(self, texts: Any, **options: Any) -> Any:
        self.calls.append([texts] if isinstance(texts, str) else list(texts))
        return self.encode(texts, **options)


@pytest.fixture
def counter(index: Index, monkeypatch: pytest.MonkeyPatch) -> Counter:
    counting = Counter(index.encoder.encode)
    monkeypatch.setattr(index.encoder, "encode", counting)
    return counting


def ids_of(hits: Sequence[Hit]) -> list[str]:
    return [hit.id for hit in hits]


def scores_of(hits: Sequence[Hit]) -> F64:
    return np.array([hit.score for hit in hits], np.float64)


# ---------------------------------------------------------------- independent references


def fts5_tokens(texts: Sequence[str]) -> list[list[str]]:
    """Each text's terms as FTS5's ``porter unicode61`` tokenizer reads them (a scratch table)."""
    scratch = sqlite3.connect(":memory:")
    try:
        scratch.execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize='porter unicode61')")
        scratch.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, instance)")
        scratch.executemany("INSERT INTO t (rowid, x) VALUES (?, ?)", enumerate(texts, 1))
        tokens: list[list[str]] = [[] for _ in texts]
        for doc, term in scratch.execute("SELECT doc, term FROM v ORDER BY doc, offset"):
            tokens[doc - 1].append(term)
        return tokens
    finally:
        scratch.close()


def reference_bm25(texts: Sequence[str], query: str) -> F64:
    """FTS5's ``-bm25()`` of every text for ``query`` (0 where no query term occurs).

    FTS5: ``sum over phrases of IDF * f * (k1 + 1) / (f + k1 * (1 - b + b * |D| / avgdl))``,
    ``IDF = log((N - n + 0.5) / (n + 0.5))``, set to 1e-6 where it is <= 0. The index asks each
    distinct term of a query once (sse_onnx/index/keyword.py), so terms are counted once.
    """
    docs = fts5_tokens(texts)
    terms = dict.fromkeys(t for word in fts5_tokens([query]) for t in word)
    n_docs = len(docs)
    lengths = np.array([len(tokens) for tokens in docs], np.float64)
    avgdl = lengths.sum() / n_docs
    scores = np.zeros(n_docs)
    for term in terms:
        freq = np.array([tokens.count(term) for tokens in docs], np.float64)
        held = int((freq > 0).sum())
        idf = np.log((n_docs - held + 0.5) / (held + 0.5))
        idf = 1e-6 if idf <= 0 else idf
        scores += idf * freq * (K1 + 1) / (freq + K1 * (1 - B + B * lengths / avgdl))
    return scores


def int8_rows(rows: npt.NDArray[np.float32]) -> tuple[F64, F64]:
    """Rows as the index stores them (vectors.py): ``round(v / s)`` with ``s = max|v| / 127``."""
    rows = np.atleast_2d(np.asarray(rows, np.float32))
    scales = (np.abs(rows).max(axis=1) / np.float32(127)).astype(np.float32)
    safe = np.where(scales > 0, scales, np.float32(1))
    q = np.round(rows / safe[:, None])
    return q.astype(np.float64), scales.astype(np.float64)


def reference_cosines(docs: npt.NDArray[np.float32], query: npt.NDArray[np.float32]) -> F64:
    """Cosines of the stored (int8) rows with the stored query, in float64."""
    dq, ds = int8_rows(docs)
    qq, qs = int8_rows(query)
    out: F64 = (dq @ qq[0]) * ds * qs[0]
    return out


def int8_error_bound(docs: npt.NDArray[np.float32], query: npt.NDArray[np.float32]) -> F64:
    """``|cos(v, w) - cos(v', w')| <= |v - v'| |w| + |v'| |w - w'|`` for the int8 rows v', w'."""
    v, w = docs.astype(np.float64), query.astype(np.float64)
    dq, ds = int8_rows(docs)
    qq, qs = int8_rows(query)
    v_, w_ = dq * ds[:, None], qq[0] * qs[0]
    norm = np.linalg.norm
    bound: F64 = norm(v - v_, axis=1) * norm(w) + norm(v_, axis=1) * norm(w - w_)
    return bound


def z(values: F64) -> F64:
    std = values.std()
    if std <= 1e-12:
        return np.zeros_like(values)
    out: F64 = (values - values.mean()) / std
    return out


def check_ranking(
    hits: Sequence[Hit], expected: Mapping[str, float], k: int, tol: float, context: str = ""
) -> None:
    """``hits`` are the ``k`` best of ``expected`` (id -> score), best first, scores within tol.

    Ids whose expected scores are within ``tol`` of each other may come in either order.
    """
    order = sorted(expected, key=lambda id_: -expected[id_])
    assert len(hits) == min(k, len(order)), context
    assert len(set(ids_of(hits))) == len(hits), context
    for rank, hit in enumerate(hits):
        assert hit.score == pytest.approx(expected[hit.id], abs=tol), f"{context} {hit.id}"
        wanted = expected[order[rank]]
        tied = {id_ for id_ in order if abs(expected[id_] - wanted) <= tol}
        assert hit.id in tied, f"{context} rank {rank}: {hit.id}, expected {order[rank]}"


# ---------------------------------------------------------------- the API


def test_add_search_hits(index: Index) -> None:
    assert len(index) == len(CORPUS)
    hits = index.search("a printer on the network", k=3)
    assert isinstance(hits, list) and len(hits) == 3
    assert all(isinstance(hit, Hit) for hit in hits)
    assert hits[0].id in {"d02", "d03"}
    for hit in hits:
        position = IDS.index(hit.id)
        assert hit.text == CORPUS[position]
        assert hit.metadata == METADATA[position]
        assert isinstance(hit.score, float)
    assert list(scores_of(hits)) == sorted(scores_of(hits), reverse=True)


def test_add_returns_what_it_did(tmp_path: Path, encoder: Encoder) -> None:
    with Index(tmp_path / "x.db", encoder=encoder) as index:
        assert index.add(["a", "b"], ids=["1", "2"]) == AddResult(added=2, replaced=0, unchanged=0)
        result = index.add(["a", "B", "c"], ids=["1", "2", "3"], replace=True)
        assert result == AddResult(added=1, replaced=1, unchanged=1)
        assert len(index) == 3


@pytest.mark.parametrize("mode", ["hybrid", "dense", "keyword"])
@pytest.mark.parametrize("k", [1, 5, 10, 100])
def test_at_most_k_best_first(index: Index, mode: Any, k: int) -> None:
    hits = index.search("the network connection of the database", k=k, mode=mode)
    assert len(hits) <= k
    if mode != "keyword":
        assert len(hits) == min(k, len(CORPUS))
    assert list(scores_of(hits)) == sorted(scores_of(hits), reverse=True)
    longer = index.search("the network connection of the database", k=k + 5, mode=mode)
    assert ids_of(longer[: len(hits)]) == ids_of(hits)


@pytest.mark.parametrize("mode", ["hybrid", "dense", "keyword"])
def test_many_queries_equal_one_at_a_time(index: Index, mode: Any) -> None:
    many = index.search(QUERIES, k=7, mode=mode)
    assert isinstance(many, list) and len(many) == len(QUERIES)
    for query, hits in zip(QUERIES, many, strict=True):
        alone = index.search(query, k=7, mode=mode)
        assert ids_of(hits) == ids_of(alone)
        np.testing.assert_allclose(scores_of(hits), scores_of(alone), rtol=1e-6, atol=1e-6)
    assert index.search((), mode=mode) == []


def test_keyword_mode_returns_only_documents_holding_a_query_word(index: Index) -> None:
    stems = fts5_tokens(CORPUS)
    for query in QUERIES:
        wanted = {t for word in fts5_tokens([query]) for t in word}
        holding = {IDS[i] for i, tokens in enumerate(stems) if wanted & set(tokens)}
        assert set(ids_of(index.search(query, k=100, mode="keyword"))) == holding
    assert index.search("quantum chromodynamics", mode="keyword") == []
    # Stemming: "connections" finds "connect", "connected", "connecting" and "connection".
    found = set(ids_of(index.search("connections", k=100, mode="keyword")))
    assert found == {"d02", "d03", "d04", "d05", "d06", "d29"}


def test_unknown_mode_names_the_valid_ones(index: Index) -> None:
    with pytest.raises(ValueError, match=r"hybrid.*dense.*keyword"):
        index.search("cat", mode="sparse")  # type: ignore[call-overload]


@pytest.mark.parametrize("alpha", [-0.01, 1.01, float("nan"), True, "0.5"])
def test_alpha_out_of_range(index: Index, alpha: Any) -> None:
    with pytest.raises(ValueError, match="alpha"):
        index.search("cat", alpha=alpha)


def test_alpha_one_is_the_dense_ranking(index: Index) -> None:
    query = "fresh bread at the market"
    dense = index.search(query, k=100, mode="dense")
    fused = index.search(query, k=100, alpha=1.0)
    assert ids_of(fused) == ids_of(dense)
    np.testing.assert_allclose(scores_of(fused), z(scores_of(dense)), atol=1e-5)


def test_alpha_zero_is_the_standardised_keyword_ranking(index: Index) -> None:
    query = "fresh bread at the market"
    keyword = index.search(query, k=100, mode="keyword")
    fused = index.search(query, k=100, alpha=0.0)
    matched = len(keyword)
    assert 0 < matched < len(CORPUS)
    assert ids_of(fused[:matched]) == ids_of(keyword)
    # Unmatched documents all score 0, and tie: they follow in the order they were added.
    rest = [id_ for id_ in IDS if id_ not in set(ids_of(keyword))]
    assert ids_of(fused[matched:]) == rest
    everything = np.zeros(len(CORPUS))
    everything[:matched] = scores_of(keyword)
    np.testing.assert_allclose(scores_of(fused), z(everything), atol=1e-5)


def test_delete(index: Index) -> None:
    with pytest.raises(KeyError, match=r"'nope'.*nothing was deleted"):
        index.delete(["d05", "nope"])
    assert len(index) == len(CORPUS)
    assert "d05" in ids_of(index.search("between", mode="keyword"))
    assert index.delete(["d05", "nope", "d05"], missing_ok=True) == 1
    assert len(index) == len(CORPUS) - 1
    assert index.search("between", mode="keyword") == []
    for mode in ("hybrid", "dense"):
        assert "d05" not in ids_of(index.search("between", k=100, mode=mode))
    assert index.delete([]) == 0
    # The id is free again.
    assert index.add(["between again"], ids=["d05"]).added == 1
    assert ids_of(index.search("between", mode="keyword")) == ["d05"]


def test_reopened_file_gives_the_same_results(tmp_path: Path, encoder: Encoder) -> None:
    path = tmp_path / "kept.db"
    with build(path, encoder, metadata=METADATA) as index:
        index.delete(["d07"])
        index.add(["tomato tomato soup"], ids=["d17"], metadata=[{"x": 1}], replace=True)
        before = {
            mode: index.search(QUERIES, k=8, mode=mode) for mode in ("hybrid", "dense", "keyword")
        }
        filtered = index.search("network", where={"topic": "tech"}, k=8)
    for readonly in (False, True):
        with Index(path, encoder=encoder, readonly=readonly) as again:
            assert len(again) == len(CORPUS) - 1
            for mode, results in before.items():
                assert again.search(QUERIES, k=8, mode=mode) == results  # type: ignore[call-overload]
            assert again.search("network", where={"topic": "tech"}, k=8) == filtered
            assert again.search("soup", k=1, mode="keyword")[0].metadata == {"x": 1}


# ---------------------------------------------------------------- where= filters


def test_where_matches_exactly(tmp_path: Path, encoder: Encoder) -> None:
    metadata: list[dict[str, Any] | None] = [
        {"flag": True},
        {"flag": 1},
        {"flag": False},
        {"flag": 0},
        {"flag": None},
        {"other": 1},
        None,
        {"flag": "1"},
        {"flag": 0.5},
        {"flag": 1, "tag": "x"},
        {"flag": "true"},
        {"flag": [1]},
    ]
    ids = [f"m{i}" for i in range(len(metadata))]
    texts = [f"document number {i}" for i in range(len(metadata))]
    with build(tmp_path / "m.db", encoder, texts, ids, metadata) as index:

        def found(where: dict[str, Any], mode: Any = "dense") -> set[str]:
            return set(ids_of(index.search("document", k=100, mode=mode, where=where)))

        assert found({"flag": True}) == {"m0"}
        assert found({"flag": 1}) == {"m1", "m9"}
        assert found({"flag": False}) == {"m2"}
        assert found({"flag": 0}) == {"m3"}
        assert found({"flag": None}) == {"m4"}
        assert found({"flag": "1"}) == {"m7"}
        assert found({"flag": 0.5}) == {"m8"}
        assert found({"flag": "true"}) == {"m10"}
        assert found({"flag": 1, "tag": "x"}) == {"m9"}
        assert found({"missing": 1}) == set()
        assert found({}) == set(ids)
        for mode in ("hybrid", "keyword"):
            assert found({"flag": True}, mode) == {"m0"}
            assert found({"flag": 1}, mode) == {"m1", "m9"}


@pytest.mark.parametrize("value", [[1], {"a": 1}, (1,), b"x", object()])
def test_where_refuses_other_types(index: Index, value: object) -> None:
    with pytest.raises(TypeError, match="filters match a str, int, float, bool or None"):
        index.search("cat", where={"topic": value})


def test_where_is_applied_before_the_k_best(index: Index) -> None:
    """A filter is not a cut of the unfiltered top k: k hits come back if k documents pass."""
    for mode in ("hybrid", "dense"):
        hits = index.search("network", k=5, mode=mode, where={"topic": "food"})
        assert len(hits) == 5 and {(hit.metadata or {}).get("topic") for hit in hits} == {"food"}
    # In keyword mode, the filtered hits are the unfiltered ones that pass, in the same order.
    unfiltered = index.search("fresh the", k=100, mode="keyword")
    filtered = index.search("fresh the", k=100, mode="keyword", where={"topic": "food"})
    passing = [hit for hit in unfiltered if hit.metadata and hit.metadata["topic"] == "food"]
    assert filtered == passing


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_where_standardises_over_the_documents_that_pass(index: Index, alpha: float) -> None:
    """Hybrid with a filter: both parts standardised over the passing documents only."""
    where = {"even": True}
    passing = [id_ for id_, meta in zip(IDS, METADATA, strict=True) if meta["even"]]
    for query in QUERIES:
        dense = {h.id: h.score for h in index.search(query, k=100, mode="dense")}
        keyword = {h.id: h.score for h in index.search(query, k=100, mode="keyword")}
        d = np.array([dense[id_] for id_ in passing])
        kw = np.array([keyword.get(id_, 0.0) for id_ in passing])
        expected = dict(zip(passing, alpha * z(d) + (1 - alpha) * z(kw), strict=True))
        hits = index.search(query, k=100, alpha=alpha, where=where)
        check_ranking(hits, expected, 100, tol=1e-4, context=repr(query))


@pytest.mark.parametrize(
    "where", [{"topic": "tech"}, {"year": 2021}, {"rating": 1.5}, {"even": False}]
)
def test_where_dense_equals_an_index_of_only_the_passing_documents(
    tmp_path: Path, encoder: Encoder, where: dict[str, Any]
) -> None:
    """Cosines do not depend on the other documents: a filtered dense search is the search of
    an index that holds only the documents that pass."""
    ((key, value),) = where.items()
    keep = [i for i, meta in enumerate(METADATA) if meta[key] == value]
    assert 0 < len(keep) < len(CORPUS)
    with (
        build(tmp_path / "all.db", encoder, metadata=METADATA) as everything,
        build(
            tmp_path / "some.db",
            encoder,
            [CORPUS[i] for i in keep],
            [IDS[i] for i in keep],
            [METADATA[i] for i in keep],
        ) as some,
    ):
        for query in QUERIES:
            filtered = everything.search(query, k=100, mode="dense", where=where)
            alone = some.search(query, k=100, mode="dense")
            expected = {hit.id: hit.score for hit in alone}
            check_ranking(filtered, expected, 100, tol=1e-4, context=repr(query))


@pytest.mark.parametrize(
    "where", [{"topic": "tech"}, {"year": 2021}, {"rating": 1.5}, {"even": False}]
)
def test_where_keyword_keeps_the_collections_bm25(
    tmp_path: Path, encoder: Encoder, where: dict[str, Any]
) -> None:
    """A filter chooses documents, not statistics: BM25's idf and average length stay the
    whole collection's (as a Lucene filter does), so a filtered keyword search is the
    unfiltered one restricted to the documents that pass, with the same scores."""
    ((key, value),) = where.items()
    passing = {IDS[i] for i, meta in enumerate(METADATA) if meta[key] == value}
    with build(tmp_path / "all.db", encoder, metadata=METADATA) as index:
        for query in QUERIES:
            filtered = index.search(query, k=100, mode="keyword", where=where)
            unfiltered = index.search(query, k=100, mode="keyword")
            expected = {hit.id: hit.score for hit in unfiltered if hit.id in passing}
            check_ranking(filtered, expected, 100, tol=1e-6, context=repr(query))


# ---------------------------------------------------------------- ids


def test_ids_repeated_in_one_call(index: Index, counter: Counter) -> None:
    with pytest.raises(DuplicateIdError, match=r"'x'.*own id"):
        index.add(["one", "two", "three"], ids=["x", "y", "x"])
    assert len(index) == len(CORPUS)
    assert counter.calls == []


def test_same_text_and_metadata_again_is_unchanged_and_not_encoded(
    index: Index, counter: Counter
) -> None:
    result = index.add([CORPUS[3]], ids=[IDS[3]], metadata=[METADATA[3]])
    assert result == AddResult(added=0, replaced=0, unchanged=1)
    assert counter.calls == []
    # With a new id in the same call, only the new text is encoded.
    result = index.add(
        [CORPUS[4], "a brand new text"], ids=[IDS[4], "new"], metadata=[METADATA[4], None]
    )
    assert result == AddResult(added=1, replaced=0, unchanged=1)
    assert counter.calls == [["a brand new text"]]
    assert len(index) == len(CORPUS) + 1


def test_changed_text_without_replace_writes_nothing(index: Index, counter: Counter) -> None:
    before = index.search(QUERIES, k=30)
    with pytest.raises(DuplicateIdError, match=r"'d03'.*replace=True"):
        index.add(["zebras graze", "another new text"], ids=["d03", "fresh-id"])
    with pytest.raises(DuplicateIdError, match=r"'d03'.*replace=True"):
        index.add([CORPUS[3]], ids=["d03"], metadata=[{"topic": "other"}])
    assert len(index) == len(CORPUS)
    assert index.search(QUERIES, k=30) == before
    assert index.search("zebras another", mode="keyword") == []


def test_replace_updates_a_changed_text(index: Index, counter: Counter) -> None:
    new_text = "zebras graze on the savanna"
    result = index.add([new_text], ids=["d03"], metadata=[{"topic": "wild"}], replace=True)
    assert result == AddResult(added=0, replaced=1, unchanged=0)
    assert counter.calls == [[new_text]]
    assert len(index) == len(CORPUS)
    (hit,) = index.search("zebras", mode="keyword")
    assert (hit.id, hit.text, hit.metadata) == ("d03", new_text, {"topic": "wild"})
    # The old words are gone from the keyword index (FTS5 deleted the old text's entry)...
    assert "d03" not in ids_of(index.search("printer restart", k=100, mode="keyword"))
    assert ids_of(index.search("restart", mode="keyword")) == []
    # ... and the vector is the new text's.
    (top,) = index.search(new_text, k=1, mode="dense")
    assert top.id == "d03" and top.score > 0.99
    old = {h.id: h.score for h in index.search(CORPUS[3], k=100, mode="dense")}
    assert old["d03"] < 0.9
    # BM25 statistics follow: the keyword scores equal the reference of the new texts.
    texts = [new_text if id_ == "d03" else text for id_, text in zip(IDS, CORPUS, strict=True)]
    for query in ("the network", "zebras on the printer"):
        expected = reference_bm25(texts, query)
        hits = index.search(query, k=100, mode="keyword")
        check_ranking(hits, {IDS[i]: s for i, s in enumerate(expected) if s > 0}, 100, tol=1e-5)


def test_metadata_only_change_is_not_encoded(index: Index, counter: Counter) -> None:
    result = index.add([CORPUS[8]], ids=["d08"], metadata=[{"topic": "moved"}], replace=True)
    assert result == AddResult(added=0, replaced=1, unchanged=0)
    assert counter.calls == []
    (hit,) = index.search("anything", where={"topic": "moved"})
    assert (hit.id, hit.text, hit.metadata) == ("d08", CORPUS[8], {"topic": "moved"})
    assert "d08" in ids_of(index.search("backups", mode="keyword"))
    assert index.add([CORPUS[8]], ids=["d08"], replace=True).replaced == 1  # metadata -> None
    assert index.search("backups", where={"topic": "moved"}) == []


# ---------------------------------------------------------------- given embeddings


def test_given_embeddings_are_stored_instead_of_encoding(
    tmp_path: Path, encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    embeddings = encoder.encode(CORPUS)
    with (
        build(tmp_path / "encoded.db", encoder) as encoded,
        Index(tmp_path / "given.db", encoder=encoder) as given,
    ):
        counting = Counter(encoder.encode)
        monkeypatch.setattr(encoder, "encode", counting)
        # Not unit length: the index normalises them, as encode() would.
        assert given.add(CORPUS, ids=IDS, embeddings=3.0 * embeddings).added == len(CORPUS)
        assert counting.calls == []
        for mode in ("hybrid", "dense", "keyword"):
            a = encoded.search(QUERIES, k=30, mode=mode)
            b = given.search(QUERIES, k=30, mode=mode)
            for x, y in zip(a, b, strict=True):
                check_ranking(y, {hit.id: hit.score for hit in x}, 30, tol=1e-4)


def test_given_embeddings_follow_their_ids(tmp_path: Path, encoder: Encoder) -> None:
    """Rows of a call that mixes new, unchanged and replaced ids land on their own ids."""
    with build(tmp_path / "x.db", encoder, CORPUS[:5], IDS[:5]) as index:
        texts = [CORPUS[0], "snow on the mountains", CORPUS[2], "the tomato harvest", CORPUS[4]]
        ids = [IDS[0], IDS[1], IDS[2], "new1", IDS[4]]
        vectors = encoder.encode(texts)
        result = index.add(texts, ids=ids, embeddings=vectors, replace=True)
        assert result == AddResult(added=1, replaced=1, unchanged=3)
        for text, id_ in zip(texts, ids, strict=True):
            (top,) = index.search(text, k=1, mode="dense")
            assert top.id == id_ and top.score > 0.99


@pytest.mark.parametrize("shape", [(len(CORPUS), 255), (len(CORPUS) - 1, 256), (len(CORPUS),)])
def test_given_embeddings_of_the_wrong_shape(
    tmp_path: Path, encoder: Encoder, shape: tuple[int, ...]
) -> None:
    with Index(tmp_path / "x.db", encoder=encoder) as index:
        with pytest.raises(ValueError, match=r"embeddings has shape .*expected \(30, 256\)"):
            index.add(CORPUS, ids=IDS, embeddings=np.ones(shape, np.float32))
        assert len(index) == 0


# ---------------------------------------------------------------- model identity


@pytest.fixture(scope="module")
def other_encoder(tiny_checkpoint: Path, exported: Callable[..., Path]) -> Encoder:
    return Encoder(exported(tiny_checkpoint))


def test_another_model_is_refused_then_reembedded(
    tmp_path: Path, encoder: Encoder, other_encoder: Encoder
) -> None:
    texts = ["the cat sat on the mat", "the dog", "static embeddings are fast", "hello world"]
    ids = ["a", "b", "c", "d"]
    path = tmp_path / "x.db"
    build(path, encoder, texts, ids).close()
    names = (encoder.manifest.model_name, other_encoder.manifest.model_name)
    assert names[0] != names[1]
    pattern = f"{re.escape(names[0])}.*{re.escape(names[1])}.*reembed"
    with pytest.raises(ModelMismatchError, match=pattern):
        Index(path, encoder=other_encoder)
    with pytest.raises(ModelMismatchError, match=pattern):
        Index(path, encoder=other_encoder, readonly=True, reembed=True)
    with Index(path, encoder=encoder) as same:  # the file is as it was
        assert same.search("cat", k=1)[0].id == "a"
    with Index(path, encoder=other_encoder, reembed=True) as index:
        assert len(index) == 4
        hits = index.search("the cat", k=4, mode="dense")
        embedded = other_encoder.encode(texts)
        query = other_encoder.encode(["the cat"])[0]
        expected = dict(zip(ids, reference_cosines(embedded, query), strict=True))
        check_ranking(hits, expected, 4, tol=1e-5)
    with pytest.raises(ModelMismatchError, match=re.escape(names[1])):
        Index(path, encoder=encoder)
    with Index(path, encoder=other_encoder) as again:
        assert again.search("the cat", k=4, mode="dense") == hits


# ---------------------------------------------------------------- exact scores


def edited_build(path: Path, encoder: Encoder) -> Index:
    """The corpus, reached through replaced texts and deleted documents (FTS5 deletes and
    its length statistics must follow)."""
    half = len(CORPUS) // 2
    wrong = [f"zebra stripes {text} zebra" for text in CORPUS[:5]]
    extras = ["extra network network connection", "extra tomato", "extra snow snow snow"]
    index = Index(path, encoder=encoder)
    index.add(wrong + CORPUS[5:half], ids=IDS[:half])
    index.add(extras, ids=["x1", "x2", "x3"])
    index.add(CORPUS[half:], ids=IDS[half:])
    index.add(CORPUS[:5], ids=IDS[:5], replace=True)
    index.delete(["x1", "x2", "x3"])
    return index


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, encoder: Encoder) -> Iterator[dict[str, Index]]:
    folder = tmp_path_factory.mktemp("exact")
    indexes = {
        "fresh": build(folder / "fresh.db", encoder),
        "edited": edited_build(folder / "edited.db", encoder),
    }
    yield indexes
    for index in indexes.values():
        index.close()


def test_the_reference_tokenizer_stems_as_assumed() -> None:
    words = fts5_tokens(["connect connected connection connecting Connections", "The THE the"])
    assert words == [["connect"] * 5, ["the"] * 3]
    # "the" is in more than half the documents: its IDF is clamped to 1e-6.
    assert sum("the" in tokens for tokens in fts5_tokens(CORPUS)) > len(CORPUS) / 2


@pytest.mark.parametrize("build_kind", ["fresh", "edited"])
@pytest.mark.parametrize("query", [*QUERIES, "zebra stripes"])
def test_exact_scores(
    built: dict[str, Index], encoder: Encoder, build_kind: str, query: str
) -> None:
    index = built[build_kind]
    assert len(index) == len(CORPUS)
    bm25 = reference_bm25(CORPUS, query)
    embedded = encoder.encode(CORPUS)
    query_vector = encoder.encode([query])[0]
    cosines = reference_cosines(embedded, query_vector)

    # keyword: FTS5's BM25, only documents holding a term.
    hits = index.search(query, k=100, mode="keyword")
    matched = {IDS[i]: float(s) for i, s in enumerate(bm25) if s > 0}
    check_ranking(hits, matched, 100, tol=1e-5)
    if matched:
        check_ranking(index.search(query, k=3, mode="keyword"), matched, 3, tol=1e-5)

    # dense: the int8 cosines, within the int8 error bound of the float cosines.
    hits = index.search(query, k=100, mode="dense")
    check_ranking(hits, dict(zip(IDS, cosines, strict=True)), 100, tol=1e-5)
    true_cosines = embedded.astype(np.float64) @ query_vector.astype(np.float64)
    bound = int8_error_bound(embedded, query_vector)
    assert (bound < 2e-2).all()  # the int8 rows are close to the float ones
    got = dict(zip(ids_of(hits), scores_of(hits), strict=True))
    assert all(abs(got[id_] - true_cosines[i]) <= bound[i] + 1e-6 for i, id_ in enumerate(IDS))

    # hybrid: alpha * z(cosine) + (1 - alpha) * z(bm25) over all documents.
    for alpha in (None, 0.0, 0.25, 0.5, 0.8, 1.0):
        weight = 0.45 if alpha is None else alpha
        fused = weight * z(cosines) + (1 - weight) * z(bm25)
        expected = dict(zip(IDS, fused, strict=True))
        check_ranking(
            index.search(query, k=100, alpha=alpha),
            expected,
            100,
            tol=1e-4,
            context=f"alpha={alpha}",
        )
        check_ranking(
            index.search(query, k=5, alpha=alpha), expected, 5, tol=1e-4, context=f"alpha={alpha}"
        )


# ---------------------------------------------------------------- fusion.py


def test_standardize() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(3, 2, 50).astype(np.float32)
    np.testing.assert_allclose(standardize(x), z(x.astype(np.float64)), atol=1e-5)
    allowed = rng.random(50) < 0.4
    chosen = x[allowed].astype(np.float64)
    expected = (x - chosen.mean()) / chosen.std()
    np.testing.assert_allclose(standardize(x, allowed), expected, atol=1e-5)
    np.testing.assert_array_equal(standardize(np.full(7, 2.5, np.float32)), np.zeros(7))
    np.testing.assert_array_equal(standardize(np.zeros(0, np.float32)), np.zeros(0))
    # Constant over the allowed entries (whatever the others) gives zeros; so does none allowed.
    y = np.array([1, 5, 1, 9, 1], np.float32)
    np.testing.assert_array_equal(standardize(y, y == 1), np.zeros(5))
    np.testing.assert_array_equal(standardize(y, np.zeros(5, bool)), np.zeros(5))
    assert standardize(x).dtype == np.float32


def reference_top_k(scores: Sequence[float], k: int, allowed: Sequence[bool] | None) -> list[int]:
    positions = [i for i in range(len(scores)) if allowed is None or allowed[i]]
    return sorted(positions, key=lambda i: (-scores[i], i))[:k]


def test_top_k_small_cases() -> None:
    scores = np.array([1, 3, 3, 2, 3], np.float32)
    assert top_k(scores, 2).tolist() == [1, 2]
    assert top_k(scores, 10).tolist() == [1, 2, 4, 3, 0]
    mask = np.array([True, False, True, True, False])
    assert top_k(scores, 2, mask).tolist() == [2, 3]
    assert top_k(scores, 10, mask).tolist() == [2, 3, 0]
    assert top_k(scores, 3, np.zeros(5, bool)).tolist() == []
    assert top_k(np.zeros(0, np.float32), 3).tolist() == []


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 3, 17, 100, 1000])
def test_top_k_against_a_sort(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    scores = rng.integers(-3, 4, n).astype(np.float32)  # many ties
    allowed = rng.random(n) < 0.6
    assert top_k(scores, k).tolist() == reference_top_k(scores.tolist(), k, None)
    assert top_k(scores, k, allowed).tolist() == reference_top_k(
        scores.tolist(), k, allowed.tolist()
    )


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_fuse(alpha: float) -> None:
    rng = np.random.default_rng(1)
    dense = rng.uniform(-0.2, 0.9, 40).astype(np.float32)
    keyword = np.where(rng.random(40) < 0.3, rng.uniform(0.5, 8, 40), 0).astype(np.float32)
    d, kw = dense.astype(np.float64), keyword.astype(np.float64)
    expected = alpha * (d - d.mean()) / d.std() + (1 - alpha) * (kw - kw.mean()) / kw.std()
    np.testing.assert_allclose(fuse(dense, keyword, alpha), expected, atol=1e-5)
    allowed = rng.random(40) < 0.5
    da, ka = d[allowed], kw[allowed]
    expected = alpha * (d - da.mean()) / da.std() + (1 - alpha) * (kw - ka.mean()) / ka.std()
    np.testing.assert_allclose(fuse(dense, keyword, alpha, allowed), expected, atol=1e-5)
    # No keyword match at all: the keyword part counts 0.
    np.testing.assert_allclose(
        fuse(dense, np.zeros(40, np.float32), alpha), alpha * (d - d.mean()) / d.std(), atol=1e-5
    )


# ---------------------------------------------------------------- vectors.py


def unit_rows(rng: np.random.Generator, n: int, dim: int) -> npt.NDArray[np.float32]:
    rows = rng.normal(size=(n, dim))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    return rows.astype(np.float32)


def test_quantize_rows_error_bound() -> None:
    rng = np.random.default_rng(2)
    rows = rng.normal(0, [[0.01], [1.0], [100.0], [1e-30]], (4, 64)).astype(np.float32)
    rows = np.vstack([rows, np.zeros((1, 64), np.float32)])
    q, scales = quantize_rows(rows)
    assert q.dtype == np.int8 and scales.dtype == np.float32
    assert q.shape == rows.shape and scales.shape == (5,)
    peak = np.abs(rows).max(axis=1)
    np.testing.assert_allclose(scales, peak / 127, rtol=1e-6)
    assert (np.abs(q) <= 127).all()
    assert (np.abs(q).max(axis=1)[:4] == 127).all()
    error = np.abs(rows.astype(np.float64) - dequantize(q, scales).astype(np.float64))
    assert (error <= scales[:, None].astype(np.float64) / 2 * (1 + 1e-5)).all()
    # A zero row: scale 0, values 0, dequantized to zeros.
    assert scales[4] == 0 and (q[4] == 0).all() and (dequantize(q, scales)[4] == 0).all()
    empty_q, empty_scales = quantize_rows(np.zeros((0, 8), np.float32))
    assert empty_q.shape == (0, 8) and empty_scales.shape == (0,)


def check_cosines(vectors: Vectors, rows: Mapping[int, npt.NDArray[np.float32]]) -> None:
    """``vectors`` holds exactly ``rows`` (doc -> row), in doc order, and scores them exactly."""
    n = len(vectors)
    assert vectors.docs[:n].tolist() == sorted(rows)
    stored = np.vstack([rows[doc] for doc in sorted(rows)])
    queries = unit_rows(np.random.default_rng(n), 3, vectors.dim)
    dq, ds = int8_rows(stored)
    expected = np.stack([(dq @ row) * ds * s for row, s in zip(*int8_rows(queries), strict=True)])
    got = vectors.cosines(queries)
    assert got.shape == (3, n) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_vectors_cosines_after_append_and_remove() -> None:
    rng = np.random.default_rng(3)
    dim = 48
    vectors = Vectors(dim)
    assert vectors.cosines(unit_rows(rng, 2, dim)).shape == (2, 0)
    rows: dict[int, npt.NDArray[np.float32]] = {}

    def append(docs: list[int]) -> None:
        new = unit_rows(rng, len(docs), dim)
        lengths = np.array(docs, np.int32) % 7
        vectors.append(np.array(docs, np.int64), *quantize_rows(new), lengths)
        rows.update(zip(docs, new, strict=True))

    append(list(range(1, 1001)))
    check_cosines(vectors, rows)
    append(list(range(1001, 1101)))  # past the first allocation
    check_cosines(vectors, rows)
    gone = [1, 2, 500, 777, 1100, 5000]  # 5000 is not held
    vectors.remove(np.array(gone, np.int64))
    for doc in gone:
        rows.pop(doc, None)
    assert len(vectors) == 1100 - 5
    check_cosines(vectors, rows)
    zero = unit_rows(rng, 1, dim)
    zero[0] = 0  # a zero row scores 0
    vectors.append(np.array([2000], np.int64), *quantize_rows(zero), np.array([4], np.int32))
    rows[2000] = zero[0]
    append([2001])
    check_cosines(vectors, rows)
    n = len(vectors)
    # Each document keeps its own length through appends and removals.
    assert vectors.docs[:n].tolist() == sorted(rows)
    assert vectors.lengths[:n].tolist() == [4 if doc == 2000 else doc % 7 for doc in sorted(rows)]
    assert vectors.positions(np.array([3, 2001], np.int64)).tolist() == [0, len(vectors) - 1]


# ---------------------------------------------------------------- input checks


def test_bad_inputs(tmp_path: Path, encoder: Encoder) -> None:
    with Index(tmp_path / "x.db", encoder=encoder) as index:
        with pytest.raises(TypeError, match="texts must be a list of str, not str"):
            index.add("a text", ids=["a"])
        with pytest.raises(TypeError, match=r"texts\[1\] is int"):
            index.add(["a", 5], ids=["a", "b"])  # type: ignore[list-item]
        with pytest.raises(TypeError, match=r"ids\[1\] is int"):
            index.add(["a", "b"], ids=["a", 2])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="ids must be a list of str"):
            index.add(["a"], ids="a")
        with pytest.raises(ValueError, match="2 texts but 1 ids"):
            index.add(["a", "b"], ids=["a"])
        with pytest.raises(ValueError, match="2 texts but 1 metadata"):
            index.add(["a", "b"], ids=["a", "b"], metadata=[{}])
        with pytest.raises(ValueError, match=r"texts\[1\].*surrogate U\+D800"):
            index.add(["a", "b\ud800"], ids=["a", "b"])
        with pytest.raises(ValueError, match=r"ids\[0\].*surrogate U\+DFFF"):
            index.add(["a"], ids=["\udfff"])
        with pytest.raises(ValueError, match=r"metadata\[0\].*JSON"):
            index.add(["a"], ids=["a"], metadata=[{"x": float("nan")}])
        with pytest.raises(TypeError, match=r"metadata\[0\] is list"):
            index.add(["a"], ids=["a"], metadata=[[1]])  # type: ignore[list-item]
        assert len(index) == 0
        index.add(["a"], ids=["a"])
        with pytest.raises(ValueError, match=r"query.*surrogate"):
            index.search("cat \ud83d")
        with pytest.raises(ValueError, match=r"query\[1\].*surrogate"):
            index.search(["cat", "\ud83d"])
        with pytest.raises(TypeError, match=r"query\[1\] is int"):
            index.search(["cat", 1])  # type: ignore[list-item]
        with pytest.raises(TypeError, match="query must be a str or a list of str"):
            index.search(b"cat")  # type: ignore[arg-type]
        for k in (0, -1, 1.5, True):
            with pytest.raises(ValueError, match=re.escape(f"k={k!r} must be a positive int")):
                index.search("cat", k=k)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"ids.*surrogate"):
            index.delete(["\ud800"])
        assert len(index) == 1


# ---------------------------------------------------------------- postings: segments and merges


def test_keyword_scores_stay_exact_through_segments_merges_deletes_and_replaces(
    tmp_path: Path, encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index's own postings (sse_onnx/index/postings.py) written in small segments, merged
    level after level, with documents deleted and texts replaced in between: BM25 scores equal
    the reference of the texts held after each step, and merged segments keep no posting of a
    document that is gone."""
    from sse_onnx.index import postings, store

    monkeypatch.setattr(store, "ADD_BATCH", 2)
    monkeypatch.setattr(store, "SEGMENT_DOCUMENTS", 3)
    monkeypatch.setattr(postings, "FANOUT", 2)
    held: dict[str, str] = {}

    def check(index: Index, step: str) -> None:
        ids, texts = list(held), list(held.values())
        for query in QUERIES:
            expected = reference_bm25(texts, query)
            hits = index.search(query, k=100, mode="keyword")
            wanted = {ids[i]: s for i, s in enumerate(expected) if s > 0}
            check_ranking(hits, wanted, 100, tol=1e-5, context=f"{step}: {query!r}")

    with Index(tmp_path / "segments.db", encoder=encoder) as index:
        for start in range(0, len(CORPUS), 7):  # several adds of several segments each
            index.add(CORPUS[start : start + 7], ids=IDS[start : start + 7])
            held.update(zip(IDS[start : start + 7], CORPUS[start : start + 7], strict=True))
            check(index, f"add {start}")
        index.delete(["d01", "d12", "d28"])
        for id_ in ("d01", "d12", "d28"):
            del held[id_]
        check(index, "delete")
        index.add(["network cats", "the the the"], ids=["d02", "d13"], replace=True)
        held.update({"d02": "network cats", "d13": "the the the"})
        check(index, "replace")
        for i in range(6):  # more segments, so that earlier ones are merged again
            index.add([f"fresh snow {i}"], ids=[f"x{i}"])
            held[f"x{i}"] = f"fresh snow {i}"
        check(index, "merged")
        connection = sqlite3.connect(tmp_path / "segments.db")
        levels = dict(connection.execute("SELECT level, count(*) FROM sse_segments GROUP BY level"))
        alive = {doc for (doc,) in connection.execute("SELECT doc FROM sse_docs")}
        merged_docs = set()
        for blob, level in connection.execute(
            "SELECT p.docs, s.level FROM sse_postings p JOIN sse_segments s USING (segment)"
        ):
            if level > 0:
                merged_docs |= set(np.frombuffer(blob, "<u4").tolist())
        connection.close()
    assert max(levels) >= 2 and all(count < 2 for count in levels.values()), levels
    assert merged_docs and merged_docs <= alive


def test_an_add_whose_batch_has_no_term_is_written(
    tmp_path: Path, encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of texts without a single term (empty, punctuation) joins the add's others."""
    from sse_onnx.index import store

    monkeypatch.setattr(store, "ADD_BATCH", 2)
    texts = ["", "!!!", "hello world", "", "world"]
    with Index(tmp_path / "empty.db", encoder=encoder) as index:
        index.add(texts, ids=[f"t{i}" for i in range(len(texts))])
        hits = index.search("world", k=10, mode="keyword")
    expected = reference_bm25(texts, "world")
    check_ranking(hits, {f"t{i}": s for i, s in enumerate(expected) if s > 0}, 10, tol=1e-5)


def test_keyword_scores_equal_fts5s_own_bm25_on_hostile_texts(
    tmp_path: Path, encoder: Encoder
) -> None:
    """Texts that test the postings' counts (a word 300 and 70,000 times: uint16 and uint32),
    lengths (diacritics, CJK, emoji, digits, NUL, punctuation only, empty) and terms: every
    score equals FTS5's bm25() of the same words on the same file."""
    texts = [
        "café CAFÉ cafe naïve Zürich",
        "東京 タワー 東京",
        "emoji 🙂 text 🙂🙂 text",
        "x " * 300 + "café",
        "x " * 70_000,
        "digits 123 4.56 7,890 123",
        "nul\x00 inside\x00text",
        "!!! ??? ...",
        "",
        "a" * 5000 + " long word",
        "the connection of connected connections",
        "中" * 11000 + " cut inside a character",  # a term FTS5 cuts at 32,768 bytes
    ]
    ids = [f"h{i}" for i in range(len(texts))]
    queries = ["cafe", "x café", "東京", "text 123", "connect", "inside text", "a" * 5000]
    queries += ["中" * 11000, "中" * 11000 + " character"]
    with Index(tmp_path / "hostile.db", encoder=encoder) as index:
        index.add(texts[:1], ids=ids[:1])
        index.add(texts[1:], ids=ids[1:])  # segments merged below: one of them per add
        index.add([""] * 3, ids=["e1", "e2", "e3"])  # a batch without any term
        found = {query: index.search(query, k=100, mode="keyword") for query in queries}
    connection = sqlite3.connect(tmp_path / "hostile.db")
    for query, hits in found.items():
        words = dict.fromkeys(re.findall(r"[^\W_]+", query))
        expected = dict(
            connection.execute(
                "SELECT d.id, -bm25(sse_fts) FROM sse_fts JOIN sse_docs d ON "
                "d.doc = sse_fts.rowid WHERE sse_fts MATCH ?",
                (" OR ".join(f'"{word}"' for word in words),),
            ).fetchall()
        )
        assert expected, query
        check_ranking(hits, expected, 100, tol=1e-5 * max(expected.values()), context=query)
    connection.close()


# ---------------------------------------------------------------- word scores kept in memory


def test_keyword_scores_do_not_depend_on_what_is_kept_in_memory(
    tmp_path: Path, encoder: Encoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each word's BM25 part is kept in memory within a budget; a budget so small that words
    leave at every query gives the same hits and scores as one that keeps them all, and as
    FTS5's own bm25() of the whole query."""
    from sse_onnx.index import keyword

    with build(tmp_path / "kept.db", encoder) as index:
        roomy = [index.search(query, k=100, mode="keyword") for query in QUERIES * 2]
        monkeypatch.setattr(keyword, "CACHED_POSTINGS", 3)
        index._keyword.forget()
        tight = [index.search(query, k=100, mode="keyword") for query in QUERIES * 2]
        assert len(index._keyword._cache) <= 3
    assert tight == roomy
    connection = sqlite3.connect(tmp_path / "kept.db")
    # Words that FTS5 reads as the same term count once in the index ("Connect connecting
    # CONNECTION" is one term, three times in a plain OR query): those queries are left out.
    for query, hits in zip(QUERIES, roomy, strict=False):
        if query == "Connect connecting CONNECTION":
            continue
        words = dict.fromkeys(re.findall(r"[^\W_]+", query))
        rows = connection.execute(
            "SELECT d.id, -bm25(sse_fts) FROM sse_fts JOIN sse_docs d ON d.doc = sse_fts.rowid "
            "WHERE sse_fts MATCH ?",
            (" OR ".join(f'"{word}"' for word in words),),
        ).fetchall()
        expected = dict(rows)
        assert {hit.id for hit in hits} == set(expected)
        for hit in hits:
            assert hit.score == pytest.approx(expected[hit.id], rel=1e-5)
    connection.close()
