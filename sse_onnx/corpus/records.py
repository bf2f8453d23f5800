"""The records a corpus job writes to a folder: ``_job.json``, its shards, ``_manifest.json``.

Each is a frozen dataclass whose ``to_dict`` gives the JSON written on disk; a record read back
(a stopped job's ``_job.json``, to resume it) goes through ``from_dict``, which checks every
key and type and names the file and the key of the first problem. No pyarrow, no Ray.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from sse_onnx.errors import CorpusError
from sse_onnx.outputs import FORMAT_NAME, FORMAT_VERSION, SHARD_KEYS

__all__ = ["CorpusManifest", "InputFile", "JobParameters", "JobRecord", "ShardEntry"]

#: How a problem in a stopped job's record ends: what the user can do.
_NOT_RESUMABLE = "it cannot be resumed. Choose an empty folder."


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _kind(value: object, kind: str) -> bool:
    """Whether ``value`` is of a JSON kind: str, count, str?, count?, strings, ranges."""
    if kind.endswith("?"):
        return value is None or _kind(value, kind[:-1])
    if kind == "str":
        return isinstance(value, str)
    if kind == "count":
        return _is_count(value)
    if kind == "strings":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "ranges":
        return isinstance(value, list) and all(
            isinstance(row, list)
            and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in row)
            for row in value
        )
    if kind == "object":
        return isinstance(value, Mapping)
    return isinstance(value, list)  # "list": its reader checks each item


def _checked(data: object, kinds: Mapping[str, str], *, where: str) -> dict[str, Any]:
    """``data`` as a dict with exactly the keys of ``kinds``, each of its kind.

    Raises:
        CorpusError: naming ``where`` and the first missing, extra or wrong key.
    """
    if not isinstance(data, Mapping):
        raise CorpusError(f"{where} holds {type(data).__name__}, not an object; {_NOT_RESUMABLE}")
    missing = [key for key in kinds if key not in data]
    extra = [key for key in data if key not in kinds]
    if missing or extra:
        what = f"has no {missing[0]!r}" if missing else f"has an unknown key {extra[0]!r}"
        raise CorpusError(f"{where} {what}: it is not a record sse-embed wrote; {_NOT_RESUMABLE}")
    for key, kind in kinds.items():
        if not _kind(data[key], kind):
            raise CorpusError(
                f"{where}: {key} is {data[key]!r}, not a {kind.replace('?', ' or null')}; the "
                f"file was edited or damaged, {_NOT_RESUMABLE}"
            )
    return dict(data)


@dataclass(frozen=True)
class InputFile:
    """An input of the job and its size (``None`` for a URI), so a changed input is noticed."""

    path: str
    bytes: int | None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written in ``_job.json``."""
        return {"path": self.path, "bytes": self.bytes}

    @classmethod
    def from_dict(cls, data: object, *, where: str) -> InputFile:
        """Read one input back.

        Raises:
            CorpusError: naming ``where`` and the bad key.
        """
        return cls(**_checked(data, {"path": "str", "bytes": "count?"}, where=where))


