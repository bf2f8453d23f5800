"""The bundled default: its checkpoint exports, and the runtime's bundled export is in sync."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from safetensors.numpy import load_file

from conftest import ROOT, l2, numpy_sse
from sse_export.adversarial import adversarial_texts
from sse_export.cli import main
from sse_onnx import Encoder
from sse_onnx.encoder import DEFAULT_MODEL
from sse_onnx.folder import read_manifest, sha256_file

CHECKPOINT = ROOT / "models" / "default"
TEXTS = [text for name, text in adversarial_texts() if name != "long text"]


@pytest.fixture(scope="module")
def tensors() -> dict[str, npt.NDArray[np.float32]]:
    return load_file(str(CHECKPOINT / "model.safetensors"))


def committed_sha256() -> dict[str, str]:
    """sha256 of the committed checkpoint's files an export reads, by file name."""
    return {
        name: sha256_file(CHECKPOINT / name) for name in ("model.safetensors", "tokenizer.json")
    }


def test_bundled_export_was_made_from_the_committed_checkpoint() -> None:
    assert read_manifest(DEFAULT_MODEL).source_sha256 == committed_sha256()


def int8_rows(table: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Symmetric per-row int8, written here independently of the exporter: q * max|row| / 127."""
    scale = (np.abs(table).max(axis=1) / np.float32(127)).astype(np.float32)
    safe = np.where(scale > 0, scale, np.float32(1))
    q = np.clip(np.rint(table / safe[:, None]), -127, 127)
    return (q * scale[:, None]).astype(np.float32)


def test_bundled_default_is_the_int8_export_at_256_dims(
    tensors: dict[str, npt.NDArray[np.float32]],
) -> None:
    encoder = Encoder()
    assert (encoder.dim, encoder.variant) == (256, "int8")
    fp32 = l2(numpy_sse(tensors, CHECKPOINT / "tokenizer.json", TEXTS, 256))
    int8 = {key: value[..., :256] for key, value in tensors.items()}
    int8["embedding.weight"] = int8_rows(int8["embedding.weight"])
    exact = l2(numpy_sse(int8, CHECKPOINT / "tokenizer.json", TEXTS))
    got = encoder.encode(TEXTS)
    # Exact against the int8 table, and within the int8 bound (cosine >= 0.999) of fp32.
    assert np.abs(got - exact).max() <= 1e-6
    empty = np.linalg.norm(fp32, axis=1) == 0  # empty texts: beta * tanh(0) = 0 for this model
    assert np.all(got[empty] == 0)
    assert (got * fp32).sum(axis=1)[~empty].min() >= 0.999


def test_sse_export_without_model_exports_the_default(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["--dim", "256", "--output", str(out), "--quiet"]) == 0
    assert Encoder(out).encode(["hello world"]).shape == (1, 256)
    # What the exporter read, hashed as it read it: the committed checkpoint, wherever
    # default_checkpoint() found it (models/default in a checkout, a wheel's own copy).
    assert read_manifest(out).source_sha256 == committed_sha256()


def test_related_texts_are_closer_than_unrelated_ones() -> None:
    # A sanity check of the distilled model, not a benchmark (see the model card).
    encoder = Encoder()
    a, b, c = encoder.encode(
        ["a cat sat on the mat", "a kitten rested on a rug", "quarterly tax revenue rose"]
    )
    assert a @ b > a @ c
