"""Text to token ids with SSE's rules: no special tokens, no truncation, no padding, [UNK] kept.

A Hugging Face ``tokenizers`` tokenizer defines the ids. For BERT-style tokenizers
(``BertNormalizer`` or no normalizer, then ``BertPreTokenizer``, any model) a faster path gives
the same ids: a text is cut with ``str.split`` into whitespace-free chunks, and each chunk's ids
come from a cache, filled by asking the HF tokenizer about chunks it has not seen. This is exact
because

- ``BertNormalizer`` maps each character on its own (its NFD may reorder a run of combining
  marks, but whitespace ends every run) and ``BertPreTokenizer`` splits at every whitespace
  character, so no token spans whitespace and a chunk tokenized alone gives the ids it gives
  inside its text;
- the characters that ``str.split`` cuts at but HF does not treat as whitespace (control
  characters such as ``\\x0b``, ``\\x1c`` and U+0085, which HF's ``clean_text`` deletes) are
  found when the tokenizer is loaded, by asking HF's own normalizer and pre-tokenizer about each
  of them, and deleted before the split; a tokenizer on which one of them is neither a separator
  nor deleted gets the plain HF path;
- HF matches added tokens such as ``[SEP]`` in the raw text before normalization, whatever
  their neighbours (``x[SEP]y`` gives id 102 between x and y). An added token without
  whitespace lies inside one chunk, where HF matches it just the same; a text that contains an
  added token with whitespace in it is tokenized by HF whole, and a tokenizer with an added
  token matched after normalization gets the plain HF path.

A chunk new to the cache that is printable ASCII without an added token in it is tokenized
without HF's normalizer and pre-tokenizer when the model is a WordPiece: for such a chunk
``BertNormalizer`` only lowercases (if set to), ``BertPreTokenizer`` makes each punctuation
character a word and each run of letters and digits another (every printable ASCII character
that is not a letter or digit is punctuation to it), and each word goes to HF's own WordPiece
model. That is a quarter of the time of HF's whole pipeline, which spends most of it tracking
the alignment of every character; other chunks go to the whole pipeline in one call.

There are two caches of the same chunk -> ids entries, filled by the same code. A single text
or a short list looks its chunks up in a dict, the fastest for them. A list of
:data:`TABLE_CHARS` characters or more is looked up in
:class:`~sse_onnx.chunk_table.ChunkTable`: numpy arrays, where the whole list is cut, hashed
and checked (most chunks as two 64-bit words, the others character by character) in a few
dozen numpy calls that let go of the GIL, so one thread tokenizes while another makes graph
calls (the dict holds the GIL for every chunk). Each holds at most :data:`CACHE_CHUNKS` chunks
of at most :data:`CACHE_CHUNK_CHARS` characters (about 150 bytes each in the dict, 65 in the
table) and is emptied when full.
Lookups take no lock; filling takes one, so concurrent calls from several threads are safe and
give the ids of sequential calls.

Very long texts are cut at spaces into segments that are tokenized one at a time, which keeps
memory bounded and gives the same ids for the same reason. Tokenizers of other kinds get each
text whole.
"""

from __future__ import annotations

import os
import re
import threading
from array import array
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer
from tokenizers.models import Model

from sse_onnx.chunk_table import ChunkTable
from sse_onnx.errors import ModelFormatError

__all__ = [
    "CACHE_CHUNKS",
    "CACHE_CHUNK_CHARS",
    "PYTHON_WHITESPACE",
    "TextTokenizer",
    "bert_wordpiece_mismatches",
]

