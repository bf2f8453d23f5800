"""Golden ids and embeddings of the bundled default model (tests/golden/default_model.jsonl).

The file is written by ``python tests/golden/regenerate.py``, never by hand. A ``tokenizers``
release that changes an id, or a runtime change that moves a vector, fails here naming the text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tokenizers import Tokenizer

from sse_onnx import Encoder
from sse_onnx.encoder import CHUNK_TOKENS
from sse_onnx.tokenizer import TextTokenizer

GOLDEN = Path(__file__).resolve().parent / "golden" / "default_model.jsonl"
REGENERATE = "python tests/golden/regenerate.py"
#: Embeddings are float32 and normalised; other rounding (batch or single text) stays below.
TOLERANCE = 1e-6


def load() -> tuple[dict[str, Any], list[dict[str, Any]]]:
    header, *rows = (json.loads(line) for line in GOLDEN.read_text(encoding="utf-8").splitlines())
    return header, rows


HEADER, ROWS = load()
NAMES = [row["name"] for row in ROWS]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder()


def test_the_file_is_of_the_bundled_model(encoder: Encoder) -> None:
    entry = encoder.manifest.variants[encoder.variant]
    assert (HEADER["model_file"], HEADER["model_sha256"]) == (entry.file, entry.sha256), (
        f"the golden vectors are of another model file; run {REGENERATE} and commit the result"
    )
    assert (HEADER["variant"], HEADER["dim"]) == (encoder.variant, encoder.dim)
    assert len(ROWS) >= 20 and len(set(NAMES)) == len(NAMES)
    assert max(len(row["ids"]) for row in ROWS) > CHUNK_TOKENS  # one is embedded in chunks


@pytest.mark.parametrize("row", ROWS, ids=NAMES)
def test_token_ids(encoder: Encoder, row: dict[str, Any]) -> None:
    tokenizer_file = encoder.folder / encoder.manifest.tokenizer.file
    hf = Tokenizer.from_file(str(tokenizer_file))
    assert hf.encode(row["text"], add_special_tokens=False).ids == row["ids"], "HF tokenizers"
    assert TextTokenizer(tokenizer_file).encode_one(row["text"]).tolist() == row["ids"], "runtime"


def test_embeddings_of_one_call(encoder: Encoder) -> None:
    got = encoder.encode([row["text"] for row in ROWS])
    expected = np.array([row["embedding"] for row in ROWS], dtype=np.float32)
    worst = np.abs(got - expected).max(axis=1)
    moved = {
        name: f"{diff:.1e}" for name, diff in zip(NAMES, worst, strict=True) if diff > TOLERANCE
    }
    assert not moved, f"embeddings moved by more than {TOLERANCE} (max abs diff): {moved}"


@pytest.mark.parametrize("row", ROWS, ids=NAMES)
def test_embedding_of_each_text(encoder: Encoder, row: dict[str, Any]) -> None:
    got = encoder.encode(row["text"])
    np.testing.assert_allclose(got, row["embedding"], rtol=0, atol=TOLERANCE)
