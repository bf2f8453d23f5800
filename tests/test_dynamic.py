"""onnxruntime dynamic int8 through optimum's presets: distinct files only, decoded exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from conftest import l2, numpy_sse
from sse_export import export
from sse_export.dynamic import IDENTICAL_PRESETS, PRESETS, dequantized_table, quantize_with_preset
from sse_export.graph import build_graph
from sse_onnx import Encoder

pytest.importorskip("optimum.onnxruntime", reason="dynamic variants need optimum[onnxruntime]")

Tensors = dict[str, npt.NDArray[np.float32]]


@pytest.fixture(scope="module")
def fp32_model(bert_tensors: Tensors) -> object:
    t = {k: v[..., :64] for k, v in bert_tensors.items()}
    return build_graph(t["embedding.weight"], t["dyt.alpha"], t["dyt.beta"], t["dyt.bias"])


def test_presets_reduce_to_the_published_variants(fp32_model: object) -> None:
    files = {
        preset: quantize_with_preset(fp32_model, preset).SerializeToString()  # type: ignore[arg-type]
        for preset in ("arm64", "avx2", "avx512", "avx512_vnni")
    }
    assert len({files[p] for p in IDENTICAL_PRESETS}) == 1
    assert files["avx2"] != files["arm64"]
    assert set(PRESETS.values()) == {"avx2", IDENTICAL_PRESETS[-1]}


def test_quantizing_prints_no_warning(
    fp32_model: object, capfd: pytest.CaptureFixture[str]
) -> None:
    """optimum's "could not load the config" warning (its logger writes to stderr itself) is
    noise for a graph never loaded as an ORTModel; a quiet export printed it."""
    quantize_with_preset(fp32_model, "avx2")  # type: ignore[arg-type]
    assert "Could not load the config" not in capfd.readouterr().err


def test_one_scale_for_the_whole_table(fp32_model: object, bert_tensors: Tensors) -> None:
    model = quantize_with_preset(fp32_model, "avx512_vnni")  # type: ignore[arg-type]
    table = bert_tensors["embedding.weight"][:, :64]
    decoded = dequantized_table(model)
    step = (table.max() - min(table.min(), 0)) / 255
    assert decoded.shape == table.shape
    assert np.abs(decoded - table).max() <= step / 2 + 1e-6


def test_dynamic_variants_export_and_validate(
    tmp_path: Path, bert_checkpoint: Path, bert_tensors: Tensors
) -> None:
    result = export(bert_checkpoint, output=tmp_path, dim=64, variants=list(PRESETS))
    assert all(report.passed for report in result.reports)
    texts = ["static embeddings are fast", "the cat sat on the mat", "東京 and 🦠"]
    exact = l2(numpy_sse(bert_tensors, bert_checkpoint / "tokenizer.json", texts, 64))
    for variant in PRESETS:
        got = Encoder(tmp_path, variant=variant).encode(texts)
        assert (got * exact).sum(axis=1).min() > 0.99
