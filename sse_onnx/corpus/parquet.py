"""The Parquet files of a corpus job: one schema (with the job's metadata) and one writer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from sse_onnx.corpus.options import EmbedderOptions
from sse_onnx.encoder import Encoder
from sse_onnx.outputs import METADATA_KEY

__all__ = ["ROW_GROUP_BYTES", "output_schema", "parquet_writer"]

#: Bytes of embeddings per Parquet row group: large groups keep the footer small and scans fast.
ROW_GROUP_BYTES = 64 << 20


def output_schema(encoder: Encoder, options: EmbedderOptions, id_type: pa.DataType) -> pa.Schema:
    """The output's columns, ``id`` and ``embedding``, and its metadata under METADATA_KEY."""
    width = options["dim"] or encoder.dim
    precision = options["precision"]
    if precision in ("binary", "ubinary"):
        item, size = (pa.int8() if precision == "binary" else pa.uint8()), -(-width // 8)
    else:
        item = {"float32": pa.float32(), "int8": pa.int8(), "uint8": pa.uint8()}[precision]
        size = width
    ranges = options["ranges"]
    metadata = {
        "model": encoder.manifest.model_name,
        "variant": encoder.variant,
        "dim": width,
        "precision": precision,
        "normalized": True,
        "text_fields": list(options["text_fields"]),
        "id_field": options["id_field"],
        "ranges": None if ranges is None else ranges.tolist(),
        "sse_onnx_version": encoder.manifest.package_version,
    }
    return pa.schema(
        [("id", id_type), ("embedding", pa.list_(item, size))],
        metadata={METADATA_KEY: json.dumps(metadata)},
    )


def parquet_writer(path: Path | Any, schema: pa.Schema) -> pq.ParquetWriter:
    """A Parquet writer for the output: no dictionary for embeddings, which hardly repeat.

    Parquet stores 8-bit values as 32-bit ints; delta bit-packing brings them back to about a
    byte each (bytes per document measured in bench/scale.md).
    """
    integers = not pa.types.is_floating(schema.field("embedding").type.value_type)
    encoding = {"embedding.list.element": "DELTA_BINARY_PACKED"} if integers else None
    return pq.ParquetWriter(path, schema, use_dictionary=["id"], column_encoding=encoding)
