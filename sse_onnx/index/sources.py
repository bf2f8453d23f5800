"""What ``sse-index add`` reads: documents from JSONL or Parquet, and ``sse-embed`` vectors.

Every problem in an input is one :class:`~sse_onnx.errors.CorpusError` naming the file and
line (or row) and the fix; pyarrow is imported only for Parquet (the ``scale`` extra).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from sse_onnx.errors import CorpusError
from sse_onnx.texts import check_unicode

if TYPE_CHECKING:
    from sse_onnx.encoder import Encoder

__all__ = ["SCALE_EXTRA", "Doc", "Embeddings", "Fields", "documents", "input_formats"]

#: The extra that brings pyarrow (it is not a core dependency).
SCALE_EXTRA = 'pip install "sse-onnx[scale]"'
#: Suffixes that tell an input's format, as sse-embed reads them.
_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
#: Parquet rows read at once.
READ_ROWS = 10_000


@dataclass(frozen=True)
class Fields:
    text: tuple[str, ...]
    id: str
    metadata: tuple[str, ...]


@dataclass(frozen=True)
class Doc:
    """One document read, with where it was read (``file:line`` or ``file, row n``)."""

    id: str
    text: str
    metadata: dict[str, Any] | None
    where: str


def input_formats(inputs: Sequence[Path], chosen: str | None) -> list[str]:
    """Each input's format; every input is checked before the index is opened."""
    formats = []
    for path in inputs:
        if not path.exists():
            raise CorpusError(f"input {path} does not exist")
        if path.is_dir():
            raise CorpusError(f"input {path} is a folder; pass its files (e.g. {path}/*.jsonl)")
        kind = chosen or _SUFFIXES.get(path.suffix.lower())
        if kind is None:
            raise CorpusError(
                f"cannot tell the format of {path} from its name; pass --format jsonl or "
                "--format parquet"
            )
        formats.append(kind)
    if "parquet" in formats:
        _import_pyarrow("reading Parquet")
    return formats


def _import_pyarrow(purpose: str) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError(f"{purpose} needs pyarrow: {SCALE_EXTRA}") from exc
    return pq


def documents(inputs: Sequence[Path], formats: Sequence[str], fields: Fields) -> Iterator[Doc]:
    for path, kind in zip(inputs, formats, strict=True):
        records = _jsonl_records(path) if kind == "jsonl" else _parquet_records(path, fields)
        for where, record in records:
            yield _document(where, record, fields)


def _jsonl_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(file:line, object)`` of each non-blank line."""
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, 1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise CorpusError(
                    f"{where}: not UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of "
                    "the line); convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
                ) from exc
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
                raise CorpusError(
                    f"{where}: not valid JSON ({reason}); each line must be one JSON object"
                ) from exc
            if not isinstance(record, dict):
                raise CorpusError(
                    f"{where}: a JSON {type(record).__name__}, not an object; each line must be "
                    'one JSON object such as {"id": "a", "text": "..."}'
                )
            yield where, record


def _parquet_records(path: Path, fields: Fields) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(file, row n, row)`` of each row, read a batch of columns at a time."""
    pq = _import_pyarrow("reading Parquet")
    try:
        file = pq.ParquetFile(path)
    except (OSError, ValueError) as exc:
        raise CorpusError(f"{path} is not a readable Parquet file ({_one_line(exc)})") from exc
    names = file.schema_arrow.names
    missing = [name for name in (*fields.text, fields.id) if name not in names]
    if missing:
        raise CorpusError(
            f"{path} has no column {missing[0]!r} (it has {names}); name the columns with "
            "--text-field and --id-field"
        )
    wanted = list(dict.fromkeys((*fields.text, fields.id, *fields.metadata)))
    row = 0
    for batch in file.iter_batches(batch_size=READ_ROWS, columns=[n for n in wanted if n in names]):
        for record in batch.to_pylist():
            row += 1
            yield f"{path}, row {row}", record


