"""One rule says which tokenizers are BERT-style WordPiece: the runtime's fast path, the web
target's JavaScript tokenizer and the mobile bundle's app-side tokenizers all read it."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

from conftest import TINY_VOCAB, sse_arrays, write_checkpoint, write_tiny_tokenizer
from sse_onnx import folder as fmt
from sse_onnx.tokenizer import bert_wordpiece_mismatches

pytest.importorskip("torch", reason="the web and mobile targets need the exporter")
from sse_export import export, mobile, web

CHANGES: list[tuple[dict[str, object], str | None]] = [
    ({}, None),
    ({"normalizer": None}, None),
    ({"model": models.BPE()}, "model 'BPE' (needs WordPiece)"),
    ({"normalizer": normalizers.Lowercase()}, "normalizer 'Lowercase' (needs BertNormalizer"),
    ({"pre_tokenizer": pre_tokenizers.Whitespace()}, "pre-tokenizer 'Whitespace' (needs Bert"),
    ({"pre_tokenizer": None}, "pre-tokenizer None (needs BertPreTokenizer)"),
]


def tiny_variant(path: Path, change: dict[str, object]) -> Path:
    tokenizer = Tokenizer.from_file(str(write_tiny_tokenizer(path)))
    for attribute, value in change.items():
        setattr(tokenizer, attribute, value)
    tokenizer.save(str(path))
    return path


@pytest.mark.parametrize(("change", "mismatch"), CHANGES)
def test_the_runtime_web_and_mobile_decide_alike(
    tmp_path: Path, change: dict[str, object], mismatch: str | None
) -> None:
    path = tiny_variant(tmp_path / "tokenizer.json", change)
    found = bert_wordpiece_mismatches(Tokenizer.from_file(str(path)))
    if mismatch is None:
        assert found == []
        web.web_tokenizer(path)
        mobile._vocabulary(path)
        return
    assert len(found) == 1
    assert found[0].startswith(mismatch)
    with pytest.raises(ValueError, match="restates BERT-style tokenizers only"):
        web.web_tokenizer(path)
    with pytest.raises(ValueError, match="a mobile bundle is made for WordPiece"):
        mobile._vocabulary(path)


def test_mobile_refuses_a_wordpiece_model_without_bert_pre_tokenization(tmp_path: Path) -> None:
    # It keeps "?!" one word where the app-side BERT tokenizers cut each punctuation mark.
    path = tiny_variant(tmp_path / "tokenizer.json", {"pre_tokenizer": pre_tokenizers.Whitespace()})
    checkpoint = write_checkpoint(tmp_path / "ckpt", path, sse_arrays(len(TINY_VOCAB), 8, seed=3))
    with pytest.raises(ValueError, match=r"pre-tokenizer 'Whitespace' \(needs BertPreTokenizer\)"):
        export(checkpoint, output=tmp_path / "bundle", report=False, target="mobile")
    assert not (tmp_path / "bundle" / fmt.MANIFEST_FILE).exists()
