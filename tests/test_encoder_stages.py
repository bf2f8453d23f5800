"""The public seam that benchmarks measure through: ``Encoder.tokenize``/``plan``/``run`` and the
``tokenizer``, ``session`` and ``graph_runner`` properties."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from sse_onnx import Encoder
from sse_onnx import folder as fmt
from sse_onnx.embeddings import normalize_in_place
from sse_onnx.encoder import BLOCK_TEXTS, CHUNK_TOKENS

TEXTS = ["", "the cat", "dog " * (CHUNK_TOKENS + 10), "\u3000 a\x0bb \x85", "a b c d e f"]


@pytest.fixture(scope="module")
def folder(tiny_checkpoint: Path, exported: Callable[..., Path]) -> Path:
    return exported(tiny_checkpoint, None, ("fp32",))


@pytest.fixture(scope="module", params=["tiny", "default"])
def encoder(request: pytest.FixtureRequest, folder: Path) -> Encoder:
    return Encoder(folder if request.param == "tiny" else None, threads=1)


def staged(encoder: Encoder, texts: list[str], batch_size: int) -> npt.NDArray[np.float32]:
    """``encode(texts)`` as its stages: tokenize, plan and run each block, then normalise."""
    out = np.empty((len(texts), encoder.dim), dtype=np.float32)
    for start in range(0, len(texts), BLOCK_TEXTS):
        plan = encoder.plan(*encoder.tokenize(texts[start : start + BLOCK_TEXTS]), batch_size)
        encoder.run(plan, out[start : start + plan.texts])
    if encoder.manifest.pooling.normalize:
        normalize_in_place(out)
    normalize_in_place(out)
    return out


@pytest.mark.parametrize("batch_size", [1, 32])
def test_stages_compose_to_encode(encoder: Encoder, batch_size: int) -> None:
    texts = [f"{TEXTS[i % len(TEXTS)]} {i}" for i in range(2 * BLOCK_TEXTS + 7)]
    np.testing.assert_array_equal(
        staged(encoder, texts, batch_size), encoder.encode(texts, batch_size=batch_size)
    )


def test_one_text_and_an_empty_one(encoder: Encoder) -> None:
    for texts in (["the cat"], [""], TEXTS):
        np.testing.assert_array_equal(staged(encoder, texts, 32), encoder.encode(texts))


def test_plan_sets_long_texts_apart(encoder: Encoder) -> None:
    plan = encoder.plan(*encoder.tokenize(TEXTS), 32)
    assert plan.texts == len(TEXTS)
    assert [row for row, _ in plan.long] == [2]
    assert sorted(int(r) for rows, _, _ in plan.batches for r in rows) == [0, 1, 3, 4]


def test_stage_arguments_are_checked(encoder: Encoder) -> None:
    with pytest.raises(ValueError, match=f"at most {BLOCK_TEXTS} texts"):
        encoder.tokenize(["a"] * (BLOCK_TEXTS + 1))
    flat, lengths = encoder.tokenize(["a", "b"])
    with pytest.raises(ValueError, match="batch_size=0 must be at least 1"):
        encoder.plan(flat, lengths, 0)
    plan = encoder.plan(flat, lengths)
    with pytest.raises(ValueError, match=rf"pass a float32 array of shape \(2, {encoder.dim}\)"):
        encoder.run(plan, np.empty((3, encoder.dim), dtype=np.float32))
    with pytest.raises(ValueError, match="float32"):
        encoder.run(plan, np.empty((2, encoder.dim), dtype=np.float64))


def test_tokenizer_and_session_are_what_encode_uses(encoder: Encoder) -> None:
    text = "the cat sat"
    ids = encoder.tokenizer.encode_one(text)[None]
    (row,) = encoder.session.run(
        [fmt.SENTENCE_EMBEDDING], {fmt.INPUT_IDS: ids, fmt.ATTENTION_MASK: np.ones_like(ids)}
    )[0]
    if encoder.manifest.pooling.normalize:
        row = row / np.linalg.norm(row)
    np.testing.assert_array_equal(row, encoder.encode(text, normalize_embeddings=False))


def test_graph_runner_sees_every_graph_call(folder: Path) -> None:
    encoder = Encoder(folder, threads=1)
    expected = encoder.encode(TEXTS)
    calls: list[list[str]] = []
    inner = encoder.graph_runner

    def counting(outputs: list[str], feeds: dict[str, Any]) -> list[Any]:
        calls.append(outputs)
        return inner(outputs, feeds)

    encoder.graph_runner = counting
    np.testing.assert_array_equal(encoder.encode(TEXTS), expected)
    assert [fmt.SENTENCE_EMBEDDING] in calls and [fmt.TOKEN_SUM] in calls


def test_a_shared_tokenizer_is_used(folder: Path) -> None:
    first, second = Encoder(folder, threads=1), Encoder(folder, threads=1)
    expected = second.encode(TEXTS)
    second.tokenizer = first.tokenizer
    assert second.tokenizer is first.tokenizer
    np.testing.assert_array_equal(second.encode(TEXTS), expected)
    with pytest.raises(ValueError, match="share a tokenizer among encoders of one model"):
        second.tokenizer = Encoder(threads=1).tokenizer
