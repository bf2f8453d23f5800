"""The on-disk contract of an exported model folder: file names, graph I/O names, the manifest.

This module is the single owner of the format. The exporter writes a folder only through it and
the runtime reads a folder only through it, so a change of layout is a change here (and a bump
of :data:`SCHEMA_VERSION`).

An exported folder holds::

    manifest.json      # Manifest below, schema version SCHEMA_VERSION
    tokenizer.json     # Hugging Face tokenizer; padding, truncation and post-processor off
    model.onnx         # one file per variant, see VARIANT_FILES

A mobile bundle (``sse-export --target mobile``) has the same manifest, whose variants are the
ORT-format files of :data:`ORT_VARIANT_FILES` (onnxruntime loads them like ``.onnx`` files), and
files for app developers::

    model_int8.ort              # one file per variant, see ORT_VARIANT_FILES
    required_operators.config   # REQUIRED_OPERATORS_FILE: operators for a reduced onnxruntime
    tokenizer.json              # as above
    tokenizer_config.json       # TOKENIZER_CONFIG_FILE: tokenizer class, for swift-transformers
    vocab.txt                   # VOCAB_FILE: token of id i on line i + 1
    parity.jsonl                # PARITY_FILE: reference ids and embeddings for an app's tests
    INTEGRATION.md              # INTEGRATION_FILE: how to tokenize and run the model in an app

Every model graph has the inputs ``input_ids`` and ``attention_mask`` (int64, ``[batch,
sequence]``) and the outputs:

- ``sentence_embedding`` float32 ``[batch, dim]``: the SSE output before L2 normalisation;
- ``token_sum`` float32 ``[batch, dim]``: the masked sum of the gathered rows, so that a text too
  long for one padded batch can be embedded in chunks whose sums are added (the mean is a sum
  divided by a count);
- ``dyt_alpha``, ``dyt_beta``, ``dyt_bias`` float32 ``[dim]``: the head's parameters, so that
  the head can be applied to such a combined mean without a second copy of the weights (only
  in graphs with a DyT head; see :class:`Pooling`).

Token ids the family leaves out of the mean (:attr:`Pooling.skip_token_ids`) are masked inside
the graph, so the graph alone gives the family's embedding of the ids it is fed; truncation
(:attr:`Pooling.max_chars`, :attr:`Pooling.max_tokens`, applied by :meth:`Pooling.cut_text` and
:meth:`Pooling.cut_ids`) and the family's own normalisation (:attr:`Pooling.normalize`) are the
caller's part, read from the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from dataclasses import fields as dataclass_fields
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from sse_onnx._external_data import ProtobufError, external_tensors
from sse_onnx.errors import ModelFormatError

__all__ = [
    "ATTENTION_MASK",
    "DYT_OUTPUTS",
    "FAMILIES",
    "HEADS",
    "INPUT_IDS",
    "INTEGRATION_FILE",
    "MANIFEST_FILE",
    "ORT_VARIANT_FILES",
    "PARITY_FILE",
    "REQUIRED_OPERATORS_FILE",
    "SCHEMA_VERSION",
    "SENTENCE_EMBEDDING",
    "TOKENIZER_CONFIG_FILE",
    "TOKENIZER_FILE",
    "TOKEN_SUM",
    "VARIANT_FILES",
    "VOCAB_FILE",
    "FileEntry",
    "Manifest",
    "Pooling",
    "check_self_contained",
    "entry_path",
    "read_manifest",
    "sha256_file",
    "write_manifest",
]

SCHEMA_VERSION = 2
#: Older schema versions this module still reads. Version 1 had no ``pooling``: it was always
#: SSE's (a DyT head, nothing skipped or truncated, no normalisation of its own).
READABLE_SCHEMA_VERSIONS = (1, SCHEMA_VERSION)
FORMAT_NAME = "sse-onnx"

MANIFEST_FILE = "manifest.json"
TOKENIZER_FILE = "tokenizer.json"
# Files of a mobile bundle only.
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
VOCAB_FILE = "vocab.txt"
REQUIRED_OPERATORS_FILE = "required_operators.config"
PARITY_FILE = "parity.jsonl"
INTEGRATION_FILE = "INTEGRATION.md"

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
SENTENCE_EMBEDDING = "sentence_embedding"
TOKEN_SUM = "token_sum"
DYT_OUTPUTS = ("dyt_alpha", "dyt_beta", "dyt_bias")

#: Checkpoint families, named after the library whose semantics an export follows.
FAMILIES = ("sse", "sentence-transformers", "model2vec")
#: What follows the masked mean: SSE's ``beta * tanh(alpha * x + bias)``, or nothing.
HEADS = ("dyt", "identity")

#: Variant name -> model file name. Every variant has the same inputs and outputs; they differ
#: in how the token table is stored:
#:
#: - ``fp32``: as is, the exact export;
#: - ``fp16``: half precision, cast to float32 after the lookup (exact for an fp16 source);
#: - ``int8``: symmetric int8 with one float scale per token row, standard ops only;
#: - ``int4``: SSE's 4-bit SSEQ scheme (one scale per row, zero point 7.5), decoded with
#:   standard ops only;
#: - ``int4_block``: 4-bit with a scale per block of 32 columns, read by onnxruntime's
#:   ``com.microsoft.GatherBlockQuantized`` (CPU builds of onnxruntime 1.22 and newer; not in
#:   every mobile or web build);
#: - ``int8_dynamic``, ``uint8_dynamic``: onnxruntime's dynamic quantization (optimum presets
#:   avx512_vnni = avx512 = arm64, and avx2): one scale for the whole table.
VARIANT_FILES: dict[str, str] = {
    "fp32": "model.onnx",
    "fp16": "model_fp16.onnx",
    "int8": "model_int8.onnx",
    "int4": "model_int4.onnx",
    "int4_block": "model_int4_block.onnx",
    "int8_dynamic": "model_int8_dynamic.onnx",
    "uint8_dynamic": "model_uint8_dynamic.onnx",
}
#: Variant name -> its file in onnxruntime's ORT format, as in a mobile bundle.
ORT_VARIANT_FILES: dict[str, str] = {
    variant: name.removesuffix(".onnx") + ".ort" for variant, name in VARIANT_FILES.items()
}


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class FileEntry:
    """A file of the folder with its size and checksum, to detect truncation and swaps."""

    file: str
    bytes: int
    sha256: str

    @classmethod
    def of(cls, folder: Path, name: str) -> FileEntry:
        """Describe the file ``folder / name`` as it is on disk now."""
        path = folder / name
        return cls(file=name, bytes=path.stat().st_size, sha256=sha256_file(path))


@dataclass(frozen=True)
class Pooling:
    """A family's rules around the masked mean: what is cut, skipped, applied and normalised.

    The defaults are SSE's. In order, a text is cut to ``max_chars`` characters, tokenized
    without special tokens, cut to its first ``max_tokens`` ids; the ids in
    ``skip_token_ids`` are left out of the mean (a text left with no id is the empty bag: a
    zero mean); the head is applied; the result is L2-normalised if ``normalize``.

    Attributes:
        head: ``"dyt"`` (SSE) or ``"identity"`` (the mean itself), one of :data:`HEADS`.
        skip_token_ids: Ids left out of the mean (Model2Vec drops its unknown token).
        max_chars: Characters of a text kept before tokenizing; ``None`` keeps all.
        max_tokens: Token ids of a text kept, the first ones; ``None`` keeps all.
        normalize: Whether the family's reference L2-normalises its output. The runtime then
            does so at the exported width, before ``truncate_dim``, even when the caller
            asks for ``normalize_embeddings=False``.
    """

    head: str = "dyt"
    skip_token_ids: tuple[int, ...] = ()
    max_chars: int | None = None
    max_tokens: int | None = None
    normalize: bool = False

    @property
    def graph_outputs(self) -> tuple[str, ...]:
        """The outputs a graph with this pooling has."""
        return (SENTENCE_EMBEDDING, TOKEN_SUM, *(DYT_OUTPUTS if self.head == "dyt" else ()))

    # The family's cuts and skips, as every runtime path applies them (the PyTorch reference of
    # the exporter restates them on its own, to check these).

    def cut_text(self, text: str) -> str:
        """The part of ``text`` the family tokenizes: its first ``max_chars`` characters."""
        return text if self.max_chars is None else text[: self.max_chars]

    @overload
    def cut_ids(self, ids: list[int]) -> list[int]: ...

    @overload
    def cut_ids(self, ids: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]: ...

    def cut_ids(self, ids: list[int] | npt.NDArray[np.int64]) -> list[int] | npt.NDArray[np.int64]:
        """The ids the family keeps of a text's ids (without special tokens): the first
        ``max_tokens``."""
        return ids if self.max_tokens is None else ids[: self.max_tokens]

    def cut_lengths(self, lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
        """:meth:`cut_ids` for texts of ``lengths`` ids laid end to end: how many each keeps."""
        return lengths if self.max_tokens is None else np.minimum(lengths, self.max_tokens)

    def counted(self, ids: npt.NDArray[np.int64]) -> int:
        """How many of a text's (cut) ids count in the mean: those not in ``skip_token_ids``."""
        if not self.skip_token_ids:
            return len(ids)
        return len(ids) - int(np.isin(ids, self.skip_token_ids).sum())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str) -> Pooling:
        """Build from parsed JSON, checking every value.

        Raises:
            ModelFormatError: naming ``where`` and the bad value.
        """
        try:
            pooling = cls(**{**data, "skip_token_ids": tuple(data.get("skip_token_ids", ()))})
        except TypeError as exc:
            raise ModelFormatError(
                f"{where}: pooling {data!r} is malformed ({exc}); re-export the model."
            ) from exc
        limits = (pooling.max_chars, pooling.max_tokens)
        if (
            pooling.head not in HEADS
            or not all(map(_is_count, pooling.skip_token_ids))
            or not all(limit is None or _is_count(limit) for limit in limits)
            or not isinstance(pooling.normalize, bool)
        ):
            raise ModelFormatError(
                f"{where}: pooling {data!r} holds an unknown head (known: {HEADS}) or a value "
                "of the wrong type; re-export the model with this version of sse-export."
            )
        return pooling


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _is_count(value: object) -> bool:
    """A non-negative int that fits an int64 (as ids and sizes are fed to numpy), not a bool."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


@dataclass(frozen=True)
class Manifest:
    """What an exported folder holds and where it came from.

    Attributes:
        model_name: A human-readable name of the source model.
        family: The checkpoint family, one of :data:`FAMILIES`.
        dim: Output width of every variant in the folder (after ``--dim`` truncation).
        source_dim: Width of the source checkpoint.
        vocab_size: Rows of the embedding table; equals the tokenizer's vocabulary size.
        pad_token_id: The id fed at padded positions (masked out by the graph).
        source_sha256: sha256 of the source weights file(s) and tokenizer, by file name.
        tokenizer: The exported tokenizer file.
        variants: Variant name -> its model file.
        default_variant: The variant :class:`sse_onnx.Encoder` loads when none is asked for.
        package_version: Version of sse-onnx that wrote the folder.
        pooling: The family's rules around the graph's masked mean.
        schema_version: Version of this format.
    """

    model_name: str
    family: str
    dim: int
    source_dim: int
    vocab_size: int
    pad_token_id: int
    source_sha256: dict[str, str]
    tokenizer: FileEntry
    variants: dict[str, FileEntry]
    default_variant: str
    package_version: str
    pooling: Pooling = field(default_factory=Pooling)
    schema_version: int = SCHEMA_VERSION
    format: str = field(default=FORMAT_NAME)

    def to_json(self) -> str:
        """Serialise to indented JSON with sorted keys."""
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str) -> Manifest:
        """Build a manifest from parsed JSON, checking format, schema version, keys and values.

        Raises:
            ModelFormatError: naming ``where`` and the problem.
        """
        version = _checked_version(data, where)
        _check_no_unknown_keys(data, cls, where)
        try:
            # A version-1 manifest reads as this version with SSE's pooling (the defaults).
            fields = {**data, "schema_version": SCHEMA_VERSION}
            fields["tokenizer"] = _file_entry(fields["tokenizer"], f"{where}: tokenizer")
            fields["variants"] = {
                k: _file_entry(v, f"{where}: variants[{k!r}]")
                for k, v in fields["variants"].items()
            }
            if "pooling" in fields:
                fields["pooling"] = Pooling.from_dict(fields["pooling"], where=where)
            elif version != 1:
                raise KeyError("pooling")
            manifest = cls(**fields)
        except (KeyError, TypeError, AttributeError) as exc:
            raise ModelFormatError(
                f"{where} is incomplete or malformed ({exc}); re-export the model with sse-export."
            ) from exc
        entries = _checked_entries(manifest, where)
        _check_counts(manifest, entries, where)
        _check_relations(manifest, where)
        for entry in entries:
            if not (isinstance(entry.sha256, str) and _SHA256.fullmatch(entry.sha256)):
                raise ModelFormatError(
                    f"{where}: the sha256 of {entry.file} is {entry.sha256!r}, not 64 hex "
                    "digits; re-export the model with sse-export."
                )
        return manifest


def _checked_version(data: Mapping[str, Any], where: str) -> int:
    """The schema version of a manifest's parsed JSON, after checking that it is one."""
    if data.get("format") != FORMAT_NAME:
        raise ModelFormatError(
            f"{where} is not an sse-onnx manifest (format={data.get('format')!r}); "
            "export the model with `sse-export --output DIR` and load DIR."
        )
    version = data.get("schema_version")
    if version not in READABLE_SCHEMA_VERSIONS:
        raise ModelFormatError(
            f"{where} has schema version {version!r}, but this sse-onnx reads versions "
            f"{list(READABLE_SCHEMA_VERSIONS)}; re-export the model with this version of "
            "sse-export, or install the sse-onnx version that wrote it."
        )
    return int(version)


