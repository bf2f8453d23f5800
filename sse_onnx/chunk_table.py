"""The tokenizer's chunk cache as flat numpy arrays: the ids of many texts in a few numpy calls.

:class:`~sse_onnx.tokenizer.TextTokenizer` keeps the ids of every whitespace-free chunk it has
seen. Looking chunks up one by one in a dict holds the GIL, so a second thread could only
tokenize while the first ran its graph call. This table holds the same entries in arrays and
finds a whole list of texts at once: the list is joined and cut into chunks at ``str.split``'s
whitespace; each chunk is hashed, its entry found in an open-addressing table, and the entry
is taken only if it holds the very same characters. The numpy calls used let go of the GIL
inside their loops (those that do not, ``np.repeat`` and in-place cumulative sums, are
avoided).

Most chunks are *keyed*: at most :data:`KEY_CHARS` characters, each below U+0100 (99 % of
SciFact's chunks). Their characters, one byte each, fill two 64-bit words read straight out of
the joined text, so a keyed chunk is hashed and checked with a handful of operations on whole
words, whatever its length. Other chunks keep their characters in the table and are hashed
and checked character by character. An entry of one kind never stands for a chunk of the
other.

It is an index, never the reference: a hash only proposes an entry, and the words or the
characters decide. A text with a chunk not found so (new, too long to be kept, a hash
collision) or with a character the caller's path treats specially is returned as *missing*,
with the chunks that were not found; the caller tokenizes those chunks, adds them with
:meth:`ChunkTable.add` and looks the missing texts up again, or gives them its per-text path.

Lookups take no lock. :meth:`ChunkTable.add` (one writer at a time: the caller's lock) writes
new entries past the count a lookup reads, then publishes the new count; entries are never
changed in place, and growing or clearing replaces the arrays. A lookup that meets an entry it
does not know treats its chunk as missing, which is always correct.
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = ["ChunkTable", "Lookup"]

#: Texts are looked up in groups of about this many characters: the temporaries of a group
#: (some ten arrays of 4-8 bytes per character) stay near 4 MB.
GROUP_CHARS = 1 << 16

#: Chunks of at most this many characters, each below U+0100, are keyed (see the module).
KEY_CHARS = 16
_WORD = 8
_LATIN = 0xFF
# An entry's row: 4 int32 (characters' start, length, ids' start, id count), then 2 words.
_WORDS_AT, _ROW = 4, 8
# The bytes of a chunk of n characters in its first and its second word (0 for n = 0: a
# chunk that is not keyed): they cut the words read past its end at its end.
_FIRST = np.array([(1 << (8 * min(n, _WORD))) - 1 for n in range(KEY_CHARS + 1)], dtype=np.uint64)
_SECOND = np.array(
    [(1 << (8 * max(n - _WORD, 0))) - 1 for n in range(KEY_CHARS + 1)], dtype=np.uint64
)
_FIRST[0] = 0

# Drawn per process, odd: chunks crafted to share slots need the hash, which is not public
# (a dict's str hash is randomised per process for the same reason).
_BASE = np.uint64(secrets.randbits(64) | 1)
_MIX = np.uint64(secrets.randbits(64) | 1)
#: An entry sits at most this many slots past its hash's own; one that would go farther is
#: left out of the slots (its chunks then take the caller's exact path), so neither adding nor
#: finding can be slowed without bound by chunks whose hashes crowd together.
MAX_PROBE = 32
_SHIFT = np.uint64(29)
#: Probes still unsettled after a few slots are finished with one gather of all their
#: remaining slots once they are this few (a loop step costs the same for 3 as for 3,000).
_FEW = 256
# Which of a 64-bit value's two 32-bit halves holds its top 32 bits.
_HIGH = 1 if sys.byteorder == "little" else 0
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
        one = np.ones(1, dtype=np.uint64)
        self.pair: tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]] = (one, one)

    def at_least(self, n: int) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
        up, down = self.pair
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
            self.pair = (up, down)  # replaced whole: a reader keeps the pair it took
        return up, down


_POWERS = _Powers()


def _code_hashes(codes: Codes, starts: Ints, ends: Ints) -> npt.NDArray[np.uint64]:
    """A 64-bit hash of each ``codes[starts[i]:ends[i]]`` that does not depend on where the
    run lies: the polynomial sum of its characters over the base's powers, shifted back by its
    start with the inverse power. Every start must be at least 1."""
    up, down = _POWERS.at_least(len(codes))
    # (arrays of unsigned integers wrap around without a warning, unlike numpy's scalars)
    # new arrays, not in place: numpy's in-place cumulative sum holds the GIL
    sums = np.multiply(codes, up[: len(codes)], dtype=np.uint64).cumsum()
    hashes: npt.NDArray[np.uint64] = (sums[ends - 1] - sums[starts - 1]) * down[starts]
    # the length too, or trailing U+0000s (code 0) would not count
    hashes = hashes * _MIX + (ends - starts).astype(np.uint64)
    hashes ^= hashes >> _SHIFT
    hashes *= _MIX
    hashes ^= hashes >> _SHIFT
    return hashes


class _Keys(NamedTuple):
    """Each chunk's two words (both 0 for a chunk that is not keyed), and whether it is."""

    first: npt.NDArray[np.uint64]
    second: npt.NDArray[np.uint64]
    keyed: npt.NDArray[np.bool_]


