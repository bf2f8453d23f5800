"""Text to token ids with SSE's rules: no special tokens, no truncation, no padding, [UNK] kept.

A Hugging Face ``tokenizers`` tokenizer does the work. Very long texts are cut at spaces into
segments that are tokenized one at a time, which keeps memory bounded and gives the same ids:
with a BERT normalizer (a per-character map) and BERT pre-tokenizer (which splits at every space),
no token can span a space. Tokenizers of other kinds get each text whole.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from sse_onnx.errors import ModelFormatError

__all__ = ["TextTokenizer"]

#: Texts longer than this many characters are tokenized in segments cut at spaces.
SEGMENT_CHARS = 1 << 16

_SEGMENTABLE_NORMALIZERS = {None, "BertNormalizer"}
_SEGMENTABLE_PRE_TOKENIZERS = {"BertPreTokenizer"}

TokenIds = npt.NDArray[np.int64]


class TextTokenizer:
    """Turns texts into int64 token-id arrays following the SSE rules.

    Args:
        path: A Hugging Face ``tokenizer.json``.

    Raises:
        ModelFormatError: if the file is missing or not a tokenizer.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            config = json.loads(Path(path).read_text(encoding="utf-8"))
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
        self._segmentable = _is_segmentable(config)

    def encode(self, texts: Sequence[str]) -> list[TokenIds]:
        """Token ids of each text, without special tokens and without truncation."""
        short = [i for i, text in enumerate(texts) if len(text) <= SEGMENT_CHARS]
        out: list[TokenIds] = [np.empty(0, dtype=np.int64)] * len(texts)
        encodings = self._tokenizer.encode_batch(
            [texts[i] for i in short], add_special_tokens=False
        )
        for i, encoding in zip(short, encodings, strict=True):
            out[i] = np.asarray(encoding.ids, dtype=np.int64)
        for i, text in enumerate(texts):
            if len(text) > SEGMENT_CHARS:
                out[i] = self._encode_long(text)
        return out

    def _encode_long(self, text: str) -> TokenIds:
        pieces = _segments(text) if self._segmentable else iter([text])
        return np.concatenate(
            [
                np.asarray(self._tokenizer.encode(piece, add_special_tokens=False).ids, np.int64)
                for piece in pieces
            ]
        )


def _is_segmentable(config: dict[str, object]) -> bool:
    """Whether cutting a text after a space leaves its token ids unchanged."""

    def kind(component: object) -> str | None:
        return component.get("type") if isinstance(component, dict) else None

    added = config.get("added_tokens") or []
    spaced_added = any(" " in str(token.get("content", "")) for token in added)  # type: ignore[attr-defined]
    return (
        kind(config.get("normalizer")) in _SEGMENTABLE_NORMALIZERS
        and kind(config.get("pre_tokenizer")) in _SEGMENTABLE_PRE_TOKENIZERS
        and not spaced_added
    )


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