def _check_no_unknown_keys(data: Mapping[str, Any], kind: type[Any], where: str) -> None:
    """Refuse keys the dataclass ``kind`` does not have (a missing key fails its construction)."""
    known = {item.name for item in dataclass_fields(kind)}
    unknown = sorted(map(str, set(data) - known))
    if unknown:
        raise ModelFormatError(
            f"{where} holds the unknown key{'s' if len(unknown) > 1 else ''} "
            f"{', '.join(map(repr, unknown))} (known: {', '.join(sorted(known))}); the manifest "
            "was edited or not written by sse-export: remove the key, or re-export the model."
        )


def _file_entry(data: object, where: str) -> FileEntry:
    """A :class:`FileEntry` from parsed JSON, its keys checked (its values are checked later)."""
    if not isinstance(data, Mapping):
        raise ModelFormatError(
            f"{where} is {data!r}, not an object with file, bytes and sha256; re-export the model."
        )
    _check_no_unknown_keys(data, FileEntry, where)
    return FileEntry(**data)


def _checked_entries(manifest: Manifest, where: str) -> list[FileEntry]:
    """The manifest's file entries (tokenizer first), after checking they name bare files."""
    labelled = {"tokenizer": manifest.tokenizer}
    labelled |= {f"variants[{name!r}]": entry for name, entry in manifest.variants.items()}
    for label, entry in labelled.items():
        problem = _file_name_problem(entry.file)
        if problem:
            raise ModelFormatError(
                f"{where}: {label} names the file {entry.file!r}, {problem}; a manifest "
                "names files of its own folder by their bare names. The manifest was edited "
                "or not written by sse-export: re-export the model."
            )
    return list(labelled.values())


