"""Reading an SSE checkpoint: tensors and the tokenizer, never the checkpoint's Python code.

Two layouts are read, detected by their files (anything else in the folder is ignored):

- **fp32** (e.g. stable-static-embedding-fast-retrieval-mrl-en-v2): ``model.safetensors`` with
  exactly ``embedding.weight`` ``[vocab, dim]`` and ``dyt.alpha``, ``dyt.beta``, ``dyt.bias``
  ``[dim]``, plus ``tokenizer.json``;
- **SSEQ 4-bit** (quantized-stable-static-embedding-*): ``embedding.q4_k_m.bin`` (``vocab`` rows
  of ``dim / 2`` packed bytes, then ``vocab`` float32 scales), ``model_rest.safetensors`` with
  the three DyT vectors, plus ``tokenizer.json``. The table is decoded exactly as specified in
  :mod:`sse_export.quantize`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from sse_export.quantize import decode_sseq
from sse_onnx.errors import CheckpointError
from sse_onnx.format import TOKENIZER_FILE, sha256_file

__all__ = [
    "SSEQ_REST_FILE",
    "SSEQ_TABLE_FILE",
    "WEIGHTS_FILE",
    "Checkpoint",
    "default_checkpoint",
    "load_checkpoint",
]

logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
SSEQ_TABLE_FILE = "embedding.q4_k_m.bin"
SSEQ_REST_FILE = "model_rest.safetensors"
TABLE_KEY = "embedding.weight"
DYT_KEYS = ("dyt.alpha", "dyt.beta", "dyt.bias")
EXPECTED_KEYS = frozenset({TABLE_KEY, *DYT_KEYS})

Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Checkpoint:
    """The tensors of an SSE model, as float32 numpy arrays, and its tokenizer file.

    Attributes:
        name: A human-readable name (the folder's name, or the config's ``name``).
        folder: Where the checkpoint was read from.
        source_format: ``"safetensors"`` or ``"sseq"`` (4-bit).
        table: The EmbeddingBag table ``[vocab, dim]``.
        alpha, beta, bias: The SeparableDyT vectors ``[dim]``.
        tokenizer_path: The checkpoint's ``tokenizer.json``.
        source_sha256: sha256 of the weights and tokenizer files, by file name.
    """

    name: str
    folder: Path
    source_format: str
    table: Array
    alpha: Array
    beta: Array
    bias: Array
    tokenizer_path: Path
    source_sha256: dict[str, str]

    @property
    def vocab_size(self) -> int:
        """Rows of the embedding table."""
        return int(self.table.shape[0])

    @property
    def dim(self) -> int:
        """Width of the embedding table and of the DyT vectors."""
        return int(self.table.shape[1])


def default_checkpoint() -> Path:
    """The bundled default SSE checkpoint (``models/default`` in the source tree)."""
    here = Path(__file__).resolve().parent
    installed = here / "default_checkpoint"  # where a wheel puts it
    return installed if installed.is_dir() else here.parent / "models" / "default"


def load_checkpoint(model: str | os.PathLike[str] | None = None) -> Checkpoint:
    """Load an SSE checkpoint from a local folder (or a hub id where ``huggingface_hub`` is).

    Args:
        model: A checkpoint folder (fp32 or SSEQ 4-bit layout), a Hugging Face hub id, or
            ``None`` for the bundled default.

    Raises:
        CheckpointError: naming the file, key or shape that is wrong, and the fix.
    """
    folder = default_checkpoint() if model is None else _resolve(model)
    tokenizer_path = folder / TOKENIZER_FILE
    if (folder / WEIGHTS_FILE).is_file():
        source_format, weights = "safetensors", [folder / WEIGHTS_FILE]
    elif (folder / SSEQ_TABLE_FILE).is_file() or (folder / SSEQ_REST_FILE).is_file():
        source_format, weights = "sseq", [folder / SSEQ_TABLE_FILE, folder / SSEQ_REST_FILE]
    else:
        raise CheckpointError(
            f"{folder / WEIGHTS_FILE} is missing: an SSE checkpoint folder holds {WEIGHTS_FILE} "
            f"(or, 4-bit, {SSEQ_TABLE_FILE} and {SSEQ_REST_FILE}) and {TOKENIZER_FILE}; pass "
            "the folder that has them."
        )
    for path in (*weights, tokenizer_path):
        if not path.is_file():
            raise CheckpointError(
                f"{path} is missing; the checkpoint folder is incomplete, fetch it again."
            )
    vocab = _tokenizer_vocab_size(tokenizer_path)
    if source_format == "safetensors":
        tensors = _read_tensors(weights[0], EXPECTED_KEYS)
    else:
        tensors = _read_tensors(weights[1], frozenset(DYT_KEYS))
        tensors[TABLE_KEY] = _read_sseq_table(weights[0], vocab, tensors["dyt.alpha"].shape)
    _check_tensors(tensors, weights[0])
    table = tensors[TABLE_KEY]
    if vocab != table.shape[0]:
        raise CheckpointError(
            f"{tokenizer_path} has {vocab} tokens but {weights[0]} has {table.shape[0]} table "
            "rows; the tokenizer belongs to another model, use the one saved with these weights."
        )
    return Checkpoint(
        name=_model_name(folder),
        folder=folder,
        source_format=source_format,
        table=table,
        alpha=tensors["dyt.alpha"],
        beta=tensors["dyt.beta"],
        bias=tensors["dyt.bias"],
        tokenizer_path=tokenizer_path,
        source_sha256={path.name: sha256_file(path) for path in (*weights, tokenizer_path)},
    )


def _check_tensors(tensors: dict[str, Array], weights: Path) -> None:
    """Shapes agree (table 2-D, DyT vectors as wide as the table) and values are finite."""
    table = tensors[TABLE_KEY]
    if table.ndim != 2 or table.shape[0] < 1 or table.shape[1] < 1:
        raise CheckpointError(
            f"{weights}: {TABLE_KEY} has shape {list(table.shape)}, expected [vocab, dim]."
        )
    for key in DYT_KEYS:
        if tensors[key].shape != (table.shape[1],):
            raise CheckpointError(
                f"{weights}: {key} has shape {list(tensors[key].shape)} but {TABLE_KEY} is "
                f"{list(table.shape)}; the DyT vectors must have length {table.shape[1]}."
            )
    for key, value in tensors.items():
        if not np.isfinite(value).all():
            bad = int(np.size(value) - np.isfinite(value).sum())
            raise CheckpointError(
                f"{weights}: {key} holds {bad} non-finite values (NaN or inf); the checkpoint "
                "is damaged or was saved mid-training, use a finished one."
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
        local = snapshot_download(text, allow_patterns=[WEIGHTS_FILE, "*.json"])
    except Exception as exc:  # offline, unknown repo, auth: the hub client has many classes
        raise CheckpointError(
            f"{text} is not a local folder and could not be fetched as a Hugging Face hub id "
            f"({type(exc).__name__}); check the path, or (offline) download the checkpoint "
            "folder elsewhere and pass its local path."
        ) from exc
    return Path(local)


def _read_tensors(weights: Path, expected: frozenset[str]) -> dict[str, Array]:
    """Read the expected tensors as float32, rejecting missing and unexpected keys."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as handle:
            keys = set(handle.keys())
            missing = sorted(expected - keys)
            unexpected = sorted(keys - expected)
            if missing or unexpected:
                raise CheckpointError(
                    f"{weights}: missing keys {missing}, unexpected keys {unexpected}; this "
                    f"file of an SSE checkpoint holds exactly {sorted(expected)}."
                )
            return {key: handle.get_tensor(key).float().numpy() for key in sorted(keys)}
    except CheckpointError:
        raise
    except Exception as exc:  # safetensors raises its own error classes for a bad header
        raise CheckpointError(
            f"{weights} is not a readable safetensors file ({exc}); the download is "
            "incomplete or the file is damaged, fetch it again."
        ) from exc


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
