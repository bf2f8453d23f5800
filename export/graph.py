"""Building the ONNX graph of a static-embedding model from its arrays.

The EmbeddingBag becomes a ``Gather`` of padded ids plus a masked mean (pads excluded, an
all-pad row is the empty bag), SeparableDyT becomes ``Mul``/``Add``/``Tanh``/``Mul``; families
without a head return the mean itself. Ids a family leaves out of the mean (Model2Vec's
unknown token) are masked like pads. No ``Loop`` or ``If``: every op is a plain elementwise,
reduce or ``MatMul`` op that every onnxruntime build (desktop, mobile, web) has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from sse_export.quantize import BLOCK, encode_blocks4, encode_int8_rows, encode_sseq
from sse_onnx import folder as fmt

__all__ = ["GRAPH_VARIANTS", "IR_VERSION", "OPSET", "build_graph"]

#: Opset 17 and IR version 8 load in onnxruntime 1.14 and newer, including mobile builds.
OPSET = 17
IR_VERSION = 8

Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class _Lookup:
    """Nodes that turn ``input_ids`` into float32 ``rows`` [batch, sequence, dim].

    A quantized table yields rows up to a per-token affine map, ``w = rows * scale + shift``;
    ``scale`` and ``shift`` ([batch, sequence]) are then folded into the masked sum, which is
    cheaper than decoding every value.
    """

    nodes: list[onnx.NodeProto]
    initializers: list[onnx.TensorProto]
    scale: str | None = None
    shift: str | None = None
    domains: tuple[str, ...] = ()


def _const(value: npt.ArrayLike, name: str, dtype: type = np.int64) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _lookup_float(table: Array, dtype: type) -> _Lookup:
    """fp32, or fp16 storage cast back to float32 after the Gather."""
    if dtype is np.float32:
        return _Lookup(
            [helper.make_node("Gather", ["table", fmt.INPUT_IDS], ["rows"], axis=0)],
            [numpy_helper.from_array(table.astype(np.float32), "table")],
        )
    return _Lookup(
        [
            helper.make_node("Gather", ["table", fmt.INPUT_IDS], ["rows_half"], axis=0),
            helper.make_node("Cast", ["rows_half"], ["rows"], to=TensorProto.FLOAT),
        ],
        [numpy_helper.from_array(table.astype(dtype), "table")],
    )


def _lookup_int8(table: Array) -> _Lookup:
    """Symmetric int8 rows times a per-row scale."""
    q, scale = encode_int8_rows(table)
    return _Lookup(
        [
            helper.make_node("Gather", ["table_int8", fmt.INPUT_IDS], ["rows_int8"], axis=0),
            helper.make_node("Cast", ["rows_int8"], ["rows"], to=TensorProto.FLOAT),
            helper.make_node("Gather", ["row_scales", fmt.INPUT_IDS], ["token_scale"], axis=0),
        ],
        [numpy_helper.from_array(q, "table_int8"), numpy_helper.from_array(scale, "row_scales")],
        scale="token_scale",
    )


def _lookup_int4(table: Array) -> _Lookup:
    """SSEQ 4-bit rows decoded with standard ops: ``w = q * (s / 7.5) - s``."""
    packed, scale = encode_sseq(table)
    dim = table.shape[1]
    nodes = [
        helper.make_node("Gather", ["table_int4", fmt.INPUT_IDS], ["packed"], axis=0),
        helper.make_node("BitShift", ["packed", "four"], ["high"], direction="RIGHT"),
        helper.make_node("BitShift", ["high", "four"], ["high_back"], direction="LEFT"),
        helper.make_node("Sub", ["packed", "high_back"], ["low"]),
        helper.make_node("Unsqueeze", ["high", "axis_3"], ["high_4d"]),
        helper.make_node("Unsqueeze", ["low", "axis_3"], ["low_4d"]),
        # Even columns sit in the high nibble: interleave (high, low) along a new last axis.
        helper.make_node("Concat", ["high_4d", "low_4d"], ["pairs"], axis=3),
        # [batch, length, 2 * packed columns], spelled out so that a length of 0 reshapes too.
        helper.make_node("Shape", [fmt.INPUT_IDS], ["ids_shape"]),
        helper.make_node("Concat", ["ids_shape", "nibble_columns"], ["rows_shape"], axis=0),
        helper.make_node("Reshape", ["pairs", "rows_shape"], ["nibbles_padded"]),
        helper.make_node("Slice", ["nibbles_padded", "zero", "dim", "axis_2"], ["nibbles"]),
        helper.make_node("Cast", ["nibbles"], ["rows"], to=TensorProto.FLOAT),
        helper.make_node("Gather", ["row_scales", fmt.INPUT_IDS], ["token_peak"], axis=0),
        helper.make_node("Mul", ["token_peak", "inv_zero_point"], ["token_scale"]),
        helper.make_node("Neg", ["token_peak"], ["token_shift"]),
    ]
    initializers = [
        numpy_helper.from_array(packed, "table_int4"),
        numpy_helper.from_array(scale, "row_scales"),
        _const(4, "four", np.uint8),
        _const([3], "axis_3"),
        _const([2 * packed.shape[1]], "nibble_columns"),
        _const([0], "zero"),
        _const([dim], "dim"),
        _const([2], "axis_2"),
        _const(1 / 7.5, "inv_zero_point", np.float32),
    ]
    return _Lookup(nodes, initializers, scale="token_scale", shift="token_shift")


def _lookup_int4_block(table: Array) -> _Lookup:
    """4-bit blocks gathered and decoded by onnxruntime's ``GatherBlockQuantized`` contrib op."""
    packed, scales = encode_blocks4(table, BLOCK)
    dim = table.shape[1]
    return _Lookup(
        [
            helper.make_node(
                "GatherBlockQuantized",
                ["table_int4", fmt.INPUT_IDS, "block_scales"],
                ["rows_padded"],
                domain="com.microsoft",
                gather_axis=0,
                quantize_axis=1,
                block_size=BLOCK,
                bits=4,
            ),
            helper.make_node("Slice", ["rows_padded", "zero", "dim", "axis_2"], ["rows"]),
        ],
        [
            numpy_helper.from_array(packed, "table_int4"),
            numpy_helper.from_array(scales, "block_scales"),
            _const([0], "zero"),
            _const([dim], "dim"),
            _const([2], "axis_2"),
        ],
        domains=("com.microsoft",),
    )


