"""Finding ONNX tensors whose data lives outside the model file, without importing ``onnx``.

An ONNX ``TensorProto`` may say ``data_location: EXTERNAL`` and name a file (or, in
onnxruntime, a memory address) its bytes are read from. Those bytes are not covered by the
manifest's sha256, and the name may lead out of the model folder, so the runtime refuses such a
model before onnxruntime opens it. The model file is walked as protobuf wire data through the
fields that can hold a tensor (initializers, sparse initializers, node attributes, subgraphs,
functions, training graphs); large fields (the tables' ``raw_data``) are stepped over, not
read, so the walk costs well under a millisecond for the bundled model.
"""

from __future__ import annotations

import mmap
import os

__all__ = ["ProtobufError", "external_tensors"]

#: Deepest nesting of messages walked; protobuf's own parser stops at 100.
MAX_DEPTH = 100

# Field numbers of onnx.proto3 (onnx 1.17) that lead, directly or not, to a TensorProto.
_MODEL, _GRAPH, _NODE, _ATTRIBUTE, _TENSOR, _SPARSE, _FUNCTION, _TRAINING = range(8)
_CHILDREN: dict[int, dict[int, int]] = {
    # ModelProto: graph, training_info, functions.
    _MODEL: {7: _GRAPH, 20: _TRAINING, 25: _FUNCTION},
    # GraphProto: node, initializer, sparse_initializer.
    _GRAPH: {1: _NODE, 5: _TENSOR, 15: _SPARSE},
    # NodeProto: attribute.
    _NODE: {5: _ATTRIBUTE},
    # AttributeProto: t, g, tensors, graphs, sparse_tensor, sparse_tensors.
    _ATTRIBUTE: {5: _TENSOR, 6: _GRAPH, 10: _TENSOR, 11: _GRAPH, 22: _SPARSE, 23: _SPARSE},
    # SparseTensorProto: values, indices.
    _SPARSE: {1: _TENSOR, 2: _TENSOR},
    # FunctionProto: node, attribute_proto.
    _FUNCTION: {7: _NODE, 11: _ATTRIBUTE},
    # TrainingInfoProto: initialization, algorithm.
    _TRAINING: {1: _GRAPH, 2: _GRAPH},
    _TENSOR: {},
}
_TENSOR_NAME = 8
_TENSOR_EXTERNAL_DATA = 13
_TENSOR_DATA_LOCATION = 14
_EXTERNAL = 1


class ProtobufError(ValueError):
    """The bytes are not protobuf wire data (truncated, or an impossible field)."""


def external_tensors(path: str | os.PathLike[str]) -> list[str]:
    """Names of the tensors of an ONNX model file that read their data from elsewhere.

    Raises:
        ProtobufError: if the file is not well-formed protobuf wire data.
        OSError: if the file cannot be read.
    """
    with open(path, "rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return []
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
            found: list[str] = []
            _walk(data, 0, len(data), _MODEL, 0, found)
            return found


def _walk(data: mmap.mmap, start: int, end: int, kind: int, depth: int, found: list[str]) -> None:
    """Walk the message ``data[start:end]`` of ``kind``, adding external tensors to ``found``."""
    if depth > MAX_DEPTH:
        raise ProtobufError(f"messages nested deeper than {MAX_DEPTH}")
    children = _CHILDREN[kind]
    name, external = "", False
    position = start
    while position < end:
        field, wire, value, position = _field(data, position, end)
        if wire != 2:
            located = field == _TENSOR_DATA_LOCATION and wire == 0 and value == _EXTERNAL
            external = external or (kind == _TENSOR and located)
        elif field in children:
            _walk(data, position - value, position, children[field], depth + 1, found)
        elif kind == _TENSOR and field == _TENSOR_EXTERNAL_DATA:
            external = True
        elif kind == _TENSOR and field == _TENSOR_NAME:
            name = data[position - value : position].decode("utf-8", "replace")
    if external:
        found.append(name)


def _field(data: mmap.mmap, position: int, end: int) -> tuple[int, int, int, int]:
    """The field at ``position``: its number, its wire type, its value (a varint's value, the
    length of a length-delimited field, else 0) and the position after it.

    Raises:
        ProtobufError: for field number 0, a wire type onnx.proto does not use, or a field that
            runs past ``end``.
    """
    key, position = _varint(data, position, end)
    field, wire = key >> 3, key & 7
    if field == 0:
        raise ProtobufError(f"field number 0 at byte {position}")
    value = 0
    if wire == 0:
        value, position = _varint(data, position, end)
    elif wire == 2:
        value, position = _varint(data, position, end)
        if position + value > end:
            raise ProtobufError(f"a field of {value} bytes runs past its message's end")
        position += value
    elif wire in (1, 5):
        position += 8 if wire == 1 else 4
    else:  # groups (3, 4) are not in onnx.proto; 6 and 7 do not exist
        raise ProtobufError(f"wire type {wire} at byte {position}")
    if position > end:
        raise ProtobufError("a field runs past its message's end")
    return field, wire, value, position


def _varint(data: mmap.mmap, position: int, end: int) -> tuple[int, int]:
    """The varint at ``position`` and the position after it."""
    value = shift = 0
    while True:
        if position >= end or shift > 63:
            raise ProtobufError(f"a truncated or overlong varint at byte {position}")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, position
        shift += 7
