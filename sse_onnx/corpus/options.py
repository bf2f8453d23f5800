"""The corpus job's options, their defaults and their checks: no pyarrow, no Ray.

``sse-embed --help`` and every option check read this module, so a bad option fails (and the
help prints) without the ``scale`` extra's libraries loaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Literal, TypedDict, get_args

import numpy as np
import numpy.typing as npt

from sse_onnx.embeddings import Precision
from sse_onnx.encoder import BLOCK_TEXTS

__all__ = [
    "CALIBRATION_DOCS",
    "INPUT_FORMATS",
    "QUANTIZED",
    "SHARD_DOCS",
    "EmbedderOptions",
    "InputFormat",
    "check_counts",
    "one_or_many",
]

InputFormat = Literal["jsonl", "parquet"]
INPUT_FORMATS: tuple[str, ...] = get_args(InputFormat)
#: Precisions whose buckets are calibrated once, on a sample, rather than per vector.
QUANTIZED = ("int8", "uint8")
#: Documents per shard of a folder output (and per actor call): few files, yet a killed worker
#: or driver loses little work (sizes and times per shard: bench/scale.md).
SHARD_DOCS = 4096
#: Documents from the start of the input that set int8/uint8 ranges, unless told otherwise.
CALIBRATION_DOCS = 10_000


class EmbedderOptions(TypedDict):
    """The keyword arguments of :class:`~sse_onnx.corpus.embedder.CorpusEmbedder` a job uses.

    Ray passes them to every actor it builds, so they are plain values (``ranges`` a small
    ``(2, dim)`` array).
    """

    model: str | None
    variant: str | None
    text_fields: tuple[str, ...]
    id_field: str | None
    dim: int | None
    precision: Precision
    count_tokens: bool
    ranges: npt.NDArray[np.float32] | None


def one_or_many(
    value: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> list[str | os.PathLike[str]]:
    """``value`` as a list: one path or name (``str`` or path-like) is a list of one."""
    if isinstance(value, (str, os.PathLike)):
        return [value]
    return list(value)


def check_counts(**counts: int) -> None:
    """Check that every value is a positive int, and ``batch_size`` a multiple of BLOCK_TEXTS.

    Raises:
        ValueError: naming the first bad value.
    """
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive int.")
    batch_size = counts.get("batch_size")
    if batch_size is not None and batch_size % BLOCK_TEXTS:
        raise ValueError(
            f"batch_size={batch_size} must be a multiple of {BLOCK_TEXTS}, the block of texts "
            "Encoder.encode pads together; other batches change the float rounding of vectors."
        )
