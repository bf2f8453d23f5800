"""SSEQ 4-bit checkpoints: decoded exactly as specified, exported to every variant.

The SSEQ folder is written by an encoder restated here from the format's description, not by
the exporter's own code.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from safetensors.numpy import save_file

from conftest import TINY_VOCAB, l2, numpy_sse, sse_arrays
from sse_export import export, load_checkpoint
from sse_onnx import CheckpointError, Encoder
from sse_onnx.folder import VARIANT_FILES

Tensors = dict[str, npt.NDArray[np.float32]]


def write_sseq(folder: Path, tokenizer: Path, tensors: Tensors) -> npt.NDArray[np.float32]:
    """Write an SSEQ folder; return the table as SSEQ decodes it."""
    table = tensors["embedding.weight"]
    scale = np.abs(table).max(axis=1) + 1e-8
    q = np.clip(np.round((table / scale[:, None] + 1) * 7.5), 0, 15).astype(np.uint8)
    packed = bytes(
        (int(row[2 * j]) << 4) | int(row[2 * j + 1]) for row in q for j in range(q.shape[1] // 2)
    )
    folder.mkdir(parents=True)
    (folder / "embedding.q4_k_m.bin").write_bytes(packed + scale.astype("<f4").tobytes())
    save_file(
        {k: v for k, v in tensors.items() if k.startswith("dyt.")},
        str(folder / "model_rest.safetensors"),
    )
    shutil.copy(tokenizer, folder / "tokenizer.json")
    return ((q / 7.5 - 1) * scale[:, None]).astype(np.float32)


@pytest.fixture
def sseq(tmp_path: Path, tiny_tokenizer: Path) -> tuple[Path, Tensors, npt.NDArray[np.float32]]:
    tensors = sse_arrays(len(TINY_VOCAB), 16, seed=5)
    decoded = write_sseq(tmp_path / "sseq", tiny_tokenizer, tensors)
    return tmp_path / "sseq", tensors, decoded


def test_sseq_table_is_decoded_as_specified(
    sseq: tuple[Path, Tensors, npt.NDArray[np.float32]],
) -> None:
    folder, tensors, decoded = sseq
    checkpoint = load_checkpoint(folder)
    assert checkpoint.source_format == "sseq"
    np.testing.assert_allclose(checkpoint.table, decoded, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(checkpoint.alpha, tensors["dyt.alpha"])
    assert set(checkpoint.source_sha256) == {
        "embedding.q4_k_m.bin",
        "model_rest.safetensors",
        "tokenizer.json",
    }


def test_sseq_exports_to_every_variant(
    tmp_path: Path, sseq: tuple[Path, Tensors, npt.NDArray[np.float32]]
) -> None:
    folder, tensors, decoded = sseq
    out = tmp_path / "out"
    result = export(folder, output=out, variants=tuple(VARIANT_FILES))
    assert all(report.passed for report in result.reports)
    texts = ["the cat sat on the mat", "static embeddings are fast!", "", "zebra 東京"]
    expected = l2(
        numpy_sse({**tensors, "embedding.weight": decoded}, folder / "tokenizer.json", texts)
    )
    for variant in VARIANT_FILES:
        got = Encoder(out, variant=variant).encode(texts)
        # int4 re-encodes an already 4-bit table: it must reproduce it, not lose more. The
        # dynamic variants have one scale for the whole table, so they lose most.
        tolerance = {
            "fp16": 1e-3,
            "int8": 1e-2,
            "int4_block": 0.1,
            "int8_dynamic": 2e-2,
            "uint8_dynamic": 2e-2,
        }.get(variant, 1e-6)
        assert np.abs(got - expected).max() <= tolerance, variant


def test_sseq_size_mismatch(
    tmp_path: Path, sseq: tuple[Path, Tensors, npt.NDArray[np.float32]]
) -> None:
    folder = sseq[0]
    table = folder / "embedding.q4_k_m.bin"
    table.write_bytes(table.read_bytes()[:-4])
    with pytest.raises(CheckpointError, match=r"embedding.q4_k_m.bin has \d+ bytes, but 32 tokens"):
        load_checkpoint(folder)


def test_sseq_missing_rest(
    tmp_path: Path, sseq: tuple[Path, Tensors, npt.NDArray[np.float32]]
) -> None:
    folder = sseq[0]
    (folder / "model_rest.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model_rest.safetensors is missing"):
        load_checkpoint(folder)


def test_sseq_bad_dyt_vector_names_the_rest_file(tmp_path: Path, tiny_tokenizer: Path) -> None:
    tensors = sse_arrays(len(TINY_VOCAB), 16, seed=5)
    tensors["dyt.beta"] = tensors["dyt.beta"][:8]
    folder = tmp_path / "short"
    write_sseq(folder, tiny_tokenizer, tensors)
    with pytest.raises(CheckpointError, match=r"model_rest\.safetensors: dyt\.beta has shape"):
        load_checkpoint(folder)
