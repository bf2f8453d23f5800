"""onnxruntime's dynamic int8 quantization, driven by optimum's quantization presets.

``quantize_dynamic`` treats the Gather table as an activation: one uint8 scale and zero point
for the whole table, whatever the preset. A few rows with outlying norms then set the scale
for all, which is why the per-row ``int8`` variant exists; this one is kept so that users can
compare. optimum's four CPU presets (``AutoQuantizationConfig.arm64``, ``avx2``, ``avx512``,
``avx512_vnni``) reduce, when only the Gather is quantized (as here), to two distinct
files: ``avx2`` (QUInt8 weights) and the three others (QInt8 weights), byte-identical to each
other. Only the distinct files are published, as the variants in :data:`PRESETS`.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx

__all__ = ["IDENTICAL_PRESETS", "PRESETS", "dequantized_table", "quantize_with_preset"]

#: Published dynamic variants and the optimum preset each is made with.
PRESETS: dict[str, str] = {"int8_dynamic": "avx512_vnni", "uint8_dynamic": "avx2"}
#: Presets that give byte-identical files for an SSE graph (checked by the test suite).
IDENTICAL_PRESETS = ("arm64", "avx512", "avx512_vnni")


def quantize_with_preset(model: onnx.ModelProto, preset: str) -> onnx.ModelProto:
    """Quantize an fp32 SSE graph with ``optimum``'s ``AutoQuantizationConfig.<preset>``.

    Args:
        model: The fp32 graph from :func:`sse_export.graph.build_graph`.
        preset: ``"arm64"``, ``"avx2"``, ``"avx512"`` or ``"avx512_vnni"``.

    Returns:
        The quantized model (Gather of a uint8/int8 table, then DequantizeLinear).

    Raises:
        ImportError: if optimum's onnxruntime support is not installed.
    """
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    # Only the table's Gather: the masked-sum MatMul multiplies activations, and quantizing it
    # would add an error that no stored table explains.
    config = getattr(AutoQuantizationConfig, preset)(
        is_static=False, per_channel=False, operators_to_quantize=["Gather"]
    )
    with tempfile.TemporaryDirectory(prefix="sse_dynamic_") as work:
        source, target = Path(work) / "fp32", Path(work) / "quantized"
        source.mkdir()
        onnx.save_model(model, source / "model.onnx")
        # optimum warns that it finds no transformers config beside the graph: none is needed
        # (the result is never loaded as an ORTModel), so the warning would only be noise.
        with _quiet("optimum.onnxruntime.quantization"):
            quantizer = ORTQuantizer.from_pretrained(source, file_name="model.onnx")
        written = quantizer.quantize(save_dir=target, quantization_config=config)
        return onnx.load_model(Path(written) / "model_quantized.onnx")


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    """The logger ``name`` at ERROR for the duration."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def dequantized_table(model: onnx.ModelProto) -> npt.NDArray[np.float32]:
    """The table a dynamically quantized graph stores, decoded: ``(q - zero_point) * scale``."""
    from onnx import numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    produced_by = {output: node for node in model.graph.node for output in node.output}
    for node in model.graph.node:
        if node.op_type != "DequantizeLinear":
            continue
        gather = produced_by.get(node.input[0])
        if gather is None or gather.op_type != "Gather" or gather.input[0] not in initializers:
            continue
        q = numpy_helper.to_array(initializers[gather.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(initializers[node.input[1]]).astype(np.float32)
        zero = numpy_helper.to_array(initializers[node.input[2]]).astype(np.float32)
        table: npt.NDArray[np.float32] = ((q - zero) * scale).astype(np.float32)
        return table
    raise ValueError("The model has no Gather of a quantized table followed by DequantizeLinear.")
