"""Three-way parity: independent numpy reference, PyTorch reference, and the ONNX runtime."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from tokenizers import Tokenizer

from conftest import l2, numpy_sse, stored_as
from sse_export import load_checkpoint
from sse_export.adversarial import LONG_TEXT_TOKENS, adversarial_texts
from sse_export.reference import SSE
from sse_onnx import Encoder

TEXTS = [text for _, text in adversarial_texts()]
NAMES = [name for name, _ in adversarial_texts()]
LONG = np.array([name == "long text" for name in NAMES])


@pytest.mark.parametrize("dim", [None, 256, 64, 1])
def test_runtime_torch_numpy_agree_on_adversarial_set(
    dim: int | None,
    bert_checkpoint: Path,
    bert_tensors: dict[str, npt.NDArray[np.float32]],
    exported: Callable[..., Path],
) -> None:
    folder = exported(bert_checkpoint, dim)
    expected = l2(numpy_sse(bert_tensors, bert_checkpoint / "tokenizer.json", TEXTS, dim))

    runtime = Encoder(folder).encode(TEXTS)
    tokenizer = Tokenizer.from_file(str(bert_checkpoint / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    ids = [enc.ids for enc in tokenizer.encode_batch(TEXTS, add_special_tokens=False)]
    torch_full = SSE.from_checkpoint(load_checkpoint(bert_checkpoint)).embed(ids)
    torch_out = l2(torch_full[:, :dim] if dim else torch_full)

    assert runtime.shape == (len(TEXTS), dim or 300)
    for name, candidate in (("runtime", runtime), ("torch", torch_out)):
        diff = np.abs(candidate - expected).max(axis=1)
        assert diff[~LONG].max() <= 1e-6, (name, dict(zip(NAMES, diff, strict=True)))
        assert diff[LONG].max() <= 1e-4, (name, diff[LONG])
    assert np.abs(runtime - torch_out)[~LONG].max() <= 1e-6


def test_long_text_really_is_long(bert_checkpoint: Path) -> None:
    tok = Tokenizer.from_file(str(bert_checkpoint / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    long_text = TEXTS[NAMES.index("long text")]
    assert len(tok.encode(long_text, add_special_tokens=False).ids) == LONG_TEXT_TOKENS


def test_empty_text_is_beta_tanh_bias(
    tiny_checkpoint: Path,
    tiny_tensors: dict[str, npt.NDArray[np.float32]],
    exported: Callable[..., Path],
) -> None:
    encoder = Encoder(exported(tiny_checkpoint))
    expected = tiny_tensors["dyt.beta"] * np.tanh(tiny_tensors["dyt.bias"])
    for empty in ("", "   ", "\t\n", "\x00\x07"):
        raw = encoder.encode(empty, normalize_embeddings=False)
        np.testing.assert_allclose(raw, expected, rtol=0, atol=1e-6)


def test_unknown_tokens_stay_in_the_mean(
    tiny_checkpoint: Path,
    tiny_tensors: dict[str, npt.NDArray[np.float32]],
    exported: Callable[..., Path],
) -> None:
    encoder = Encoder(exported(tiny_checkpoint))
    table = tiny_tensors["embedding.weight"].astype(np.float64)
    alpha, beta, bias = (tiny_tensors[k] for k in ("dyt.alpha", "dyt.beta", "dyt.bias"))
    # "cat zebra" -> [cat, [UNK]]: the mean must include the [UNK] row (id 1).
    expected = beta * np.tanh(alpha * (table[6] + table[1]) / 2 + bias)
    np.testing.assert_allclose(
        encoder.encode("cat zebra", normalize_embeddings=False), expected, atol=1e-6
    )


@pytest.mark.parametrize("batch_size", [1, 2, 3, 32, 1000])
def test_batch_size_and_order_do_not_change_results(
    batch_size: int,
    tiny_checkpoint: Path,
    tiny_tensors: dict[str, npt.NDArray[np.float32]],
    exported: Callable[..., Path],
) -> None:
    rng = np.random.default_rng(batch_size)
    words = ["the", "cat", "sat", "on", "mat", "embeddings", "fast", "!", "zebra", "東京"]
    texts = [" ".join(rng.choice(words, size=rng.integers(0, 40))) for _ in range(57)]
    expected = l2(numpy_sse(tiny_tensors, tiny_checkpoint / "tokenizer.json", texts))
    got = Encoder(exported(tiny_checkpoint)).encode(texts, batch_size=batch_size)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_chunked_long_texts_equal_the_reference(
    monkeypatch: pytest.MonkeyPatch,
    tiny_checkpoint: Path,
    tiny_tensors: dict[str, npt.NDArray[np.float32]],
    exported: Callable[..., Path],
) -> None:
    from sse_onnx import encoder as encoder_module

    # Shrink the chunk so ordinary texts take the chunked path, mixed with short ones.
    monkeypatch.setattr(encoder_module, "CHUNK_TOKENS", 4)
    monkeypatch.setattr(encoder_module, "TOKEN_BUDGET", 12)
    texts = ["the cat sat on the mat " * k for k in (0, 1, 3, 10)] + ["dog", "a b c a b c a"]
    expected = l2(numpy_sse(tiny_tensors, tiny_checkpoint / "tokenizer.json", texts))
    got = Encoder(exported(tiny_checkpoint)).encode(texts, batch_size=2)
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_threads_and_blocks_do_not_change_results(
    threads: int,
    monkeypatch: pytest.MonkeyPatch,
    tiny_checkpoint: Path,
    tiny_tensors: dict[str, npt.NDArray[np.float32]],
    exported: Callable[..., Path],
) -> None:
    from sse_onnx import encoder as encoder_module
    from sse_onnx import tokenizer as tokenizer_module

    # Small blocks so that a call of 200 texts is shared by the threads, each block of 16
    # short texts tokenized in the chunk table.
    monkeypatch.setattr(tokenizer_module, "TABLE_CHARS", 0)
    monkeypatch.setattr(encoder_module, "BLOCK_TEXTS", 16)
    monkeypatch.setattr(encoder_module, "PARALLEL_TEXTS", 32)
    monkeypatch.setattr(encoder_module, "CHUNK_TOKENS", 16)  # some texts take the chunked path
    monkeypatch.setattr(encoder_module, "TOKEN_BUDGET", 48)
    rng = np.random.default_rng(threads)
    words = ["the", "cat", "sat", "on", "mat", "embeddings", "fast", "!", "zebra", "東京"]
    texts = [" ".join(rng.choice(words, size=rng.integers(0, 40))) for _ in range(200)]
    expected = l2(numpy_sse(tiny_tensors, tiny_checkpoint / "tokenizer.json", texts))
    folder = exported(tiny_checkpoint)
    got = Encoder(folder, threads=threads).encode(texts, batch_size=8)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_array_equal(got, Encoder(folder, threads=1).encode(texts, batch_size=8))
    singles = np.stack([Encoder(folder, threads=threads).encode(text) for text in texts[:20]])
    np.testing.assert_array_equal(singles, got[:20])


@pytest.mark.parametrize(
    ("variant", "min_cosine"),
    [("fp32", 0.999999), ("fp16", 0.99999), ("int8", 0.999), ("int4", 0.99)],
)
@pytest.mark.parametrize("dim", [64, 33])
def test_variants_follow_their_stored_table(
    variant: str,
    min_cosine: float,
    dim: int,
    bert_checkpoint: Path,
    bert_tensors: dict[str, npt.NDArray[np.float32]],
    exported: Callable[..., Path],
) -> None:
    folder = exported(bert_checkpoint, dim, ("fp32", "fp16", "int8", "int4", "int4_block"))
    short = [t for t, long in zip(TEXTS, LONG, strict=True) if not long]
    # Quantization applies to the exported columns, so the reference slices first.
    sliced = {k: v[..., :dim] for k, v in bert_tensors.items()}
    stored = {**sliced, "embedding.weight": stored_as(variant, sliced["embedding.weight"])}
    got = Encoder(folder, variant=variant).encode(short)
    expected = l2(numpy_sse(stored, bert_checkpoint / "tokenizer.json", short))
    assert np.abs(got - expected).max() <= 1e-6
    exact = l2(numpy_sse(sliced, bert_checkpoint / "tokenizer.json", short))
    nonempty = np.linalg.norm(exact, axis=1) > 0
    assert (got * exact).sum(axis=1)[nonempty].min() >= min_cosine


@pytest.mark.parametrize("variant", ["fp32", "fp16", "int8", "int4", "int4_block"])
def test_graphs_take_zero_length_ids(
    variant: str,
    bert_checkpoint: Path,
    bert_tensors: dict[str, npt.NDArray[np.float32]],
    exported: Callable[..., Path],
) -> None:
    """A [batch, 0] call, as an app may send for an empty text, is the empty bag."""
    import onnxruntime as ort

    from sse_onnx import folder as fmt

    folder = exported(bert_checkpoint, 64, ("fp32", "fp16", "int8", "int4", "int4_block"))
    model = folder / fmt.read_manifest(folder).variants[variant].file
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    ids = np.zeros((2, 0), dtype=np.int64)
    (got,) = session.run([fmt.SENTENCE_EMBEDDING], {fmt.INPUT_IDS: ids, fmt.ATTENTION_MASK: ids})
    beta, bias = bert_tensors["dyt.beta"][:64], bert_tensors["dyt.bias"][:64]
    np.testing.assert_allclose(got, np.tile(beta * np.tanh(bias), (2, 1)), rtol=0, atol=1e-6)
