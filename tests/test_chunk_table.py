"""The chunk table against a plain dict of chunks: the same ids, or the text reported missing.

The expected ids come from ``str.split`` and a dict lookup per chunk, written here; the
tokenizer-level comparison with Hugging Face is in test_fast_tokenizer.py.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from sse_onnx import chunk_table
from sse_onnx.chunk_table import ChunkTable
from sse_onnx.tokenizer import PYTHON_WHITESPACE

#: Characters the table is told to leave to its caller (as the BERT tokenizer's deletions).
SPECIAL = "\x0b\x1c\x85"
ALPHABET = [*"abcdeé中😀\x00\x7f-.", "\u0301"]
#: Characters below U+0100 only: chunks of up to 16 of them are keyed (two 64-bit words).
LATIN = [*"abcdeé\x00\x7f-.ÿ"]


def packed(ids: list[int]) -> bytes:
    return np.array(ids, dtype=np.int64).tobytes()


def vocabulary(rng: np.random.Generator, count: int) -> dict[str, bytes]:
    """Distinct whitespace-free chunks of 1 to 20 characters, half of them from LATIN, each
    with 0 to 3 ids."""
    chunks: dict[str, bytes] = {}
    while len(chunks) < count:
        alphabet = LATIN if rng.random() < 0.5 else ALPHABET
        # indices, not rng.choice: numpy's strings drop a trailing "\x00"
        chunk = "".join(alphabet[i] for i in rng.integers(0, len(alphabet), rng.integers(1, 21)))
        chunks.setdefault(chunk, packed(rng.integers(0, 30522, rng.integers(0, 4)).tolist()))
    return chunks


def texts_of(rng: np.random.Generator, known: list[str], count: int) -> list[str]:
    """Texts of known chunks, unknown ones and specials, joined by assorted whitespace."""
    spaces = list(PYTHON_WHITESPACE.translate(str.maketrans("", "", SPECIAL)))
    texts = []
    for _ in range(count):
        words = []
        for _ in range(rng.integers(0, 12)):
            roll = rng.random()
            if roll < 0.9:
                words.append(known[rng.integers(len(known))])
            elif roll < 0.97:
                words.append("zz" + str(rng.integers(1000)))  # not in the table
            else:
                words.append(str(rng.choice(list(SPECIAL))))
            words.append("".join(rng.choice(spaces, rng.integers(1, 3))))
        texts.append("".join(words[: rng.integers(0, len(words) + 1)]))
    return texts


def expected(table: dict[str, bytes], text: str) -> npt.NDArray[np.int64] | None:
    """The text's ids from the dict, or None when the table must report it missing."""
    if any(char in text for char in SPECIAL):
        return None
    try:
        return np.frombuffer(b"".join(table[chunk] for chunk in text.split()), dtype=np.int64)
    except KeyError:
        return None


def check(table: ChunkTable, entries: dict[str, bytes], texts: list[str]) -> list[int]:
    """Look ``texts`` up; assert every text given has the dict's ids. Returns the missing."""
    found = table.lookup(texts)
    assert len(found.lengths) == len(texts)
    pieces = np.split(found.ids, np.cumsum(found.lengths)[:-1]) if texts else []
    missing = set(found.missing)
    for i, text in enumerate(texts):
        want = expected(entries, text)
        if i in missing:
            assert found.lengths[i] == 0
        else:
            assert want is not None, f"text {i} ({text!r}) should be missing"
            assert pieces[i].tolist() == want.tolist(), text
    unknown = {c for i in missing for c in texts[i].split() if c not in entries}
    assert unknown <= set(found.chunks) <= unknown | set(entries)
    return sorted(missing)


@pytest.mark.parametrize("group_chars", [chunk_table.GROUP_CHARS, 40])
def test_lookups_give_the_dicts_ids_or_report_the_text_missing(
    monkeypatch: pytest.MonkeyPatch, group_chars: int
) -> None:
    monkeypatch.setattr(chunk_table, "GROUP_CHARS", group_chars)  # 40: many groups per call
    rng = np.random.default_rng(7)
    entries = vocabulary(rng, 3000)
    table = ChunkTable(PYTHON_WHITESPACE, special=SPECIAL)
    known = list(entries)
    texts = texts_of(rng, known, 50)
    # an empty table reports every text that has a chunk (or a special) missing
    assert check(table, {}, texts) == [i for i, t in enumerate(texts) if expected({}, t) is None]
    items = list(entries.items())
    for start in range(0, len(items), 700):  # several adds: the columns grow
        table.add(dict(items[start : start + 700]))
        texts = texts_of(rng, known[: start + 700], 400)
        missing = check(table, dict(items[: start + 700]), texts)
        truly = [i for i, text in enumerate(texts) if expected(entries, text) is None]
        assert missing == truly  # hashes are good enough that nothing else is missing
    assert len(table) == len(entries)


def same_hashes(monkeypatch: pytest.MonkeyPatch, value: int) -> None:
    """Every chunk, keyed or not, hashed to ``value``."""

    def same_hash(*arrays: npt.NDArray[np.int64]) -> npt.NDArray[np.uint64]:
        return np.full(len(arrays[-1]), value, dtype=np.uint64)

    monkeypatch.setattr(chunk_table, "_key_hashes", same_hash)
    monkeypatch.setattr(chunk_table, "_code_hashes", same_hash)


def test_colliding_hashes_never_give_wrong_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    same_hashes(monkeypatch, 12345)
    rng = np.random.default_rng(8)
    entries = vocabulary(rng, 300)
    table = ChunkTable(PYTHON_WHITESPACE, special=SPECIAL)
    table.add(entries)
    texts = texts_of(rng, list(entries), 300)
    missing = check(table, entries, texts)  # only the first entry can be found: the rest miss
    assert len(missing) > len([t for t in texts if expected(entries, t) is None])