def _keys(codes: Codes, starts: Ints, ends: Ints, wide: Ints | None = None) -> _Keys:
    """The words of each chunk ``codes[starts[i]:ends[i]]`` (every start at least 1): its
    characters a byte each, little-endian, the first eight in one word and the next eight in
    the other, the bytes past its end zero. Chunks longer than :data:`KEY_CHARS` or with a
    character from U+0100 on (at ``wide``, when the caller has found them) are not keyed."""
    lengths = ends - starts
    keyed = lengths <= KEY_CHARS
    if wide is None:
        wide = (codes > _LATIN).nonzero()[0]
    if wide.size:  # few: mark the chunks they lie in
        chunk = starts.searchsorted(wide, side="right") - 1
        inside = (chunk >= 0) & (wide < ends[np.maximum(chunk, 0)])
        keyed[chunk[inside]] = False
    data = np.zeros(len(codes) + 2 * _WORD, dtype=np.uint8)
    data[: len(codes)] = codes  # wraps from U+0100 on: those chunks are not keyed
    # a word starting at every byte: element i is data[i:i + 8] (unaligned, strided views)
    size = len(codes) + 1
    words = np.ndarray((size,), dtype="<u8", buffer=data, strides=(1,))
    later = np.ndarray((size,), dtype="<u8", buffer=data, offset=_WORD, strides=(1,))
    kept = np.where(keyed, lengths, 0)  # 0: both masks 0
    first = words[starts] & _FIRST[kept]
    second = later[starts] & _SECOND[kept]
    return _Keys(first, second, keyed)


def _key_hashes(keys: _Keys, lengths: Ints) -> npt.NDArray[np.uint64]:
    """A 64-bit hash of each keyed chunk from its words and length (the length counts: a word
    of "a" and of "a\x00" is the same)."""
    hashes: npt.NDArray[np.uint64] = keys.first * _MIX
    hashes ^= keys.second * _BASE
    hashes += lengths.astype(np.uint64)
    hashes ^= hashes >> _SHIFT
    hashes *= _MIX
    hashes ^= hashes >> _SHIFT
    return hashes


def _hashes(keys: _Keys, codes: Codes, starts: Ints, ends: Ints) -> npt.NDArray[np.uint64]:
    """The hash of each chunk: from its words when keyed, else from its characters."""
    hashes = _key_hashes(keys, ends - starts)
    other = (~keys.keyed).nonzero()[0]
    if other.size:
        lengths = ends[other] - starts[other]
        own = np.concatenate([np.zeros(1, dtype=np.uint32), codes[_ragged(starts[other], lengths)]])
        own_starts = lengths.cumsum() - lengths + 1
        hashes[other] = _code_hashes(own, own_starts, own_starts + lengths)
    return hashes