#: Texts longer than this many characters are tokenized in segments cut at spaces.
SEGMENT_CHARS = 1 << 16
#: Most chunks whose ids the cache keeps; it is emptied when a new chunk would exceed this.
CACHE_CHUNKS = 1 << 17
#: Chunks longer than this are tokenized each time they occur rather than cached.
CACHE_CHUNK_CHARS = 64
#: Lists of at least this many characters in all are looked up in the chunk table, whose
#: numpy calls let go of the GIL; shorter ones in the dict, which is faster for them on one
#: thread since a table lookup has a fixed cost (bench/results/constants.md).
TABLE_CHARS = 20_000
#: New chunks of a list tokenized and added to the table at a time (bounds the memory of a
#: cold call on thousands of documents).
FILL_CHUNKS = 1 << 12
#: Every character for which ``str.isspace()`` is true, i.e. where ``str.split()`` cuts
#: (checked against the running Python by the test suite).
PYTHON_WHITESPACE = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

_SEGMENTABLE_NORMALIZERS = {None, "BertNormalizer"}
_SEGMENTABLE_PRE_TOKENIZERS = {"BertPreTokenizer"}
#: The words ``BertPreTokenizer`` makes of printable ASCII without whitespace.
_ASCII_WORDS = re.compile(r"[0-9A-Za-z]+|[^0-9A-Za-z]")

TokenIds = npt.NDArray[np.int64]
_ID_BYTES = np.dtype(np.int64).itemsize


