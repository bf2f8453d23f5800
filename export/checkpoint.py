"""Reading a checkpoint: tensors, the tokenizer and JSON configs, never the checkpoint's code.

The layouts read are the table :data:`LAYOUTS`, which detection, loading and error messages all
read; a layout is told by its files and then by its tensor names (anything else is ignored):

- **SSE fp32** (e.g. stable-static-embedding-fast-retrieval-mrl-en-v2): ``model.safetensors``
  with exactly ``embedding.weight`` ``[vocab, dim]`` and ``dyt.alpha``, ``dyt.beta``,
  ``dyt.bias`` ``[dim]``, plus ``tokenizer.json``;
- **SSEQ 4-bit** (quantized-stable-static-embedding-*): ``embedding.q4_k_m.bin`` (``vocab`` rows
  of ``dim / 2`` packed bytes, then ``vocab`` float32 scales), ``model_rest.safetensors`` with
  the three DyT vectors, plus ``tokenizer.json``. The table is decoded exactly as specified in
  :mod:`sse_export.quantize`;
- **sentence-transformers StaticEmbedding** (e.g. static-retrieval-mrl-en-v1):
  ``model.safetensors`` with exactly ``embedding.weight`` and ``tokenizer.json``, at the root
  or in ``0_StaticEmbedding/``, with ``modules.json``;
- **Model2Vec** (e.g. the potion models): ``model.safetensors`` with ``embeddings`` (and
  optionally ``weights``, ``mapping``), ``tokenizer.json`` and ``config.json``.

What each family's semantics are, and how they are recorded, is :mod:`sse_export.families`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from sse_export import families
from sse_export.families import DYT_KEYS, MODEL2VEC_CONFIG_FILE, MODULES_FILE, TABLE_KEY
from sse_export.quantize import decode_sseq
from sse_onnx.errors import CheckpointError
from sse_onnx.folder import TOKENIZER_FILE, Pooling, sha256_file

__all__ = [
    "LAYOUTS",
    "SSEQ_REST_FILE",
    "SSEQ_TABLE_FILE",
    "WEIGHTS_FILE",
    "Checkpoint",
    "Layout",
    "default_checkpoint",
    "load_checkpoint",
]

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
SSEQ_TABLE_FILE = "embedding.q4_k_m.bin"
SSEQ_REST_FILE = "model_rest.safetensors"

Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Layout:
    """One on-disk layout of a checkpoint: the files read besides ``tokenizer.json``, and what
    the safetensors file among them holds.

    Attributes:
        name: How messages name the layout.
        family: The family whose semantics an export follows, one of
            :data:`sse_onnx.folder.FAMILIES`.
        source_format: ``"safetensors"``, or ``"sseq"`` for SSE's 4-bit files.
        files: The files read, in order; any of them present tells the layout's files, and
            the last one is the safetensors file holding ``tensors``.
        tensors: The tensor names that file always holds.
        optional: Tensor names it may hold as well.
        marker: The prefix of a tensor name that tells this layout from the others with the
            same files.
        table: The tensor whose rows are averaged (SSEQ: decoded from the first file).
        configs: JSON files whose content sets the family's rules (their sha256 is recorded),
            read beside the weights or else at the checkpoint's root.
    """

    name: str
    family: str
    source_format: str
    files: tuple[str, ...]
    tensors: frozenset[str]
    optional: frozenset[str] = frozenset()
    marker: str = ""
    table: str = TABLE_KEY
    configs: tuple[str, ...] = ()

    def holds(self) -> str:
        """What the safetensors file holds, for messages."""
        optional = f" and, optionally, {sorted(self.optional)}" if self.optional else ""
        return f"exactly {sorted(self.tensors)}{optional}"


#: Every layout read, in the order detection tries them (``model.safetensors`` before SSEQ).
LAYOUTS: tuple[Layout, ...] = (
    Layout(
        "SSE",
        "sse",
        "safetensors",
        (WEIGHTS_FILE,),
        frozenset({TABLE_KEY, *DYT_KEYS}),
        marker="dyt.",
    ),
    Layout(
        "SSE 4-bit (SSEQ)",
        "sse",
        "sseq",
        (SSEQ_TABLE_FILE, SSEQ_REST_FILE),
        frozenset(DYT_KEYS),
        marker="dyt.",
    ),
    Layout(
        "Model2Vec",
        "model2vec",
        "safetensors",
        (WEIGHTS_FILE,),
        frozenset({"embeddings"}),
        optional=frozenset({"weights", "mapping"}),
        marker="embeddings",
        table="embeddings",
        configs=(MODEL2VEC_CONFIG_FILE,),
    ),
    Layout(
        "sentence-transformers StaticEmbedding",
        "sentence-transformers",
        "safetensors",
        (WEIGHTS_FILE,),
        frozenset({TABLE_KEY}),
        marker=TABLE_KEY,
        configs=(MODULES_FILE,),
    ),
)


@dataclass(frozen=True)
class Checkpoint:
    """The tensors of a static-embedding model, as float32 numpy arrays, and its rules.

    Attributes:
        name: A human-readable name (the folder's name, or the config's ``name``).
        folder: Where the checkpoint was read from.
        source_format: ``"safetensors"`` or ``"sseq"`` (4-bit).
        table: The table whose rows are averaged, ``[vocab, dim]`` (for Model2Vec, with its
            ``mapping`` and ``weights`` folded in).
        alpha, beta, bias: The SeparableDyT vectors ``[dim]``; ``None`` for families without
            a head.
        tokenizer_path: The checkpoint's ``tokenizer.json``.
        source_sha256: sha256 of the files read (weights, tokenizer, configs), by file name.
        family: One of :data:`sse_onnx.folder.FAMILIES`.
        pooling: The family's rules around the mean, as the manifest records them.
    """

    name: str
    folder: Path
    source_format: str
    table: Array
    alpha: Array | None
    beta: Array | None
    bias: Array | None
    tokenizer_path: Path
    source_sha256: dict[str, str]
    family: str
    pooling: Pooling

    @property
    def vocab_size(self) -> int:
        """Rows of the embedding table."""
        return int(self.table.shape[0])

    @property
    def dim(self) -> int:
        """Width of the embedding table and of the DyT vectors."""
        return int(self.table.shape[1])

    def dyt(self, dim: int | None = None) -> tuple[Array, Array, Array] | None:
        """The DyT vectors cut to their first ``dim`` values, or ``None`` without a head."""
        if self.alpha is None or self.beta is None or self.bias is None:
            return None
        return self.alpha[:dim], self.beta[:dim], self.bias[:dim]


def default_checkpoint() -> Path:
    """The bundled default SSE checkpoint (``models/default`` in the source tree)."""
    here = Path(__file__).resolve().parent
    installed = here / "default_checkpoint"  # where a wheel puts it
    return installed if installed.is_dir() else here.parent / "models" / "default"


def load_checkpoint(model: str | os.PathLike[str] | None = None) -> Checkpoint:
    """Load a checkpoint of any supported family from a local folder (or a hub id).

    Args:
        model: A checkpoint folder (see the module docstring for the layouts), a Hugging Face
            hub id, or ``None`` for the bundled default.

    Raises:
        CheckpointError: naming the file, key or shape that is wrong, and the fix.
    """
    root = default_checkpoint() if model is None else _resolve(model)
    folder = families.source_folder(root)
    tokenizer_path = folder / TOKENIZER_FILE
    files = _layout_files(folder)
    weights = [folder / name for name in files]
    for path in (*weights, tokenizer_path):
        if not path.is_file():
            raise CheckpointError(
                f"{path} is missing; the checkpoint folder is incomplete, fetch it again."
            )
    vocab = _tokenizer_vocab_size(tokenizer_path)
    tensors = _read_tensors(weights[-1])
    layout = _layout_of(files, set(tensors), weights[-1])
    if layout.source_format == "sseq":
        tensors[layout.table] = _read_sseq_table(weights[0], vocab, tensors["dyt.alpha"].shape)
    # For SSEQ the table comes from the first file and the DyT vectors from the second.
    _check_tensors(tensors, weights[0], weights[-1], layout.table)
    pooling = Pooling()
    if layout.family == "model2vec":
        tensors = {TABLE_KEY: families.fold_model2vec(tensors, vocab, weights[0])}
        pooling = families.model2vec_pooling(folder, tokenizer_path)
    elif layout.family == "sentence-transformers":
        pooling = families.static_embedding_pooling(root, tokenizer_path)
    configs = [
        next((place / name for place in (folder, root) if (place / name).is_file()), None)
        for name in layout.configs
    ]
    table = tensors[TABLE_KEY]
    if vocab != table.shape[0]:
        raise CheckpointError(
            f"{tokenizer_path} has {vocab} tokens but {weights[0]} has {table.shape[0]} table "
            "rows; the tokenizer belongs to another model, use the one saved with these weights."
        )
    read = [*weights, tokenizer_path, *(path for path in configs if path is not None)]
    return Checkpoint(
        name=_model_name(root),
        folder=root,
        source_format=layout.source_format,
        table=table,
        alpha=tensors.get("dyt.alpha"),
        beta=tensors.get("dyt.beta"),
        bias=tensors.get("dyt.bias"),
        tokenizer_path=tokenizer_path,
        source_sha256={path.name: sha256_file(path) for path in read},
        family=layout.family,
        pooling=pooling,
    )


def _layout_files(folder: Path) -> tuple[str, ...]:
    """The files of the first layouts (in :data:`LAYOUTS` order) of which ``folder`` has one."""
    for files in dict.fromkeys(layout.files for layout in LAYOUTS):
        if any((folder / name).is_file() for name in files):
            return files
    kinds = "; ".join(f"{layout.name}: {' and '.join(layout.files)}" for layout in LAYOUTS)
    raise CheckpointError(
        f"{folder / WEIGHTS_FILE} is missing: a checkpoint folder holds {TOKENIZER_FILE} and the "
        f"weights of one layout ({kinds}; sentence-transformers' possibly in "
        f"{families.STATIC_MODULE_FOLDER}/); pass the folder that has them."
    )


def _layout_of(files: tuple[str, ...], keys: set[str], where: Path) -> Layout:
    """The layout with these files whose tensor names ``keys`` are, checked to be exactly its.

    Raises:
        CheckpointError: if the names fit no layout, or miss or add to the one they mark,
            naming what each layout holds.
    """
    candidates = [layout for layout in LAYOUTS if layout.files == files]
    layout = next((c for c in candidates if any(key.startswith(c.marker) for key in keys)), None)
    if layout is None:
        fits = "; ".join(f"{c.name} ({c.holds()})" for c in candidates)
        raise CheckpointError(
            f"{where} holds the keys {sorted(keys)}, which fit no supported family: {fits}."
        )
    missing = sorted(layout.tensors - keys)
    unexpected = sorted(keys - layout.tensors - layout.optional)
    if missing or unexpected:
        raise CheckpointError(
            f"{where}: missing keys {missing}, unexpected keys {unexpected}; the {where.name} of "
            f"a {layout.name} checkpoint holds {layout.holds()}."
        )
    return layout


def _check_tensors(
    tensors: dict[str, npt.NDArray[Any]], table_file: Path, dyt_file: Path, table_key: str
) -> None:
    """Shapes agree (table 2-D, DyT vectors as wide as the table) and values are finite.

    Errors name ``table_file`` for the table and ``dyt_file`` for the other tensors (the same
    file but for SSEQ checkpoints).
    """
    table = tensors[table_key]
    if table.ndim != 2 or table.shape[0] < 1 or table.shape[1] < 1:
        raise CheckpointError(
            f"{table_file}: {table_key} has shape {list(table.shape)}, expected [vocab, dim]."
        )
    for key in DYT_KEYS:
        if key in tensors and tensors[key].shape != (table.shape[1],):
            raise CheckpointError(
                f"{dyt_file}: {key} has shape {list(tensors[key].shape)} but {TABLE_KEY} is "
                f"{list(table.shape)}; the DyT vectors must have length {table.shape[1]}."
            )
    for key, value in tensors.items():
        if not np.isfinite(value).all():
            bad = int(np.size(value) - np.isfinite(value).sum())
            raise CheckpointError(
                f"{table_file if key == table_key else dyt_file}: {key} holds {bad} non-finite "
                "values (NaN or inf); the checkpoint is damaged or was saved mid-training, use a "
                "finished one."
            )


def _read_sseq_table(path: Path, vocab: int, dyt_shape: tuple[int, ...]) -> Array:
    """Decode an SSEQ ``embedding.q4_k_m.bin``: packed nibbles, then one float32 scale a row."""
    if len(dyt_shape) != 1 or dyt_shape[0] < 1:
        raise CheckpointError(
            f"{path.parent / SSEQ_REST_FILE}: dyt.alpha has shape {list(dyt_shape)}, "
            "expected [dim]."
        )
    dim = dyt_shape[0]
    row_bytes = (dim + 1) // 2
    expected = vocab * row_bytes + 4 * vocab
    size = path.stat().st_size
    if size != expected:
        raise CheckpointError(
            f"{path} has {size} bytes, but {vocab} tokens (tokenizer.json) of width {dim} "
            f"(dyt.alpha) need {expected} ({vocab} x {row_bytes} packed bytes + {vocab} float32 "
            "scales); the file is truncated or belongs to another model."
        )
    raw = np.fromfile(path, dtype=np.uint8)
    packed = raw[: vocab * row_bytes].reshape(vocab, row_bytes)
    scales = raw[vocab * row_bytes :].view("<f4").astype(np.float32)
    table: Array = decode_sseq(packed, scales, dim)
    return table


def _resolve(model: str | os.PathLike[str]) -> Path:
    """A local folder as is; otherwise try it as a hub id (weights and JSON files only)."""
    path = Path(model)
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(f"{path} is a file; pass the checkpoint folder that holds it.")
        return path
    text = os.fspath(model)
    if text.count("/") != 1 or text.startswith((".", "/")):
        raise CheckpointError(f"Checkpoint folder {path} does not exist; check the path.")
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:
        raise CheckpointError(
            f"{text} is not a local folder, and huggingface_hub is not installed to fetch it as a "
            "hub id; download the checkpoint folder and pass its path."
        ) from exc
    try:
        nested = f"{families.STATIC_MODULE_FOLDER}/{WEIGHTS_FILE}"
        files = dict.fromkeys(name for layout in LAYOUTS for name in layout.files)
        patterns = [*files, nested, "*.json", "README.md"]
        local = snapshot_download(text, allow_patterns=patterns)
    except Exception as exc:  # offline, unknown repo, auth: the hub client has many classes
        raise CheckpointError(
            f"{text} is not a local folder and could not be fetched as a Hugging Face hub id "
            f"({type(exc).__name__}); check the path, or (offline) download the checkpoint "
            "folder elsewhere and pass its local path."
        ) from exc
    return Path(local)


def _read_tensors(weights: Path) -> dict[str, npt.NDArray[Any]]:
    """Read every tensor: ``mapping`` (Model2Vec's token index) as int64, the others float32."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in sorted(handle.keys())}
    except Exception as exc:  # safetensors raises its own error classes for a bad header
        raise CheckpointError(
            f"{weights} is not a readable safetensors file ({exc}); the download is "
            "incomplete or the file is damaged, fetch it again."
        ) from exc
    # Model2Vec's int8 tables are averaged as the integers they hold (no scale is stored);
    # only its token mapping is an index.
    return {
        key: (value.long() if key == "mapping" else value.float()).numpy()
        for key, value in tensors.items()
    }


def _tokenizer_vocab_size(path: Path) -> int:
    try:
        return int(Tokenizer.from_file(str(path)).get_vocab_size(with_added_tokens=True))
    except Exception as exc:  # tokenizers raises a bare Exception for a bad file
        raise CheckpointError(
            f"{path} is not a readable Hugging Face tokenizer.json ({exc}); use the tokenizer "
            "saved with the model."
        ) from exc


def _model_name(folder: Path) -> str:
    config = folder / "config.json"
    if config.is_file():
        try:
            name = json.loads(config.read_text(encoding="utf-8")).get("name")
        except (OSError, ValueError, AttributeError):
            name = None
        if isinstance(name, str) and name:
            return name
    return folder.resolve().name
