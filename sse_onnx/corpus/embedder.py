"""The callable that turns a table of documents into one of ``id`` and ``embedding``.

:class:`CorpusEmbedder` is what Ray Data's ``map_batches`` builds once per actor (and what a
:class:`~sse_onnx.corpus.shards.ShardWriter` holds); it needs pyarrow and the runtime's core,
never Ray itself.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

try:
    import pyarrow as pa
    import pyarrow.compute as pc
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "sse_onnx.corpus needs pyarrow and ray: pip install 'sse-onnx[scale]'."
    ) from exc

from sse_onnx import folder as fmt
from sse_onnx.corpus.inputs import NOT_UTF8
from sse_onnx.corpus.options import QUANTIZED
from sse_onnx.embeddings import PRECISIONS, Precision, quantize
from sse_onnx.encoder import Encoder
from sse_onnx.errors import CorpusError
from sse_onnx.tokenizer import TextTokenizer

__all__ = ["CorpusEmbedder", "shared_encoder"]


class CorpusEmbedder:
    """Embeds a table of documents: the callable class for Ray Data's ``map_batches``.

    Ray builds it once per actor; in any one process, embedders of the same model, variant and
    thread count share one :class:`~sse_onnx.Encoder` (and so its tokenizer cache), which also
    makes it cheap to build per task elsewhere (a Spark ``mapInPandas`` function).

    Args:
        model: A folder written by ``sse-export``; ``None`` takes the bundled default model. On a
            cluster, the folder must exist at this path on every node.
        variant: Which model file of the folder to run; ``None`` takes its default variant.
        text_fields: Columns whose strings, joined with a space, are a document's text; one
            name alone is one column.
        id_field: Column copied to the output as ``id``; ``None`` leaves ids out.
        dim: Keep the first ``dim`` dimensions (Matryoshka); ``None`` keeps all.
        precision: As ``Encoder.encode`` defines it; ``int8`` and ``uint8`` need ``ranges``.
        ranges: For int8/uint8, a ``(2, dim)`` array of each dimension's minimum and maximum,
            taken once from a calibration sample (see ``sse_onnx.embeddings.quantize``).
        count_tokens: Add a ``tokens`` column: the number of token ids of each text. This
            tokenizes every text a second time: about a quarter fewer documents per second
            (bench/scale.md).
        threads: onnxruntime threads; ``None`` takes the CPUs Ray assigned to this actor, or 1
            outside Ray.

    Raises:
        ValueError: for an unknown precision, int8/uint8 without ``ranges``, or no text field.

    Example:
        >>> import pyarrow as pa
        >>> from sse_onnx.corpus import CorpusEmbedder
        >>> embedder = CorpusEmbedder(id_field="id")
        >>> out = embedder(pa.table({"id": [7, 8], "text": ["a cat", "a dog"]}))
        >>> out.column_names, out.schema.field("embedding").type.list_size
        (['id', 'embedding'], 256)
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        variant: str | None = None,
        text_fields: str | Sequence[str] = ("text",),
        id_field: str | None = "id",
        dim: int | None = None,
        precision: Precision = "float32",
        ranges: npt.ArrayLike | None = None,
        count_tokens: bool = False,
        threads: int | None = None,
    ) -> None:
        fields = (text_fields,) if isinstance(text_fields, str) else tuple(text_fields)
        if not fields or not all(isinstance(field, str) for field in fields):
            raise ValueError(
                f"text_fields={text_fields!r} must be a column name or a non-empty sequence of "
                "column names."
            )
        if precision not in PRECISIONS:
            raise ValueError(
                f"precision={precision!r} is not supported; choose one of {PRECISIONS}."
            )
        if precision in QUANTIZED and ranges is None:
            raise ValueError(
                f"precision={precision!r} needs ranges: buckets calibrated on each batch would "
                "make a document's vector depend on its batch. Take them once from a sample "
                "(embed_corpus does so with calibration_docs), or use float32 or a binary "
                "precision."
            )
        self.threads = threads if threads is not None else _ray_assigned_cpus() or 1
        path = None if model is None else str(Path(model).resolve())
        self.encoder = shared_encoder(path, variant, self.threads)
        self.text_fields = fields
        self.id_field = id_field
        self.dim = dim
        self.precision: Precision = precision
        self.ranges = None if ranges is None else np.asarray(ranges, dtype=np.float32)
        self._counter = _shared_tokenizer(self.encoder) if count_tokens else None

    def __call__(self, batch: pa.Table | pa.RecordBatch) -> pa.Table:
        """The ``id`` (if ``id_field``), ``embedding`` and ``tokens`` (if counted) of a batch.

        ``embedding`` is a fixed-size list per row: float32 of ``dim`` values, int8/uint8 of
        ``dim`` buckets, or ``ceil(dim / 8)`` bytes of sign bits for the binary precisions.

        Raises:
            CorpusError: if a column is missing, holds other values than strings, or has a
                null value, or a text is not UTF-8.
        """
        texts = self.texts(batch)
        vectors = self.embed(texts)
        columns: dict[str, pa.Array | pa.ChunkedArray] = {}
        if self.id_field is not None:
            columns["id"] = self._ids(batch, self.id_field)
        columns["embedding"] = pa.FixedSizeListArray.from_arrays(
            pa.array(vectors.reshape(-1)), vectors.shape[1]
        )
        if self._counter is not None:
            columns["tokens"] = pa.array(self._counter.encode_flat(texts)[1])
        return pa.table(columns)

    def embed(self, texts: Sequence[str]) -> npt.NDArray[Any]:
        """Embeddings of ``texts`` in this embedder's dim and precision: ``(n, width)``."""
        floats = self.encoder.encode(list(texts), truncate_dim=self.dim, show_progress_bar=False)
        return quantize(floats, self.precision, ranges=self.ranges)

    def texts(self, batch: pa.Table | pa.RecordBatch) -> list[str]:
        """The texts of a batch: its ``text_fields`` joined with a space.

        Raises:
            CorpusError: for a missing column, values other than strings, a null, or bytes
                that are not UTF-8.
        """
        columns = [self._strings(batch, field) for field in self.text_fields]
        if len(columns) == 1:
            return columns[0]
        return [" ".join(parts) for parts in zip(*columns, strict=True)]

    def _strings(self, batch: pa.Table | pa.RecordBatch, field: str) -> list[str]:
        column = _column(batch, field, "text")
        if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
            raise CorpusError(
                f"column {field!r} holds {column.type}, not strings; name a text column "
                "(text_fields)."
            )
        if column.null_count:
            first = pc.index(pc.is_null(column), True).as_py()
            raise CorpusError(
                f"{self._name(batch, first)} has no {field!r} (null); fill it (for example "
                "with an empty string) or drop such documents before embedding."
            )
        try:
            strings: list[str] = column.to_pylist()
        except UnicodeDecodeError as exc:  # JSON readers pass the bytes through unchecked
            row = next(i for i in range(len(column)) if not _decodes(column[i]))
            raise CorpusError(
                f"the {field!r} of {self._name(batch, row)} {NOT_UTF8} ({exc.reason}); re-encode "
                "the input as UTF-8 (for example: iconv -f latin1 -t utf-8)."
            ) from exc
        return strings

    def _ids(self, batch: pa.Table | pa.RecordBatch, field: str) -> pa.Array | pa.ChunkedArray:
        ids = _column(batch, field, "id")
        if ids.null_count:
            raise CorpusError(
                f"column {field!r} has {ids.null_count} null ids; give every document "
                "an id, or number documents in input order instead (id_field=None)."
            )
        return ids

    def _name(self, batch: pa.Table | pa.RecordBatch, row: int) -> str:
        if self.id_field is not None and self.id_field in batch.schema.names:
            try:
                return f"document {self.id_field}={batch.column(self.id_field)[row].as_py()!r}"
            except UnicodeDecodeError:  # the id is not UTF-8 either
                pass
        return f"a document (row {row} of a batch of {batch.num_rows})"