class TextTokenizer:
    """Turns texts into int64 token-id arrays following the SSE rules.

    Args:
        path: A Hugging Face ``tokenizer.json``.

    Raises:
        ModelFormatError: if the file is missing or not a tokenizer.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for a bad file
            raise ModelFormatError(
                f"{path} is not a readable Hugging Face tokenizer.json ({exc}); "
                "re-export the model."
            ) from exc
        tokenizer.no_padding()
        tokenizer.no_truncation()
        self._tokenizer = tokenizer
        self.vocab_size: int = tokenizer.get_vocab_size(with_added_tokens=True)
        self._segmentable = _is_segmentable(tokenizer)
        self._deleted = _deleted_separators(tokenizer) if self._segmentable else None
        self._deletions = str.maketrans(dict.fromkeys(self._deleted or ""))
        self._printable_deleted = any(char.isprintable() for char in self._deleted or "")
        self._added = _added_token_pattern(tokenizer)
        contents = [token.content for token in tokenizer.get_added_tokens_decoder().values()]
        self._any_added = re.compile("|".join(map(re.escape, contents)) or "(?!)")
        self._word_model = _ascii_word_model(tokenizer) if self._deleted is not None else None
        self._lowercase = bool(getattr(tokenizer.normalizer, "lowercase", False))
        self._cache: dict[str, bytes] = {}
        self._capacity = CACHE_CHUNKS
        self._table = ChunkTable(
            PYTHON_WHITESPACE, special=self._deleted or "", capacity=self._capacity
        )
        self._table_chars = TABLE_CHARS
        self._lock = threading.Lock()

    @property
    def fast(self) -> bool:
        """Whether texts go through the chunk cache (else through HF whole)."""
        return self._deleted is not None

    def encode(self, texts: Sequence[str]) -> list[TokenIds]:
        """Token ids of each text (read-only arrays), without special tokens or truncation."""
        if not texts:
            return []
        flat, lengths = self.encode_flat(texts)
        return np.split(flat, np.cumsum(lengths)[:-1])

    def encode_one(self, text: str) -> TokenIds:
        """Token ids of one text (a read-only array)."""
        ids = self._fast_ids(text) if self.fast else self._hf_ids([text])[0]
        return np.frombuffer(ids, dtype=np.int64)

    def encode_flat(self, texts: Sequence[str]) -> tuple[TokenIds, TokenIds]:
        """Token ids of all texts end to end (read-only), and the number of ids of each text."""
        if self.fast and sum(map(len, texts)) >= self._table_chars:
            tabled = self._table_ids(texts)
            if tabled is not None:
                tabled[0].flags.writeable = False
                return tabled
        cached = self._cached_ids(texts) if self.fast else None
        if cached is not None:
            parts = cached
        elif self.fast:
            parts = [self._fast_ids(text) for text in texts]
        else:
            parts = self._hf_ids(texts)
        lengths = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts)) // _ID_BYTES
        return np.frombuffer(b"".join(parts), dtype=np.int64), lengths

    def _needs_whole_hf(self, texts: Sequence[str]) -> bool:
        """Whether a text may need HF whole (an added token with whitespace) or in segments."""
        return self._added is not None or max(map(len, texts), default=0) > SEGMENT_CHARS

    def _table_ids(self, texts: Sequence[str]) -> tuple[TokenIds, TokenIds] | None:
        """The ids of many texts from the chunk table (see :mod:`sse_onnx.chunk_table`), or
        ``None`` when a text needs HF whole or in segments.

        Chunks the table lacks are tokenized by :meth:`_new_chunk_ids`, at most
        :data:`FILL_CHUNKS` at a time, and added to the table (not to the dict: lists of long
        texts have the table, single texts and short ones the dict); a text still missing then
        (a special character, a chunk too long to keep) gets :meth:`_fast_ids`.
        """
        if self._needs_whole_hf(texts):
            return None
        try:
            found = self._table.lookup(texts)
        except UnicodeEncodeError:  # a lone surrogate: the per-text path reports it
            return None
        if not found.missing:
            return found.ids, found.lengths
        kept = [chunk for chunk in found.chunks if len(chunk) <= CACHE_CHUNK_CHARS]
        for first in range(0, len(kept), FILL_CHUNKS):
            new = self._new_chunk_ids(kept[first : first + FILL_CHUNKS])
            with self._lock:
                if len(self._table) + len(new) > self._capacity:
                    self._table.clear()
                self._table.add(new)
        again: list[TokenIds] = []
        still = set(range(len(found.missing)))
        if kept:  # else nothing was added: every missing text takes the per-text path
            retried = self._table.lookup([texts[i] for i in found.missing])
            again = np.split(retried.ids, np.cumsum(retried.lengths)[:-1])
            still = set(retried.missing)
        parts = np.split(found.ids, np.cumsum(found.lengths)[:-1])
        lengths = found.lengths
        for k, i in enumerate(found.missing):
            parts[i] = (
                again[k]
                if k not in still
                else np.frombuffer(self._fast_ids(texts[i]), dtype=np.int64)
            )
            lengths[i] = len(parts[i])
        return np.concatenate(parts).astype(np.int64, copy=False), lengths

    def _cached_ids(self, texts: Sequence[str]) -> list[bytes] | None:
        """:meth:`_fast_ids` of each text, or ``None`` when one needs HF whole or in segments.

        The same steps for a whole list in one loop: the per-text checks and calls of
        :meth:`_fast_ids` cost as much as the lookups for a query-sized text. A text with a
        chunk not in the cache (new, or too long to be kept) goes to :meth:`_chunk_ids_filling`.
        """
        if self._needs_whole_hf(texts):
            return None
        deleted = self._deleted or ""
        if deleted:
            blob = "".join(texts)
            if any(char in blob for char in deleted):
                table = self._deletions
                texts = [
                    text.translate(table) if any(c in text for c in deleted) else text
                    for text in texts
                ]
        lookup, join = self._cache.__getitem__, b"".join
        parts = []
        for text in texts:
            chunks = text.split()
            try:
                parts.append(join(map(lookup, chunks)))
            except KeyError:  # separators already deleted: straight to the filling step
                parts.append(self._chunk_ids_filling(chunks))
        return parts

    def _fast_ids(self, text: str) -> bytes:
        if self._added is not None and self._added.search(text) is not None:
            return self._hf_ids([text])[0]
        if len(text) > SEGMENT_CHARS:
            return b"".join(map(self._chunk_ids, _segments(text)))
        return self._chunk_ids(text)

    def _chunk_ids(self, text: str) -> bytes:
        """Ids of a text without added tokens, as packed int64, from its chunks' cached ids."""
        deleted = self._deleted
        # a printable text has none of them (when none is printable): one check, not one each
        if deleted and (self._printable_deleted or not text.isprintable()):
            for char in deleted:
                if char in text:
                    text = text.translate(self._deletions)
                    break
        chunks = text.split()
        try:
            return b"".join(map(self._cache.__getitem__, chunks))
        except KeyError:  # a chunk not seen yet (or the cache was emptied meanwhile)
            return self._chunk_ids_filling(chunks)

    def _chunk_ids_filling(self, chunks: list[str]) -> bytes:
        known: dict[str, bytes] = {}
        missing = []
        for chunk in set(chunks):
            ids = self._cache.get(chunk)
            if ids is None:
                missing.append(chunk)
            else:
                known[chunk] = ids
        found = self._new_chunk_ids(missing)
        known.update(found)
        kept = [item for item in found.items() if len(item[0]) <= CACHE_CHUNK_CHARS]
        with self._lock:
            if len(self._cache) + len(kept) > self._capacity:
                self._cache.clear()
            self._cache.update(kept[: self._capacity])
        return b"".join(map(known.__getitem__, chunks))

    def _new_chunk_ids(self, chunks: list[str]) -> dict[str, bytes]:
        """Ids of chunks not in the cache: printable ASCII ones word by word through HF's
        WordPiece model (see the module docstring), the others from :meth:`_hf_chunk_ids`."""
        model = self._word_model
        if model is None:
            return self._hf_chunk_ids(chunks)
        found, others = {}, []
        added = self._any_added.search
        for chunk in chunks:
            if chunk.isascii() and chunk.isprintable() and added(chunk) is None:
                words = _ASCII_WORDS.findall(chunk.lower() if self._lowercase else chunk)
                found[chunk] = _pack([token.id for word in words for token in model.tokenize(word)])
            else:
                others.append(chunk)
        if others:
            found.update(self._hf_chunk_ids(others))
        return found

    def _hf_chunk_ids(self, chunks: list[str]) -> dict[str, bytes]:
        """Ids of each chunk from HF, packed as int64, from one call on the chunks joined by
        spaces: a token never spans whitespace, so each token belongs to the chunk its
        character offset falls in. One call takes about half the time of ``encode_batch``
        on a query's dozen new chunks (35 against 60 us) and two-thirds on thousands.
        """
        encoding = self._tokenizer.encode(" ".join(chunks), add_special_tokens=False)
        ids, offsets = encoding.ids, encoding.offsets
        found = {}
        token = end = 0
        for chunk in chunks:
            end += len(chunk)  # the chunk ends here; the next starts after one space
            first = token
            while token < len(ids) and offsets[token][0] < end:
                token += 1
            found[chunk] = _pack(ids[first:token])
            end += 1
        return found

    def _hf_ids(self, texts: Sequence[str]) -> list[bytes]:
        """Ids of each text from HF itself, packed as int64; long texts in segments."""
        short = [i for i, text in enumerate(texts) if len(text) <= SEGMENT_CHARS]
        out = [b""] * len(texts)
        encodings = self._tokenizer.encode_batch(
            [texts[i] for i in short], add_special_tokens=False
        )
        for i, encoding in zip(short, encodings, strict=True):
            out[i] = _pack(encoding.ids)
        for i, text in enumerate(texts):
            if len(text) > SEGMENT_CHARS:
                pieces = _segments(text) if self._segmentable else iter([text])
                out[i] = b"".join(
                    _pack(self._tokenizer.encode(piece, add_special_tokens=False).ids)
                    for piece in pieces
                )
        return out