def _document(where: str, record: dict[str, Any], fields: Fields) -> Doc:
    """The document of one record; its errors name the place and the fields it has."""
    missing = [name for name in (*fields.text, fields.id) if name not in record]
    if missing:
        have = list(record)
        shown = have[:12] + (["..."] if len(have) > 12 else [])
        raise CorpusError(
            f"{where}: no field {missing[0]!r} (it has {shown}); name the fields with "
            "--text-field and --id-field"
        )
    parts = [_text(where, name, record[name]) for name in fields.text]
    text = parts[0] if len(parts) == 1 else " ".join(parts)
    metadata = {name: record[name] for name in fields.metadata if name in record} or None
    if metadata is not None:
        _check_metadata(where, metadata)
    return Doc(_id(where, fields.id, record[fields.id]), text, metadata, where)


def _text(where: str, name: str, value: object) -> str:
    if not isinstance(value, str):
        shown = "null" if value is None else f"{type(value).__name__} {value!r:.40}"
        raise CorpusError(
            f"{where}: field {name!r} is {shown}, not a string; fill it (an empty string will "
            "do) or drop the document"
        )
    check_unicode(value, f"{where}: field {name!r}")
    return value


def _id(where: str, name: str, value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, str):
        shown = "null" if value is None else f"{type(value).__name__} {value!r:.40}"
        raise CorpusError(f"{where}: id field {name!r} is {shown}; ids are strings or integers")
    check_unicode(value, f"{where}: id field {name!r}")
    return value


def _check_metadata(where: str, metadata: dict[str, Any]) -> None:
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise CorpusError(f"{where}: metadata must be JSON values ({exc})") from exc


# ---------------------------------------------------------------------- --embeddings


class Embeddings:
    """The vectors of an ``sse-embed`` output, taken by id as the documents are read.

    The output is read in step with the inputs: when it holds the same documents in the same
    order (as ``sse-embed`` writes them), only one of its batches is in memory; vectors passed
    over are kept until their id comes.

    Raises:
        CorpusError: if the output is not a finished ``sse-embed`` output, or was not made by
            ``encoder`` at its full width in float32 from the same text fields.
    """

    def __init__(self, path: Path, encoder: Encoder, text_fields: Sequence[str]) -> None:
        self.path = path
        self.dim = encoder.dim
        files, meta, sha256 = _embedding_files(path)
        _check_embedding_meta(path, meta, sha256, encoder, text_fields)
        self._chunks = self._read(files)
        self._ids: list[str] = []
        self._vectors = np.empty((0, self.dim), np.float32)
        self._next = 0
        self._passed: dict[str, npt.NDArray[np.float32]] = {}

    def take(self, docs: Sequence[Doc]) -> npt.NDArray[np.float32]:
        """The vectors of ``docs``, ``(len(docs), dim)``."""
        rows = [self._vector(doc) for doc in docs]
        stacked: npt.NDArray[np.float32] = np.stack(rows) if rows else self._vectors[:0]
        return stacked

    def _vector(self, doc: Doc) -> npt.NDArray[np.float32]:
        found = self._passed.pop(doc.id, None)
        while found is None:
            if self._next == len(self._ids) and not self._advance():
                raise CorpusError(
                    f"{doc.where}: id {doc.id!r} is not in the embeddings {self.path}; pass the "
                    "sse-embed output of these same inputs (with the same --id-field)"
                )
            id_ = self._ids[self._next]
            row: npt.NDArray[np.float32] = self._vectors[self._next]
            self._next += 1
            if id_ == doc.id:
                return row
            self._passed[id_] = row
        return found

    def _advance(self) -> bool:
        chunk = next(self._chunks, None)
        if chunk is not None:
            (self._ids, self._vectors), self._next = chunk, 0
        return chunk is not None

    def _read(self, files: Sequence[Path]) -> Iterator[tuple[list[str], npt.NDArray[np.float32]]]:
        pq = _import_pyarrow("--embeddings")
        for file in files:
            try:
                parquet = pq.ParquetFile(file)
                _check_column(file, parquet.schema_arrow, self.dim)
                for batch in parquet.iter_batches(READ_ROWS, columns=["id", "embedding"]):
                    ids = [str(id_) for id_ in batch.column(0).to_pylist()]
                    flat = batch.column(1).flatten().to_numpy(zero_copy_only=False)
                    yield ids, np.asarray(flat, np.float32).reshape(-1, self.dim)
            except (OSError, ValueError) as exc:
                if isinstance(exc, CorpusError):
                    raise
                raise CorpusError(
                    f"{file} is not a readable Parquet file ({_one_line(exc)})"
                ) from exc