def _check_counts(manifest: Manifest, entries: list[FileEntry], where: str) -> None:
    """Refuse a width, size or id that is not a non-negative integer numpy can take."""
    counts = {
        "dim": manifest.dim,
        "source_dim": manifest.source_dim,
        "vocab_size": manifest.vocab_size,
        "pad_token_id": manifest.pad_token_id,
    }
    counts |= {f"bytes of {entry.file}": entry.bytes for entry in entries}
    for name, value in counts.items():
        if not _is_count(value):
            raise ModelFormatError(
                f"{where}: {name} is {value!r}, not a non-negative integer; the manifest "
                "was edited or damaged, re-export the model with sse-export."
            )


def _check_relations(manifest: Manifest, where: str) -> None:
    """Refuse values that are each well formed but do not fit together or are not known."""
    if manifest.pad_token_id >= manifest.vocab_size:
        raise ModelFormatError(
            f"{where}: pad_token_id {manifest.pad_token_id} is not a row of the "
            f"{manifest.vocab_size}-row table; re-export the model with sse-export."
        )
    if manifest.dim > manifest.source_dim:
        raise ModelFormatError(
            f"{where}: dim {manifest.dim} is more than source_dim {manifest.source_dim}, the "
            "width of the checkpoint it was cut from; the manifest was edited: re-export the "
            "model with sse-export."
        )
    if not (isinstance(manifest.family, str) and manifest.family in FAMILIES):
        raise ModelFormatError(
            f"{where}: family {manifest.family!r} is not one of the known families {FAMILIES}; "
            "the manifest was edited or written by a newer sse-export: re-export the model with "
            "this version of sse-export."
        )
    if not (
        isinstance(manifest.default_variant, str) and manifest.default_variant in manifest.variants
    ):
        raise ModelFormatError(
            f"{where}: default_variant {manifest.default_variant!r} is not one of the "
            f"variants {sorted(manifest.variants)}; re-export the model with sse-export."
        )


