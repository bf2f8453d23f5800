"""Token ids: exactly the Hugging Face tokenizer's, also when long texts are cut into segments."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from conftest import BERT_TOKENIZER
from sse_export.adversarial import adversarial_texts
from sse_onnx import tokenizer as tokenizer_module
from sse_onnx.tokenizer import TextTokenizer

# Characters that stress the BERT normaliser and pre-tokenizer around the cut points.
ALPHABET = (
    "ab cd  e\u0301\u0308 \u00e9\u00c5 東京 !?._-'\" \t\n\r\x00\x07\u200b\ufeff\u00a0\u3000"
    "\u2003 👍🏽\u200d 🦠 [UNK] [CLS] xyz0123 ###"
)


def hf_tokenizer(path: Path) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


HF_BERT = hf_tokenizer(BERT_TOKENIZER)
BERT = TextTokenizer(BERT_TOKENIZER)


def hf_ids(text: str, tokenizer: Tokenizer = HF_BERT) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False).ids)


@pytest.fixture
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokenizer_module, "SEGMENT_CHARS", 7)


def test_adversarial_ids_equal_hf(small_segments: None) -> None:
    texts = [text for _, text in adversarial_texts()]
    for text, ids in zip(texts, BERT.encode(texts), strict=True):
        assert ids.tolist() == hf_ids(text)


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=60))
def test_segmented_ids_equal_hf(text: str) -> None:
    tokenizer_module.SEGMENT_CHARS, saved = 5, tokenizer_module.SEGMENT_CHARS
    try:
        ids = BERT.encode([text])[0].tolist()
    finally:
        tokenizer_module.SEGMENT_CHARS = saved
    assert ids == hf_ids(text)


def test_other_tokenizers_are_not_segmented(tmp_path: Path, small_segments: None) -> None:
    from tokenizers import models, pre_tokenizers

    # A Metaspace tokenizer marks word starts, so cutting at spaces would change its ids.
    vocab = {"[UNK]": 0, "▁a": 1, "▁b": 2, "a": 3, "b": 4}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    text = "a b a b a b a b a b"
    assert TextTokenizer(path).encode([text])[0].tolist() == hf_ids(text, hf_tokenizer(path))