def _embedding_files(path: Path) -> tuple[list[Path], dict[str, Any], str | None]:
    """The Parquet files of an sse-embed output, its metadata, and its model file's sha256."""
    pq = _import_pyarrow("--embeddings")
    from sse_onnx.outputs import LAYOUT, METADATA_KEY

    if path.is_file():
        try:
            metadata = pq.read_schema(path).metadata or {}
        except (OSError, ValueError) as exc:
            raise CorpusError(f"{path} is not a readable Parquet file ({_one_line(exc)})") from exc
        if METADATA_KEY not in metadata:
            raise CorpusError(
                f"{path} was not written by sse-embed (its schema has no sse_onnx metadata)"
            )
        return [path], json.loads(metadata[METADATA_KEY]), None
    if not path.is_dir():
        raise CorpusError(f"embeddings {path} does not exist")
    if not (path / LAYOUT.success).is_file():
        raise CorpusError(
            f"embeddings {path} is not a finished sse-embed folder (no {LAYOUT.success}); finish "
            "it with sse-embed --resume first"
        )
    try:
        manifest = json.loads((path / LAYOUT.manifest).read_text(encoding="utf-8"))
        files = [path / shard["file"] for shard in manifest["shards"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorpusError(
            f"{path / LAYOUT.manifest} is not an sse-embed manifest ({exc!r})"
        ) from exc
    return files, manifest, manifest.get("model_sha256")


def _check_embedding_meta(
    path: Path,
    meta: dict[str, Any],
    sha256: str | None,
    encoder: Encoder,
    text_fields: Sequence[str],
) -> None:
    """Refuse vectors that are not ``encoder``'s of these texts, naming every difference."""
    wanted = {
        "model": encoder.manifest.model_name,
        "variant": encoder.variant,
        "dim": encoder.dim,
        "precision": "float32",
        "text_fields": list(text_fields),
    }
    differ = [
        f"{key} {meta.get(key)!r} there, {value!r} here"
        for key, value in wanted.items()
        if meta.get(key) != value
    ]
    if sha256 is not None and sha256 != encoder.manifest.variants[encoder.variant].sha256:
        differ.append("another model file (sha256)")
    if meta.get("id_field") is None:
        differ.append("ids are row numbers (sse-embed --row-ids), not the documents' ids")
    if differ:
        raise CorpusError(
            f"embeddings {path} do not match this index's model: {'; '.join(differ)}. Embed the "
            "inputs again with sse-embed and the same --model/--variant, --text-field and "
            "--id-field at full width in float32, or add without --embeddings"
        )


def _check_column(file: Path, schema: Any, dim: int) -> None:
    import pyarrow as pa

    names = schema.names
    kind = schema.field("embedding").type if "embedding" in names else None
    if (
        "id" not in names
        or kind is None
        or not pa.types.is_fixed_size_list(kind)
        or kind.list_size != dim
        or not pa.types.is_float32(kind.value_type)
    ):
        columns = ", ".join(f"{field.name}: {field.type}" for field in schema)
        raise CorpusError(
            f"{file} does not hold ids and embeddings of {dim} float32 values, the index "
            f"model's width (its columns: {columns})"
        )


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