def _pack(ids: Iterable[int]) -> bytes:
    return array("q", ids).tobytes()


def _is_segmentable(tokenizer: Tokenizer) -> bool:
    """Whether cutting a text after a space leaves its token ids unchanged."""

    def kind(component: object) -> str | None:
        return None if component is None else type(component).__name__

    added = tokenizer.get_added_tokens_decoder().values()
    return (
        kind(tokenizer.normalizer) in _SEGMENTABLE_NORMALIZERS
        and kind(tokenizer.pre_tokenizer) in _SEGMENTABLE_PRE_TOKENIZERS
        and not any(" " in token.content for token in added)
    )


def bert_wordpiece_mismatches(tokenizer: Tokenizer) -> list[str]:
    """How ``tokenizer`` differs from a BERT-style WordPiece tokenizer: a ``WordPiece`` model,
    ``BertNormalizer`` or no normalizer, ``BertPreTokenizer``.

    The one rule that the runtime's ASCII fast path, the web target's JavaScript tokenizer and
    the mobile bundle's app-side tokenizers read.

    Returns:
        One phrase per differing component (e.g. ``"model 'BPE' (needs WordPiece)"``), in
        that order; empty for a BERT-style WordPiece tokenizer.
    """
    kinds = {
        part: None if component is None else type(component).__name__
        for part, component in (
            ("model", tokenizer.model),
            ("normalizer", tokenizer.normalizer),
            ("pre-tokenizer", tokenizer.pre_tokenizer),
        )
    }
    found = []
    if kinds["model"] != "WordPiece":
        found.append(f"model {kinds['model']!r} (needs WordPiece)")
    if kinds["normalizer"] not in _SEGMENTABLE_NORMALIZERS:
        found.append(f"normalizer {kinds['normalizer']!r} (needs BertNormalizer or none)")
    if kinds["pre-tokenizer"] not in _SEGMENTABLE_PRE_TOKENIZERS:
        found.append(f"pre-tokenizer {kinds['pre-tokenizer']!r} (needs BertPreTokenizer)")
    return found


