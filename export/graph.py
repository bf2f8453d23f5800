"""Building the ONNX graph of an SSE model from its arrays.

The EmbeddingBag becomes a ``Gather`` of padded ids plus a masked mean (pads excluded, an
all-pad row is the empty bag), SeparableDyT becomes ``Mul``/``Add``/``Tanh``/``Mul``. No
``Loop`` or ``If``: every op is a plain elementwise or reduce op that every onnxruntime build
(desktop, mobile, web) has.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from sse_onnx import format as fmt

__all__ = ["IR_VERSION", "OPSET", "build_graph"]

#: Opset 17 and IR version 8 load in onnxruntime 1.14 and newer, including mobile builds.
OPSET = 17
IR_VERSION = 8

Array = npt.NDArray[np.float32]


def build_graph(
    table: Array,
    alpha: Array,
    beta: Array,
    bias: Array,
    *,
    variant: str = "fp32",
    name: str = "sse",
    producer_version: str = "",
) -> onnx.ModelProto:
    """The ONNX model of ``beta * tanh(alpha * mean(table[ids]) + bias)``.

    Args:
        table: ``[vocab, dim]`` float32 rows (already truncated to the exported dim).
        alpha, beta, bias: ``[dim]`` SeparableDyT vectors.
        variant: ``"fp32"`` stores the table as is; ``"fp16"`` stores it in half precision and
            casts gathered rows back to float32.
        name: Graph name, recorded in the model.
        producer_version: Version of the exporter, recorded in the model.

    Returns:
        A checked model with the inputs and outputs named in :mod:`sse_onnx.format`.
    """
    if variant not in ("fp32", "fp16"):
        raise ValueError(f"variant={variant!r} has no graph builder; choose 'fp32' or 'fp16'.")
    dim = table.shape[1]
    stored = table.astype(np.float16 if variant == "fp16" else np.float32)
    initializers = [
        numpy_helper.from_array(stored, "table"),
        numpy_helper.from_array(alpha.astype(np.float32), "alpha"),
        numpy_helper.from_array(beta.astype(np.float32), "beta"),
        numpy_helper.from_array(bias.astype(np.float32), "bias"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_1"),
        numpy_helper.from_array(np.array([2], dtype=np.int64), "axis_2"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
    ]
    gathered = "rows_stored" if variant == "fp16" else "rows"
    nodes = [
        helper.make_node("Gather", ["table", fmt.INPUT_IDS], [gathered], axis=0),
        *(
            [helper.make_node("Cast", ["rows_stored"], ["rows"], to=TensorProto.FLOAT)]
            if variant == "fp16"
            else []
        ),
        helper.make_node("Cast", [fmt.ATTENTION_MASK], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask", "axis_2"], ["mask_3d"]),
        helper.make_node("Mul", ["rows", "mask_3d"], ["masked_rows"]),
        helper.make_node("ReduceSum", ["masked_rows", "axis_1"], [fmt.TOKEN_SUM], keepdims=0),
        helper.make_node("ReduceSum", ["mask", "axis_1"], ["count"], keepdims=1),
        # An empty bag has count 0 and sum 0: dividing by max(count, 1) gives EmbeddingBag's zero.
        helper.make_node("Max", ["count", "one"], ["count_safe"]),
        helper.make_node("Div", [fmt.TOKEN_SUM, "count_safe"], ["mean"]),
        helper.make_node("Mul", ["mean", "alpha"], ["scaled"]),
        helper.make_node("Add", ["scaled", "bias"], ["shifted"]),
        helper.make_node("Tanh", ["shifted"], ["squashed"]),
        helper.make_node("Mul", ["squashed", "beta"], [fmt.SENTENCE_EMBEDDING]),
        *(
            helper.make_node("Identity", [source], [output])
            for source, output in zip(("alpha", "beta", "bias"), fmt.DYT_OUTPUTS, strict=True)
        ),
    ]
    ids_shape = ["batch", "sequence"]
    graph = helper.make_graph(
        nodes,
        name,
        inputs=[
            helper.make_tensor_value_info(fmt.INPUT_IDS, TensorProto.INT64, ids_shape),
            helper.make_tensor_value_info(fmt.ATTENTION_MASK, TensorProto.INT64, ids_shape),
        ],
        outputs=[
            helper.make_tensor_value_info(
                fmt.SENTENCE_EMBEDDING, TensorProto.FLOAT, ["batch", dim]
            ),
            helper.make_tensor_value_info(fmt.TOKEN_SUM, TensorProto.FLOAT, ["batch", dim]),
            *(
                helper.make_tensor_value_info(out, TensorProto.FLOAT, [dim])
                for out in fmt.DYT_OUTPUTS
            ),
        ],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="sse-export",
        producer_version=producer_version,
        doc_string="SSE: beta * tanh(alpha * masked_mean(table[input_ids]) + bias)",
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model