def _mask_nodes(
    skip_token_ids: Sequence[int],
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """Nodes and constants of ``mask`` (float [batch, sequence]): 1 where a token counts, 0 at
    pads and skipped ids."""
    if not skip_token_ids:
        return [helper.make_node("Cast", [fmt.ATTENTION_MASK], ["mask"], to=TensorProto.FLOAT)], []
    # ids [batch, sequence, 1] == skip_ids [k] -> [batch, sequence, k]; the skip ids are
    # distinct, so at most one matches and the sum over k is 1 exactly for a skipped id.
    nodes = [
        helper.make_node("Unsqueeze", [fmt.INPUT_IDS, "axis_minus_1"], ["ids_3d"]),
        helper.make_node("Equal", ["ids_3d", "skip_ids"], ["is_skipped_each"]),
        helper.make_node("Cast", ["is_skipped_each"], ["skipped_each"], to=TensorProto.INT64),
        helper.make_node("ReduceSum", ["skipped_each", "axis_minus_1"], ["skipped"], keepdims=0),
        helper.make_node("Sub", ["one_int", "skipped"], ["kept"]),
        helper.make_node("Mul", [fmt.ATTENTION_MASK, "kept"], ["kept_mask"]),
        helper.make_node("Cast", ["kept_mask"], ["mask"], to=TensorProto.FLOAT),
    ]
    constants = [
        _const(sorted(set(skip_token_ids)), "skip_ids"),
        _const([-1], "axis_minus_1"),
        _const(1, "one_int"),
    ]
    return nodes, constants


_LOOKUPS = {
    "fp32": lambda table: _lookup_float(table, np.float32),
    "fp16": lambda table: _lookup_float(table, np.float16),
    "int8": _lookup_int8,
    "int4": _lookup_int4,
    "int4_block": _lookup_int4_block,
}
#: Variants this module builds directly (others derive from one of these).
GRAPH_VARIANTS: tuple[str, ...] = tuple(_LOOKUPS)


def build_graph(
    table: Array,
    alpha: Array | None = None,
    beta: Array | None = None,
    bias: Array | None = None,
    *,
    skip_token_ids: Sequence[int] = (),
    variant: str = "fp32",
    name: str = "sse",
    producer_version: str = "",
) -> onnx.ModelProto:
    """The ONNX model of ``beta * tanh(alpha * mean(table[ids]) + bias)``, or of the mean.

    Args:
        table: ``[vocab, dim]`` float32 rows (already truncated to the exported dim).
        alpha, beta, bias: ``[dim]`` SeparableDyT vectors; without them the graph returns
            the mean and has no ``dyt_*`` outputs (an identity head).
        skip_token_ids: Ids left out of the mean, as if they were pads.
        variant: How the table is stored, one of :data:`GRAPH_VARIANTS`: ``fp32`` as is;
            ``fp16`` in half precision; ``int8`` symmetric with a scale per row; ``int4`` in
            SSE's 4-bit SSEQ scheme (a scale per row, zero point 7.5), standard ops only;
            ``int4_block`` in 4-bit blocks for the ``com.microsoft.GatherBlockQuantized`` op.
        name: Graph name, recorded in the model.
        producer_version: Version of the exporter, recorded in the model.

    Returns:
        A checked model with the inputs and outputs named in :mod:`sse_onnx.folder`.
    """
    if variant not in _LOOKUPS:
        raise ValueError(
            f"variant={variant!r} has no graph builder; choose one of {GRAPH_VARIANTS}."
        )
    dim = table.shape[1]
    lookup = _LOOKUPS[variant](table)
    weight = "mask"
    mask_nodes, mask_constants = _mask_nodes(skip_token_ids)
    nodes = [*lookup.nodes, *mask_nodes]
    if lookup.scale:
        nodes.append(helper.make_node("Mul", ["mask", lookup.scale], ["token_weight"]))
        weight = "token_weight"
    # The masked sum as a batched [1, sequence] x [sequence, dim] product: one pass over the
    # gathered rows where a Mul then a ReduceSum takes two (about 2x faster, bench/README.md).
    nodes += [
        helper.make_node("Unsqueeze", [weight, "axis_1"], ["weight_3d"]),
        helper.make_node("MatMul", ["weight_3d", "rows"], ["weighted_sum_3d"]),
    ]
    if lookup.shift:
        # sum_t mask_t * (rows_t * scale_t + shift_t): the shift adds the same to every column.
        nodes += [
            helper.make_node("Squeeze", ["weighted_sum_3d", "axis_1"], ["scaled_sum"]),
            helper.make_node("Mul", ["mask", lookup.shift], ["masked_shift"]),
            helper.make_node("ReduceSum", ["masked_shift", "axis_1"], ["shift_sum"], keepdims=1),
            helper.make_node("Add", ["scaled_sum", "shift_sum"], [fmt.TOKEN_SUM]),
        ]
    else:
        nodes.append(helper.make_node("Squeeze", ["weighted_sum_3d", "axis_1"], [fmt.TOKEN_SUM]))
    head = None if alpha is None or beta is None or bias is None else (alpha, beta, bias)
    nodes += [
        helper.make_node("ReduceSum", ["mask", "axis_1"], ["count"], keepdims=1),
        # An empty bag has count 0 and sum 0: dividing by max(count, 1) gives EmbeddingBag's zero.
        helper.make_node("Max", ["count", "one"], ["count_safe"]),
        helper.make_node(
            "Div", [fmt.TOKEN_SUM, "count_safe"], ["mean" if head else fmt.SENTENCE_EMBEDDING]
        ),
    ]
    initializers = [
        *lookup.initializers,
        *mask_constants,
        _const([1], "axis_1"),
        _const(1.0, "one", np.float32),
    ]
    if head:
        nodes += [
            helper.make_node("Mul", ["mean", "alpha"], ["scaled"]),
            helper.make_node("Add", ["scaled", "bias"], ["shifted"]),
            helper.make_node("Tanh", ["shifted"], ["squashed"]),
            helper.make_node("Mul", ["squashed", "beta"], [fmt.SENTENCE_EMBEDDING]),
            *(
                helper.make_node("Identity", [source], [output])
                for source, output in zip(("alpha", "beta", "bias"), fmt.DYT_OUTPUTS, strict=True)
            ),
        ]
        initializers += [
            numpy_helper.from_array(vector.astype(np.float32), source)
            for source, vector in zip(("alpha", "beta", "bias"), head, strict=True)
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
                for out in (fmt.DYT_OUTPUTS if head else ())
            ),
        ],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[
            helper.make_opsetid("", OPSET),
            *(helper.make_opsetid(domain, 1) for domain in lookup.domains),
        ],
        producer_name="sse-export",
        producer_version=producer_version,
        doc_string=(
            "SSE: beta * tanh(alpha * masked_mean(table[input_ids]) + bias)"
            if head
            else "static embedding: masked_mean(table[input_ids])"
        )
        + (f", ids {list(skip_token_ids)} left out of the mean" if skip_token_ids else ""),
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model
