"""The tokenizer's chunk cache as flat numpy arrays: the ids of many texts in a few numpy calls.

:class:`~sse_onnx.tokenizer.TextTokenizer` keeps the ids of every whitespace-free chunk it has
seen in a dict. Looking chunks up one by one in Python holds the GIL, so a second thread could
only tokenize while the first ran its graph call. This table holds the same entries (chunk
characters, ids) in arrays and finds a whole block of texts at once: the block is joined, cut
into chunks at ``str.split``'s whitespace, each chunk is hashed, its entry found in an
open-addressing table, and the entry is taken only if its stored characters equal the chunk's,
character by character. numpy lets go of the GIL inside these loops, so two threads tokenize at
once, and the block costs about half of the dict lookups' time on one thread.

It is an index, never the reference: a hash only proposes an entry, and the character check
decides. A text with a chunk not found so (new, too long to be kept, a hash collision) or with a
character the caller's path treats specially is returned as *missing*, and the caller gives it
the per-text path, which also tells it the chunks to :meth:`ChunkTable.add`.

Lookups take no lock. :meth:`ChunkTable.add` (one writer at a time: the caller's lock) writes
new entries past the count a lookup reads, then publishes the new count; entries are never
changed in place, and growing or clearing replaces the arrays. A lookup that meets an entry it
does not know treats its chunk as missing, which is always correct.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = ["ChunkTable", "Lookup"]

#: Texts are looked up in groups of about this many characters: the temporaries of a group
#: (some ten arrays of 4-8 bytes per character) stay near 4 MB.
GROUP_CHARS = 1 << 16

_BASE = np.uint64(0x100000001B3)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_SHIFT = np.uint64(29)
_TAG_SHIFT = np.uint64(32)
_EMPTY = -1
_IDS = np.dtype(np.int64)

Codes = npt.NDArray[np.uint32]
Ints = npt.NDArray[np.int64]


class Lookup(NamedTuple):
    """The ids of a block of texts, except those of the texts in ``missing``."""

    ids: Ints  #: ids of the texts not missing, end to end
    lengths: Ints  #: ids per text; 0 for a missing text
    missing: list[int]  #: indices of the texts the table could not give
    chunks: list[str]  #: chunks of the missing texts the table lacks (to add once known)


def _inverse(value: int) -> int:
    """The inverse of an odd number modulo 2**64 (Newton's iteration)."""
    inverse = 1
    for _ in range(7):
        inverse = inverse * (2 - value * inverse) % (1 << 64)
    return inverse


class _Powers:
    """``base ** i`` and ``base ** -i`` modulo 2**64 for i below a length, grown on demand."""

    def __init__(self) -> None:
        self.up: npt.NDArray[np.uint64] = np.ones(1, dtype=np.uint64)
        self.down: npt.NDArray[np.uint64] = np.ones(1, dtype=np.uint64)

    def at_least(self, n: int) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
        up, down = self.up, self.down
        if len(up) < n:
            size = max(n, 2 * len(up))
            with np.errstate(over="ignore"):
                up = np.cumprod(np.full(size, _BASE, dtype=np.uint64), dtype=np.uint64)
                down = np.cumprod(
                    np.full(size, np.uint64(_inverse(int(_BASE))), dtype=np.uint64),
                    dtype=np.uint64,
                )
            up = np.concatenate([np.ones(1, dtype=np.uint64), up[:-1]])
            down = np.concatenate([np.ones(1, dtype=np.uint64), down[:-1]])
            self.up, self.down = up, down  # replaced whole: a reader keeps the pair it took
        return up, down


_POWERS = _Powers()


def _hashes(codes: Codes, starts: Ints, ends: Ints) -> npt.NDArray[np.uint64]:
    """A 64-bit hash of each ``codes[starts[i]:ends[i]]`` that does not depend on where the
    run lies: the polynomial sum of its characters over the base's powers, shifted back by its
    start with the inverse power. Every start must be at least 1."""
    up, down = _POWERS.at_least(len(codes))
    with np.errstate(over="ignore"):
        sums = codes.astype(np.uint64)
        np.multiply(sums, up[: len(codes)], out=sums)
        np.cumsum(sums, out=sums)
        hashes: npt.NDArray[np.uint64] = (sums[ends - 1] - sums[starts - 1]) * down[starts]
        # the length too, or trailing U+0000s (code 0) would not count
        hashes = hashes * _MIX + (ends - starts).astype(np.uint64)
        hashes ^= hashes >> _SHIFT
        hashes *= _MIX
        hashes ^= hashes >> _SHIFT
    return hashes


class _Column:
    """A growable 1-d array: values are appended past ``size``; a full array is copied into
    one half as large again (a lookup holding the old one still reads its entries)."""

    def __init__(self, dtype: npt.DTypeLike, first: Sequence[int] = ()) -> None:
        self.array = np.empty(1024, dtype=dtype)
        self.array[: len(first)] = first
        self.size = len(first)

    def append(self, values: npt.ArrayLike) -> None:
        values = np.asarray(values, dtype=self.array.dtype)
        end = self.size + len(values)
        if end > len(self.array):
            grown = np.empty(max(end, 3 * len(self.array) // 2), dtype=self.array.dtype)
            grown[: self.size] = self.array[: self.size]
            self.array = grown
        self.array[self.size : end] = values
        self.size = end


class _Entries:
    """The entries, column by column: their characters and their ids, each end to end.

    Offsets, counts and ids are int32 (a vocabulary, a cache of at most some 10^5 chunks of at
    most a few dozen characters): some 80 bytes an entry with the slots, half a dict's.
    """

    def __init__(self) -> None:
        # characters; one code first, so that every entry starts at 1 or later (_hashes)
        self.codes = _Column(np.uint32, [0])
        self.code_starts = _Column(np.int32)
        self.code_counts = _Column(np.int32)
        self.ids = _Column(np.int32)
        self.id_starts = _Column(np.int32)
        self.id_counts = _Column(np.int32)
        self.hashes = _Column(np.uint64)  # kept to rebuild the slots
        self.slots = _slots(np.empty(0, dtype=np.uint64), 0)

    @property
    def count(self) -> int:
        return self.code_starts.size


class _View(NamedTuple):
    """What a lookup reads: the arrays and the number of entries published with them."""

    size: int
    slots: npt.NDArray[np.int32]
    codes: Codes
    code_starts: npt.NDArray[np.int32]
    code_counts: npt.NDArray[np.int32]
    ids: npt.NDArray[np.int32]
    id_starts: npt.NDArray[np.int32]
    id_counts: npt.NDArray[np.int32]


class ChunkTable:
    """Chunk -> ids entries, found many at once.

    Args:
        whitespace: The characters ``str.split`` cuts at.
        special: Characters the table must not handle (the caller's path deletes them before
            splitting): a text that contains one is returned as missing.
    """

    def __init__(self, whitespace: str, special: str = "") -> None:
        top = max(map(ord, whitespace + special)) + 1
        # 0 a chunk's character, 1 whitespace, 2 special; every code from ``top`` on is 0
        self._kind = np.zeros(top + 1, dtype=np.int8)
        self._kind[[ord(c) for c in whitespace]] = 1
        self._kind[[ord(c) for c in special]] = 2
        self._top = top
        self._entries = _Entries()
        self._view = self._publish()

    def __len__(self) -> int:
        return self._view.size

    def clear(self) -> None:
        """Forget every entry (a lookup under way keeps the arrays it took)."""
        self._entries = _Entries()
        self._view = self._publish()

    def add(self, found: Mapping[str, bytes]) -> None:
        """Add chunks (without whitespace) and their ids, packed int64; chunks the table
        already holds are left as they are.

        One writer at a time: the caller holds its lock.
        """
        chunks = [chunk for chunk in found if chunk]
        if not chunks:
            return
        codes, starts, ends = _codes_and_runs(chunks)
        hashes = _hashes(codes, starts, ends)
        view = self._view
        new = self._unequal(view, codes[codes != 32], self._find(view, hashes), ends - starts)
        if not new.all():  # another thread added some since this one looked them up
            chunks = [chunk for chunk, keep in zip(chunks, new.tolist(), strict=True) if keep]
            if not chunks:
                return
            codes, starts, ends = _codes_and_runs(chunks)
            hashes = hashes[new]
        entries = self._entries
        first = entries.count
        entries.code_starts.append(starts - 1 - np.arange(len(chunks)) + entries.codes.size)
        entries.code_counts.append(ends - starts)
        entries.codes.append(codes[codes != 32])  # not the spaces between the chunks
        packed = [found[chunk] for chunk in chunks]
        counts = np.fromiter(map(len, packed), dtype=np.int64, count=len(packed)) // _IDS.itemsize
        entries.id_starts.append(np.cumsum(counts) - counts + entries.ids.size)
        entries.id_counts.append(counts)
        entries.ids.append(np.frombuffer(b"".join(packed), dtype=np.int64))
        entries.hashes.append(hashes)
        if 2 * entries.count > len(entries.slots):
            entries.slots = _slots(entries.hashes.array[: entries.count], 2 * entries.count + 1)
        else:
            _insert(entries.slots, hashes.tolist(), first)
        self._view = self._publish()

    def lookup(self, texts: Sequence[str]) -> Lookup:
        """The ids of ``texts`` (each at most :data:`GROUP_CHARS` characters is best).

        Raises:
            UnicodeEncodeError: if a text holds a lone surrogate (the caller's path reports it).
        """
        view = self._view
        results = []
        first = 0
        while first < len(texts):
            last, chars = first, 0
            while last < len(texts) and (chars < GROUP_CHARS or last == first):
                chars += len(texts[last]) + 1
                last += 1
            results.append(self._lookup_group(view, texts[first:last], first))
            first = last
        if len(results) == 1:
            return results[0]
        return Lookup(
            np.concatenate([r.ids for r in results]),
            np.concatenate([r.lengths for r in results]),
            [i for r in results for i in r.missing],
            [c for r in results for c in r.chunks],
        )

    def _lookup_group(self, view: _View, texts: Sequence[str], offset: int) -> Lookup:
        blob = " " + " ".join(texts)  # a leading space: every chunk starts at 1 or later
        codes: Codes = np.frombuffer(blob.encode("utf-32-le"), dtype=np.uint32)
        text_starts = np.cumsum([1] + [len(text) + 1 for text in texts[:-1]])
        kind = self._kinds(codes)
        word = kind == 0
        edges = np.flatnonzero(word[1:] != word[:-1]) + 1
        if word[-1]:
            edges = np.append(edges, len(codes))
        starts, ends = edges[0::2], edges[1::2]
        chunk_text = np.searchsorted(text_starts, starts, side="right") - 1
        bad_texts = set(
            (np.searchsorted(text_starts, np.flatnonzero(kind == 2), side="right") - 1).tolist()
        )
        entry = self._find(view, _hashes(codes, starts, ends))
        bad = self._unequal(view, codes[word], entry, ends - starts)
        bad_chunks = np.flatnonzero(bad)
        bad_texts.update(chunk_text[bad_chunks].tolist())
        missing = sorted(bad_texts)
        chunks = []
        if missing:
            keep = ~np.isin(chunk_text, missing)
            chunks = [blob[starts[i] : ends[i]] for i in bad_chunks.tolist()]
            entry, chunk_text = entry[keep], chunk_text[keep]
        counts = view.id_counts[entry]
        before = np.cumsum(counts) - counts
        total = int(counts.sum())
        where = np.repeat(view.id_starts[entry] - before, counts) + np.arange(total)
        ids = view.ids[where].astype(np.int64)
        lengths = np.bincount(chunk_text, weights=counts, minlength=len(texts)).astype(np.int64)
        return Lookup(ids, lengths, [offset + i for i in missing], list(dict.fromkeys(chunks)))

    def _kinds(self, codes: Codes) -> npt.NDArray[np.int8]:
        """0 for a chunk character, 1 for whitespace, 2 for a special character."""
        kind = (codes <= 32).view(np.int8)
        unusual = np.flatnonzero((kind.view(bool) & (codes != 32)) | (codes > 126))
        if unusual.size:
            values = codes[unusual]
            kind[unusual] = self._kind[np.minimum(values, self._top)]
        return kind

    @staticmethod
    def _find(view: _View, hashes: npt.NDArray[np.uint64]) -> Ints:
        """The entry whose hash is each of ``hashes``, or 0 where none is (the character check
        then rejects it: entry 0's length or characters differ, or there is no entry 0)."""
        mask = len(view.slots) - 1
        slot = (hashes & np.uint64(mask)).astype(np.int64)
        tags = (hashes >> _TAG_SHIFT).astype(np.uint32)
        entry = np.zeros(len(hashes), dtype=np.int64)
        todo = np.arange(len(hashes))
        while todo.size:
            pairs = view.slots[slot[todo]]  # an entry and its hash's tag share a cache line
            candidate = pairs[:, 0]
            known = (candidate >= 0) & (candidate < view.size)
            hit = known & (pairs[:, 1].view(np.uint32) == tags[todo])
            entry[todo[hit]] = candidate[hit]
            # an empty slot ends the probe; so does a slot this view does not know
            todo = todo[~hit & known]
            slot[todo] = (slot[todo] + 1) & mask
        return entry

    @staticmethod
    def _unequal(
        view: _View, word_codes: Codes, entry: Ints, lengths: Ints
    ) -> npt.NDArray[np.bool_]:
        """Whether each chunk differs from its entry: in length, or in a character."""
        if view.size == 0:
            return np.ones(len(lengths), dtype=bool)
        bad: npt.NDArray[np.bool_] = view.code_counts[entry] != lengths
        before = np.cumsum(lengths) - lengths
        where = np.repeat(view.code_starts[entry] - before, lengths) + np.arange(len(word_codes))
        stored = view.codes.take(where, mode="clip")
        differ = np.flatnonzero(stored != word_codes)
        if differ.size:
            bad[np.searchsorted(before, differ, side="right") - 1] = True
        return bad

    def _publish(self) -> _View:
        e = self._entries
        return _View(
            e.count,
            e.slots,
            e.codes.array,
            e.code_starts.array,
            e.code_counts.array,
            e.ids.array,
            e.id_starts.array,
            e.id_counts.array,
        )


def _codes_and_runs(chunks: Sequence[str]) -> tuple[Codes, Ints, Ints]:
    """The code points of ``" " + " ".join(chunks)`` and where each chunk runs in them."""
    lengths = np.fromiter(map(len, chunks), dtype=np.int64, count=len(chunks))
    starts = np.cumsum(lengths + 1) - lengths
    codes: Codes = np.frombuffer((" " + " ".join(chunks)).encode("utf-32-le"), dtype=np.uint32)
    return codes, starts, starts + lengths


def _insert(slots: npt.NDArray[np.int32], hashes: list[int], first: int) -> None:
    """Put entries ``first, first + 1, ...`` with these hashes into ``slots``: the tag first,
    then the entry (a lookup takes a slot only once its entry is there)."""
    mask = len(slots) - 1
    entries, tags = slots[:, 0], slots.view(np.uint32)[:, 1]
    for entry, value in enumerate(hashes, first):
        slot = value & mask
        while entries[slot] != _EMPTY:
            slot = (slot + 1) & mask
        tags[slot] = value >> 32
        entries[slot] = entry


def _slots(hashes: npt.NDArray[np.uint64], size: int) -> npt.NDArray[np.int32]:
    """New slots (rows of an entry and the top 32 bits of its hash; linear probing), at least
    ``size`` of them (a power of two), holding every entry."""
    slots = np.full((1 << max(12, (size - 1).bit_length()), 2), _EMPTY, dtype=np.int32)
    _insert(slots, hashes.tolist(), 0)
    return slots