def test_a_colliding_prefix_or_extension_is_not_taken_for_an_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    same_hashes(monkeypatch, 7)
    table = ChunkTable(PYTHON_WHITESPACE)
    table.add({"ab": packed([1, 2])})
    table.add({"ab": packed([1, 2]), "cd": packed([3])})
    assert len(table) == 1  # "cd" has "ab"'s tag on its way: it could never be found
    found = table.lookup(["ab", "a", "abc", "ab ab", "cd", "ba"])
    assert found.missing == [1, 2, 4, 5]
    assert found.ids.tolist() == [1, 2, 1, 2, 1, 2]
    assert found.lengths.tolist() == [2, 0, 0, 4, 0, 0]


def test_adding_known_chunks_again_changes_nothing() -> None:
    entries = vocabulary(np.random.default_rng(10), 500)
    table = ChunkTable(PYTHON_WHITESPACE)
    table.add(entries)
    view = table._view
    table.add(entries)
    table.add(dict(list(entries.items())[:100]))
    assert len(table) == 500
    assert table._view is view  # nothing was published


def test_an_empty_list_is_looked_up() -> None:
    found = ChunkTable(PYTHON_WHITESPACE).lookup([])
    assert found.ids.size == 0 and found.lengths.size == 0 and found.missing == []


def test_a_lookup_keeps_the_entries_it_started_with() -> None:
    rng = np.random.default_rng(9)
    entries = vocabulary(rng, 2000)
    items = list(entries.items())
    table = ChunkTable(PYTHON_WHITESPACE, special=SPECIAL)
    table.add(dict(items[:10]))
    before = table._view  # what a lookup under way reads while another thread adds
    table.add(dict(items[10:]))  # grows the columns of characters and ids
    texts = texts_of(rng, list(entries), 200)
    first = dict(items[:10])
    known = list(first)
    texts += [f"{known[i % 10]} {known[(3 * i) % 10]}" for i in range(20)]  # found by the old view
    old = table._lookup_group(before, texts, 0)
    pieces = np.split(old.ids, np.cumsum(old.lengths)[:-1])
    for i, text in enumerate(texts):
        want = expected(first, text)
        assert (i in old.missing) == (want is None)
        if want is not None:
            assert pieces[i].tolist() == want.tolist()
    assert len(old.missing) < len(texts) - 19
    table.clear()
    assert len(table) == 0
    assert check(table, {}, ["abc def", ""]) == [0]


def test_lone_surrogates_raise_for_the_caller() -> None:
    table = ChunkTable(PYTHON_WHITESPACE)
    with pytest.raises(UnicodeEncodeError):
        table.lookup(["fine", "bad \ud800 text"])


def test_keyed_chunks_are_told_apart_at_every_boundary() -> None:
    # keyed: up to 16 characters below U+0100 (two words); the length tells trailing
    # U+0000s apart, U+00FF is keyed, U+0100 is not
    entries = {
        chunk: packed([i, i + 100])
        for i, chunk in enumerate(
            [
                "a", "a\x00", "a\x00\x00", "\x00", "\x00" * 8, "\x00" * 9, "\x00" * 16,
                "\x00" * 17, "abcdefgh", "abcdefghi", "abcdefghijklmnop", "abcdefghijklmnopq",
                "ÿ", "Ā", "中", "abcdefgÿ", "abcdefgĀ", "é" * 16, "é" * 17,
            ]
        )
    }  # fmt: skip
    table = ChunkTable(PYTHON_WHITESPACE)
    table.add(entries)
    assert len(table) == len(entries)
    texts = [*entries, " ".join(entries), "\t".join(reversed(entries))]
    near = ["b", "\x00" * 2, "\x00" * 10, "abcdefg", "abcdefgi", "abcdefghijklmnoq", "ÿÿ"]
    near += ["abcdefghijklmnopqr", "é" * 15, "Ā" * 2, "a\x00b", "abcdefghj"]
    assert check(table, entries, texts + near) == list(range(len(texts), len(texts) + len(near)))


@pytest.mark.parametrize(
    ("stored", "asked"),
    [("\x00", "中"), ("中", "\x00"), ("é", "Ā"), ("a", "a\x00"), ("a\x00", "a"), ("中", "中中")],
)
def test_an_entry_on_the_same_slots_never_stands_for_another_chunk(
    monkeypatch: pytest.MonkeyPatch, stored: str, asked: str
) -> None:
    # both on the same slots; the words of "\x00" and of "中" (not keyed) are both 0, and
    # those of "a" and "a\x00" equal: the kind and the length tell them apart
    same_hashes(monkeypatch, 5)
    table = ChunkTable(PYTHON_WHITESPACE)
    table.add({stored: packed([1])})
    found = table.lookup([asked, stored])
    assert found.missing == [0]
    assert found.ids.tolist() == [1]


def test_chunks_past_the_capacity_are_left_out() -> None:
    entries = vocabulary(np.random.default_rng(11), 40)
    table = ChunkTable(PYTHON_WHITESPACE, capacity=25)
    items = list(entries.items())
    table.add(dict(items[:20]))
    table.add(dict(items[20:]))  # room for 5 of these 20
    assert len(table) == 25
    kept = dict(items[:25])
    texts = list(entries)
    assert check(table, kept, texts) == list(range(25, 40))
    table.clear()
    table.add(dict(items[25:]))
    assert check(table, dict(items[25:]), texts) == list(range(25))