def _file_name_problem(name: object) -> str | None:
    """Why ``name`` is not the bare name of a file in the folder, or ``None`` if it is."""
    if not isinstance(name, str) or name in ("", "."):
        return "which is not a file name"
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute():
        return "an absolute path"
    parts = re.split(r"[/\\]", name)
    if ".." in parts:
        return "which leads out of the folder through '..'"
    if len(parts) > 1 or ":" in name or "\0" in name:
        return "which is a path, not a file name (it holds '/', '\\', ':' or NUL)"
    try:
        encoded = os.fsencode(name)
    except UnicodeError:
        return "which the file system cannot encode"
    if len(encoded) > 255:  # NAME_MAX of common file systems
        return f"which is {len(encoded)} bytes long, more than a file name may be (255)"
    return None


def entry_path(folder: str | os.PathLike[str], entry: FileEntry) -> Path:
    """The path of a manifest entry's file, confined to ``folder``.

    Raises:
        ModelFormatError: naming the entry, if its name is not a bare file name or the file
            is a link that leads out of the folder.
    """
    root = Path(folder)
    problem = _file_name_problem(entry.file)
    if problem:
        raise ModelFormatError(
            f"{root / MANIFEST_FILE} names the file {entry.file!r}, {problem}; re-export the model."
        )
    path = root / entry.file
    try:
        inside = path.resolve().is_relative_to(root.resolve())
    except (OSError, RuntimeError) as exc:  # a loop of links
        raise ModelFormatError(f"{path} cannot be resolved ({exc}); re-export the model.") from exc
    if not inside:
        raise ModelFormatError(
            f"{path}, named by {MANIFEST_FILE} as {entry.file!r}, is a link to "
            f"{path.resolve()}, outside the model folder; a model folder may only use its own "
            "files. Replace the link with the file itself, or re-export the model."
        )
    return path