def _ascii_word_model(tokenizer: Tokenizer) -> Model | None:
    """The tokenizer's WordPiece model when ASCII chunks may skip HF's normalizer and
    pre-tokenizer (a BERT-style WordPiece tokenizer), else ``None``."""
    return None if bert_wordpiece_mismatches(tokenizer) else tokenizer.model


def _deleted_separators(tokenizer: Tokenizer) -> str | None:
    """The whitespace characters of ``str.split`` that HF deletes, asked of HF itself.

    Returns:
        Those characters, or ``None`` if an added token is matched after normalization or one
        of the characters is neither a word separator nor deleted for HF: the chunk path would
        then differ from HF.
    """
    if any(token.normalized for token in tokenizer.get_added_tokens_decoder().values()):
        return None
    deleted = []
    for char in PYTHON_WHITESPACE:
        text = f"a{char}b"
        if tokenizer.normalizer is not None:
            text = tokenizer.normalizer.normalize_str(text)
        words = [word for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(text)]
        if words == ["ab"]:
            deleted.append(char)
        elif words != ["a", "b"]:
            return None
    return "".join(deleted)


def _added_token_pattern(tokenizer: Tokenizer) -> re.Pattern[str] | None:
    """A regex that finds the added tokens ``str.split`` would cut, or ``None`` if none would."""
    added = tokenizer.get_added_tokens_decoder().values()
    cut = {token.content for token in added if any(c in token.content for c in PYTHON_WHITESPACE)}
    contents = sorted(cut, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, contents))) if contents else None


def _segments(text: str) -> Iterator[str]:
    """Cut ``text`` just after an ASCII space near every SEGMENT_CHARS characters."""
    start = 0
    while len(text) - start > SEGMENT_CHARS:
        cut = text.rfind(" ", start, start + SEGMENT_CHARS)
        if cut < 0:  # no space in the window: the word runs on, look past it
            cut = text.find(" ", start + SEGMENT_CHARS)
            if cut < 0:
                break
        yield text[start : cut + 1]
        start = cut + 1
    yield text[start:]