def _words(rows: npt.NDArray[np.int32]) -> npt.NDArray[np.uint64]:
    """The two words of each row (a view)."""
    words: npt.NDArray[np.uint64] = rows[:, _WORDS_AT:].view(np.uint64)
    return words


class _Column:
    """A growable array of values: they are appended past ``size``; a full array is copied
    into one a quarter larger (a lookup holding the old one still reads its entries)."""

    def __init__(self, dtype: npt.DTypeLike, first: Sequence[int] = ()) -> None:
        self.array = np.empty(1024, dtype=dtype)
        if first:
            self.array[: len(first)] = first
        self.size = len(first)

    def append(self, values: npt.ArrayLike) -> None:
        values = np.asarray(values, dtype=self.array.dtype)
        end = self.size + len(values)
        if end > len(self.array):
            grown = np.empty(max(end, 5 * len(self.array) // 4), dtype=self.array.dtype)
            grown[: self.size] = self.array[: self.size]
            self.array = grown
        self.array[self.size : end] = values
        self.size = end


class _Entries:
    """The entries: their rows, the characters of those not keyed and their ids, each end to
    end, and the slots that find them.

    Offsets, counts and ids are int32: ids index a vocabulary, and the caller keeps the table
    to :data:`~sse_onnx.tokenizer.CACHE_CHUNKS` chunks of at most
    :data:`~sse_onnx.tokenizer.CACHE_CHUNK_CHARS` characters (8.4 million codes at most). Some
    65 bytes an entry with the slots (SciFact: 96,208 entries, ~6 MB), under half a dict's.

    The rows and the slots are allocated once for as many entries as the table may hold, and
    never copied: memory pages nobody has written take no memory (the slots start as zero
    pages), so a table holds the pages of the entries it has, and growing costs no copy that
    would briefly hold the old rows beside the new.
    """

    def __init__(self, capacity: int) -> None:
        # characters of the entries not keyed; one code first, so that every such entry
        # starts at 1 or later (_code_hashes)
        self.codes = _Column(np.uint32, [0])
        self.ids = _Column(np.int32)
        # where each entry's characters (-1: keyed) and ids start, its length, its id count
        # and its two words: one row of 32 bytes, read with one access
        self.rows = np.empty((capacity, _ROW), dtype=np.int32)
        self.count = 0
        # entry + 1 (0: empty) and the top 32 bits of its hash; at most half full
        size = 1 << max(12, (2 * capacity - 1).bit_length())
        self.slots = np.zeros((size, 2), dtype=np.int32)


class _View(NamedTuple):
    """What a lookup reads: the arrays and the number of entries published with them."""

    size: int
    slots: npt.NDArray[np.int32]
    codes: Codes
    ids: npt.NDArray[np.int32]
    rows: npt.NDArray[np.int32]


class ChunkTable:
    """Chunk -> ids entries, found many at once.

    Args:
        whitespace: The characters ``str.split`` cuts at.
        special: Characters the table must not handle (the caller's path deletes them before
            splitting): a text that contains one is returned as missing.
        capacity: The most entries it holds; chunks added past it are left out (the caller
            clears the table when it would overflow).
    """

    def __init__(self, whitespace: str, special: str = "", capacity: int = 1 << 17) -> None:
        top = max(map(ord, whitespace + special)) + 1
        # 0 a chunk's character, 1 whitespace, 2 special; every code from ``top`` on is 0
        self._kind = np.zeros(top + 1, dtype=np.int8)
        self._kind[[ord(c) for c in whitespace]] = 1
        self._kind[[ord(c) for c in special]] = 2
        self._top = top
        self._capacity = capacity
        self._entries = _Entries(capacity)
        self._view = self._publish()

    def __len__(self) -> int:
        return self._view.size

    def clear(self) -> None:
        """Forget every entry (a lookup under way keeps the arrays it took); a writer, like
        :meth:`add`: the caller holds its lock."""
        self._entries = _Entries(self._capacity)
        self._view = self._publish()

    def add(self, found: Mapping[str, bytes]) -> None:
        """Add chunks (without whitespace) and their ids, packed int64, a group of about
        :data:`GROUP_CHARS` characters at a time. A chunk is left out when an entry with its
        hash's tag lies on its way: the chunk itself (added by another thread meanwhile), or a
        look-alike that would hide it from :meth:`_find`; so are chunks past the capacity.

        One writer at a time: the caller holds its lock.
        """
        chunks = [chunk for chunk in found if chunk]
        for group in _groups(chunks):
            self._add_group(chunks[group], found)

    def _add_group(self, chunks: list[str], found: Mapping[str, bytes]) -> None:
        codes, starts, ends = _codes_and_runs(chunks)
        keys = _keys(codes, starts, ends)
        hashes = _hashes(keys, codes, starts, ends)
        new = self._find(self._view, hashes) < 0
        if not new.all():
            chunks = [chunk for chunk, keep in zip(chunks, new.tolist(), strict=True) if keep]
            if not chunks:
                return
            codes, starts, ends = _codes_and_runs(chunks)
            keys = _Keys(keys.first[new], keys.second[new], keys.keyed[new])
            hashes = hashes[new]
        entries = self._entries
        first = entries.count
        room = self._capacity - first
        if len(chunks) > room:
            if room <= 0:
                return
            chunks = chunks[:room]
            starts, ends, hashes = starts[:room], ends[:room], hashes[:room]
            keys = _Keys(keys.first[:room], keys.second[:room], keys.keyed[:room])
        packed = [found[chunk] for chunk in chunks]
        counts = np.fromiter(map(len, packed), dtype=np.int64, count=len(packed)) // _IDS.itemsize
        lengths = ends - starts
        other = (~keys.keyed).nonzero()[0]  # their characters are kept
        code_starts = np.full(len(chunks), -1, dtype=np.int64)
        code_starts[other] = lengths[other].cumsum() - lengths[other] + entries.codes.size
        id_starts = counts.cumsum() - counts + entries.ids.size
        entries.codes.append(codes[_ragged(starts[other], lengths[other])])
        entries.ids.append(np.frombuffer(b"".join(packed), dtype=np.int64))
        rows = np.empty((len(chunks), _ROW), dtype=np.int32)
        rows[:, :_WORDS_AT] = np.stack([code_starts, lengths, id_starts, counts], axis=1)
        words = _words(rows)
        words[:, 0], words[:, 1] = keys.first, keys.second
        entries.rows[first : first + len(chunks)] = rows
        _insert(entries.slots, hashes.tolist(), first)
        # published last: a lookup reads the entries below the count it took
        entries.count = first + len(chunks)
        self._view = self._publish()

    def lookup(self, texts: Sequence[str]) -> Lookup:
        """The ids of ``texts``, a group of about :data:`GROUP_CHARS` characters at a time.

        Raises:
            UnicodeEncodeError: if a text holds a lone surrogate (the caller's path reports it).
        """
        view = self._view
        results = [self._lookup_group(view, texts[g], g.start) for g in _groups(texts)]
        if len(results) == 1:
            return results[0]
        return Lookup(
            np.concatenate([r.ids for r in results] or [np.empty(0, dtype=np.int64)]),
            np.concatenate([r.lengths for r in results] or [np.empty(0, dtype=np.int64)]),
            [i for r in results for i in r.missing],
            list(dict.fromkeys(c for r in results for c in r.chunks)),
        )

    def _lookup_group(self, view: _View, texts: Sequence[str], offset: int) -> Lookup:
        blob = " " + " ".join(texts)  # a leading space: every chunk starts at 1 or later
        codes: Codes = np.frombuffer(blob.encode("utf-32-le"), dtype=np.uint32)
        text_starts = np.cumsum([1] + [len(text) + 1 for text in texts[:-1]])
        kind, unusual = self._kinds(codes)
        word = kind == 0
        edges = (word[1:] != word[:-1]).nonzero()[0] + 1
        if word[-1]:
            edges = np.append(edges, len(codes))
        starts, ends = edges[0::2], edges[1::2]
        chunk_text = text_starts.searchsorted(starts, side="right") - 1
        specials = unusual[kind[unusual] == 2]
        bad_texts = set((text_starts.searchsorted(specials, side="right") - 1).tolist())
        keys = _keys(codes, starts, ends, unusual[codes[unusual] > _LATIN])
        entry = self._find(view, _hashes(keys, codes, starts, ends))
        rows = view.rows.take(np.maximum(entry, 0), axis=0)
        bad = self._unequal(view, keys, codes, starts, ends, entry, rows)
        bad_chunks = bad.nonzero()[0]
        bad_texts.update(chunk_text[bad_chunks].tolist())
        missing = sorted(bad_texts)
        chunks = []
        if missing:
            keep = ~np.isin(chunk_text, missing)
            chunks = [blob[starts[i] : ends[i]] for i in bad_chunks.tolist()]
            rows, chunk_text = rows[keep], chunk_text[keep]
        counts = rows[:, 3].astype(np.int64)
        ids = view.ids.take(_ragged(rows[:, 2], counts)).astype(np.int64)
        # ids per text: the running count at each text's first and last chunk
        ends_at = np.concatenate([[0], counts.cumsum()])
        bounds = chunk_text.searchsorted(np.arange(len(texts) + 1))
        lengths = ends_at[bounds[1:]] - ends_at[bounds[:-1]]
        return Lookup(ids, lengths, [offset + i for i in missing], list(dict.fromkeys(chunks)))

    def _kinds(self, codes: Codes) -> tuple[npt.NDArray[np.int8], Ints]:
        """0 for a chunk character, 1 for whitespace, 2 for a special character; and where
        the characters other than a space or printable ASCII are (few, in most text)."""
        kind = (codes <= 32).view(np.int8)
        unusual = (codes - np.uint32(32) > 94).nonzero()[0]  # below 32 wraps around
        if unusual.size:
            kind[unusual] = self._kind[np.minimum(codes[unusual], self._top)]
        return kind, unusual

    @staticmethod
    def _find(view: _View, hashes: npt.NDArray[np.uint64]) -> Ints:
        """The first entry with each hash's tag on its way, or -1 where there is none (it
        proposes; the character check decides)."""
        mask = len(view.slots) - 1
        slot = hashes.view(np.int64) & mask
        tags = hashes.view(np.uint32)[_HIGH::2]  # the top 32 bits: a view, not a copy
        slots = view.slots.reshape(-1).view(np.uint64)  # a slot's entry and tag as one value
        candidate, known, hit = _read_slots(slots, slot, tags, view.size)
        entry: Ints = candidate.astype(np.int64)
        entry[~hit] = -1
        todo = (known & ~hit).nonzero()[0]
        step = 1
        while todo.size > _FEW and step < MAX_PROBE:  # those not settled by their own slot
            slot[todo] = (slot[todo] + 1) & mask
            candidate, known, hit = _read_slots(slots, slot[todo], tags[todo], view.size)
            entry[todo[hit]] = candidate[hit]
            todo = todo[~hit & known]
            step += 1
        if todo.size and step < MAX_PROBE:  # the last few: their remaining slots at once
            ahead = (slot[todo, None] + np.arange(1, MAX_PROBE - step + 1)) & mask
            candidate, known, hit = _read_slots(slots, ahead, tags[todo, None], view.size)
            # a probe ends at its first slot that is empty or not known to this view
            first_hit, first_end = hit.argmax(axis=1), (~known).argmax(axis=1)
            found = hit.any(axis=1) & ((first_hit < first_end) | known.all(axis=1))
            rows = found.nonzero()[0]
            entry[todo[rows]] = candidate[rows, first_hit[rows]]
        return entry

    @staticmethod
    def _unequal(
        view: _View,
        keys: _Keys,
        codes: Codes,
        starts: Ints,
        ends: Ints,
        entry: Ints,
        rows: npt.NDArray[np.int32],
    ) -> npt.NDArray[np.bool_]:
        """Whether each chunk ``codes[starts[i]:ends[i]]`` is not the entry found for it (none
        found, of the other kind, another length, other words or other characters)."""
        if view.size == 0:
            return np.ones(len(starts), dtype=bool)
        lengths = ends - starts
        words = _words(rows)
        bad: npt.NDArray[np.bool_] = (
            (entry < 0)
            | (rows[:, 1] != lengths)
            | ((rows[:, 0] < 0) != keys.keyed)
            | (words[:, 0] != keys.first)
            | (words[:, 1] != keys.second)
        )
        other = (~(keys.keyed | bad)).nonzero()[0]  # compared character by character
        if other.size:
            counts = lengths[other]
            stored = view.codes.take(_ragged(rows[other, 0], counts), mode="clip")
            differ = (stored != codes[_ragged(starts[other], counts)]).nonzero()[0]
            if differ.size:
                before = counts.cumsum() - counts
                bad[other[before.searchsorted(differ, side="right") - 1]] = True
        return bad

    def _publish(self) -> _View:
        e = self._entries
        return _View(
            e.count,
            e.slots,
            e.codes.array,
            e.ids.array,
            e.rows,
        )


def _read_slots(
    slots: npt.NDArray[np.uint64], at: Ints, tags: npt.NDArray[np.uint32], size: int
) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """The entries in the slots ``at`` (any shape), whether a view of ``size`` entries knows
    each (an empty slot, 0, wraps to 2^32 - 1 and ends a probe, as does an entry added after
    the view), and whether each known one has the tag in ``tags``."""
    pairs = slots.take(at).view(np.uint32)  # entry + 1, tag, entry + 1, tag, ...
    candidate = pairs[..., 0::2] - np.uint32(1)
    known = candidate < size
    return candidate, known, known & (pairs[..., 1::2] == tags)


def _groups(items: Sequence[str]) -> list[slice]:
    """Consecutive runs of ``items`` of about :data:`GROUP_CHARS` characters (one item at least)."""
    groups = []
    first = 0
    while first < len(items):
        last, chars = first, 0
        while last < len(items) and (chars < GROUP_CHARS or last == first):
            chars += len(items[last]) + 1
            last += 1
        groups.append(slice(first, last))
        first = last
    return groups


def _ragged(starts: npt.ArrayLike, counts: Ints) -> Ints:
    """The indices ``starts[0], ..., starts[0] + counts[0] - 1, starts[1], ...``.

    Built with a cumulative sum rather than ``np.repeat``, which holds the GIL: each run's
    first index gets the jump from the previous run's end, every other index a step of 1.
    """
    total = int(counts.sum())
    steps = np.ones(total, dtype=np.int64)
    used = counts.nonzero()[0]
    if total:
        firsts = np.asarray(starts, dtype=np.int64)[used]
        lasts = firsts + counts[used] - 1
        outputs = counts[used].cumsum() - counts[used]
        steps[outputs[1:]] = firsts[1:] - lasts[:-1]
        steps[0] = firsts[0]
    return steps.cumsum()  # a new array: in place, numpy holds the GIL


def _codes_and_runs(chunks: Sequence[str]) -> tuple[Codes, Ints, Ints]:
    """The code points of ``" " + " ".join(chunks)`` and where each chunk runs in them."""
    lengths = np.fromiter(map(len, chunks), dtype=np.int64, count=len(chunks))
    starts = (lengths + 1).cumsum() - lengths
    codes: Codes = np.frombuffer((" " + " ".join(chunks)).encode("utf-32-le"), dtype=np.uint32)
    return codes, starts, starts + lengths


def _insert(slots: npt.NDArray[np.int32], hashes: list[int], first: int) -> None:
    """Put entries ``first, first + 1, ...`` with these hashes into ``slots``: the tag first,
    then the entry + 1 (a lookup takes a slot only once its entry is there)."""
    mask = len(slots) - 1
    entries, tags = slots[:, 0], slots.view(np.uint32)[:, 1]
    for entry, value in enumerate(hashes, first + 1):
        slot = value & mask
        for _ in range(MAX_PROBE):
            if not entries[slot]:
                tags[slot] = value >> 32
                entries[slot] = entry
                break
            slot = (slot + 1) & mask