@dataclass(frozen=True)
class JobParameters:
    """What makes a job's output: a resumed job must have the same, or its shards would mix.

    Attributes:
        model: The model's name.
        model_sha256: sha256 of the variant's model file.
        tokenizer_sha256: sha256 of the model's tokenizer file.
        variant: The model variant run.
        dim: Dimensions kept.
        precision: The output precision.
        text_fields: Columns joined into a document's text.
        id_field: Column of ids; ``None`` numbers documents in input order.
        shard_docs: Documents per shard.
        calibration_docs: For int8/uint8, documents that set the ranges; else ``None``.
        input_format: ``"jsonl"``, ``"parquet"``, or ``None`` (by suffix).
        inputs: The input files, in order.
    """

    model: str
    model_sha256: str
    tokenizer_sha256: str
    variant: str
    dim: int
    precision: str
    text_fields: tuple[str, ...]
    id_field: str | None
    shard_docs: int
    calibration_docs: int | None
    input_format: str | None
    inputs: tuple[InputFile, ...]

    #: Each key's JSON kind, in the order of the JSON written.
    KINDS: ClassVar[dict[str, str]] = {
        "model": "str",
        "model_sha256": "str",
        "tokenizer_sha256": "str",
        "variant": "str",
        "dim": "count",
        "precision": "str",
        "text_fields": "strings",
        "id_field": "str?",
        "shard_docs": "count",
        "calibration_docs": "count?",
        "input_format": "str?",
        "inputs": "list",
    }

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written as ``parameters`` in ``_job.json`` and ``_manifest.json``."""
        data = {key: getattr(self, key) for key in self.KINDS}
        data["text_fields"] = list(self.text_fields)
        data["inputs"] = [item.to_dict() for item in self.inputs]
        return data

    @classmethod
    def from_dict(cls, data: object, *, where: str) -> JobParameters:
        """Read parameters back.

        Raises:
            CorpusError: naming ``where`` and the missing, extra or bad key.
        """
        fields = _checked(data, cls.KINDS, where=f"{where}: parameters")
        fields["text_fields"] = tuple(fields["text_fields"])
        fields["inputs"] = tuple(
            InputFile.from_dict(item, where=f"{where}: parameters.inputs[{n}]")
            for n, item in enumerate(fields["inputs"])
        )
        return cls(**fields)


@dataclass(frozen=True)
class JobRecord:
    """``_job.json``: the parameters and, for int8/uint8, the calibrated ranges.

    Attributes:
        parameters: What makes the output.
        ranges: ``(2, dim)`` minima and maxima of each dimension, or ``None``.
    """

    parameters: JobParameters
    ranges: tuple[tuple[float, ...], ...] | None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to ``_job.json``."""
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "parameters": self.parameters.to_dict(),
            "ranges": None if self.ranges is None else [list(row) for row in self.ranges],
        }

    @classmethod
    def from_dict(cls, data: object, *, where: str) -> JobRecord:
        """Read ``_job.json`` back, checking format, version and every key.

        Raises:
            CorpusError: naming ``where`` and the problem.
        """
        kinds = {"format": "str", "version": "count", "parameters": "object", "ranges": "ranges?"}
        fields = _checked(data, kinds, where=where)
        if (fields["format"], fields["version"]) != (FORMAT_NAME, FORMAT_VERSION):
            raise CorpusError(
                f"{where} is {fields['format']!r} version {fields['version']!r}, where this "
                f"sse-onnx writes {FORMAT_NAME!r} version {FORMAT_VERSION}; {_NOT_RESUMABLE}"
            )
        ranges = fields["ranges"]
        return cls(
            parameters=JobParameters.from_dict(fields["parameters"], where=where),
            ranges=None if ranges is None else tuple(tuple(row) for row in ranges),
        )


@dataclass(frozen=True)
class ShardEntry:
    """One shard as the manifest lists it, with the tokens counted while it was written.

    Attributes:
        file: Its file name in the folder.
        first_row: Its first document's row in the input.
        rows: Its documents.
        bytes: Its size.
        sha256: Its checksum.
        tokens: Its documents' token ids, if counted (not for a shard a stopped job wrote).
    """

    file: str
    first_row: int
    rows: int
    bytes: int
    sha256: str
    tokens: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the manifest's ``shards`` list (without ``tokens``)."""
        return {key: getattr(self, key) for key in SHARD_KEYS}


@dataclass(frozen=True)
class CorpusManifest:
    """``_manifest.json``: a finished folder's model, precision and shards.

    Attributes:
        job: The job that wrote the folder.
        shards: Every shard, in input order.
        sse_onnx_version: The version of sse-onnx that wrote it.
    """

    job: JobRecord
    shards: tuple[ShardEntry, ...]
    sse_onnx_version: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written to ``_manifest.json``."""
        parameters = self.job.parameters.to_dict()
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "complete": True,
            "model": parameters["model"],
            "model_sha256": parameters["model_sha256"],
            "variant": parameters["variant"],
            "dim": parameters["dim"],
            "precision": parameters["precision"],
            "normalized": True,
            "ranges": self.job.to_dict()["ranges"],
            "text_fields": parameters["text_fields"],
            "id_field": parameters["id_field"],
            "rows": sum(s.rows for s in self.shards),
            "shards": [s.to_dict() for s in self.shards],
            "parameters": parameters,
            "sse_onnx_version": self.sse_onnx_version,
        }