def _decodes(value: Any) -> bool:
    try:
        value.as_py()
    except UnicodeDecodeError:
        return False
    return True


def _column(batch: pa.Table | pa.RecordBatch, name: str, kind: str) -> Any:
    if name not in batch.schema.names:
        raise CorpusError(
            f"the input has no column {name!r} (it has {batch.schema.names}); name the {kind} "
            f"column with {kind}_field{'s' if kind == 'text' else ''}."
        )
    return batch.column(name)


@lru_cache(maxsize=4)
def shared_encoder(model: str | None, variant: str | None, threads: int) -> Encoder:
    """One Encoder per model, variant and thread count in this process."""
    return Encoder(model, variant=variant, threads=threads)


@lru_cache(maxsize=4)
def _shared_tokenizer(encoder: Encoder) -> TextTokenizer:
    return TextTokenizer(fmt.entry_path(encoder.folder, encoder.manifest.tokenizer))


def _ray_assigned_cpus() -> int | None:
    """The CPUs Ray assigned to this actor or task; ``None`` outside a Ray worker."""
    ray = sys.modules.get("ray")  # a Ray worker has imported it; nothing else needs to
    if ray is None or not ray.is_initialized():
        return None
    try:
        cpus = float(ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0))
    except AssertionError:  # the driver: Ray assigns resources to workers only
        return None
    return max(1, round(cpus)) if cpus else None