def check_self_contained(path: str | os.PathLike[str]) -> None:
    """Refuse an ONNX model file that reads tensor data from other files (external data).

    The manifest's sha256 does not cover such data and its location may lead anywhere, so the
    runtime never lets onnxruntime follow it. ORT-format files (``.ort``) are flatbuffers, not
    protobuf, and are not walked.

    Raises:
        ModelFormatError: naming the file and the tensors, or saying that the file is not an
            ONNX protobuf.
    """
    if Path(path).suffix == ".ort":
        return
    try:
        names = external_tensors(path)
    except ProtobufError as exc:
        raise ModelFormatError(
            f"{path} is not a loadable ONNX model ({exc}); the file is corrupt, re-export the "
            "model."
        ) from exc
    if names:
        raise ModelFormatError(
            f"{path} keeps the data of {len(names)} tensor(s) ({', '.join(map(repr, names[:3]))}"
            f"{', ...' if len(names) > 3 else ''}) in other files (ONNX external data), which a "
            "model folder may not do: their bytes are not checked and may lie anywhere. "
            "Re-export the model with sse-export, which stores every tensor in the model file."
        )


def read_manifest(folder: str | os.PathLike[str]) -> Manifest:
    """Read and check ``folder/manifest.json``.

    Raises:
        ModelFormatError: if the folder or manifest is missing, unreadable, or of another
            schema version.
    """
    root = Path(folder)
    path = root / MANIFEST_FILE
    if root.is_file():
        raise ModelFormatError(
            f"{root} is a file, not a model folder; pass the folder written by `sse-export "
            "--output` (the folder that holds manifest.json and the model files)."
        )
    if not root.is_dir():
        raise ModelFormatError(
            f"Model folder {root} does not exist; pass a folder written by `sse-export --output`."
        )
    if not path.is_file():
        raise ModelFormatError(
            f"{path} is missing: {root} is not an exported sse-onnx model folder. "
            "Export one with `sse-export --model CHECKPOINT --output DIR`."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))  # a BOM from Windows editors
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path} is not valid JSON ({exc}); re-export the model.") from exc
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path} does not hold a JSON object; re-export the model.")
    return Manifest.from_dict(data, where=str(path))


def write_manifest(folder: str | os.PathLike[str], manifest: Manifest) -> Path:
    """Write ``manifest`` as ``folder/manifest.json`` and return its path."""
    path = Path(folder) / MANIFEST_FILE
    path.write_text(manifest.to_json(), encoding="utf-8")
    return path
