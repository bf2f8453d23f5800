"""Checkpoint families: which library's semantics a folder follows, and what those are.

A static-embedding model is a token table and a mean; the families differ in what surrounds
the mean. The family is told by the tensor names in ``model.safetensors`` (never by code; the
layouts, their files and tensor names are the table :data:`sse_export.checkpoint.LAYOUTS`):

- **sse**: ``embedding.weight`` and ``dyt.alpha``, ``dyt.beta``, ``dyt.bias`` (or the SSEQ
  4-bit files): SSE's reference, a DyT head, no truncation, ``[UNK]`` kept.
- **sentence-transformers**: ``embedding.weight`` alone, at the root or in the
  ``StaticEmbedding`` module's folder (``0_StaticEmbedding/``), as
  ``sentence_transformers.models.StaticEmbedding`` reads it: ``encode_batch`` without special
  tokens, ``EmbeddingBag(mode="mean")``, ``[UNK]`` kept, no head. It calls ``no_padding()`` but
  not ``no_truncation()``, so a truncation set in ``tokenizer.json`` applies (``max_tokens``).
  A ``Normalize`` module after it in ``modules.json`` normalises the output.
- **model2vec**: ``embeddings``, optionally ``weights`` and ``mapping`` (vocabulary
  quantization), plus ``config.json``, as ``model2vec.StaticModel`` (0.10) reads them: each
  text is cut to ``max_length * median token length`` characters, tokenized without special
  tokens and cut to ``max_length`` tokens (``config.json``'s ``max_length``, 512 when absent,
  ``null`` for none), the unknown token is dropped, the rows
  ``embeddings[mapping[id]] * weights[id]`` are averaged (a text with no token left gives a
  zero vector), and the result is normalised if ``config.json`` says ``"normalize": true``.
  ``mapping`` and ``weights`` are folded into one row per token id, which is exact.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from sse_onnx.errors import CheckpointError
from sse_onnx.folder import Pooling

__all__ = [
    "DYT_KEYS",
    "MODEL2VEC_DEFAULT_MAX_LENGTH",
    "TABLE_KEY",
    "fold_model2vec",
    "is_matryoshka",
    "model2vec_pooling",
    "source_folder",
    "static_embedding_pooling",
]

logger = logging.getLogger(__name__)

TABLE_KEY = "embedding.weight"
DYT_KEYS = ("dyt.alpha", "dyt.beta", "dyt.bias")
MODULES_FILE = "modules.json"
ST_CONFIG_FILE = "config_sentence_transformers.json"
MODEL2VEC_CONFIG_FILE = "config.json"
#: The folder sentence-transformers saves a StaticEmbedding module in.
STATIC_MODULE_FOLDER = "0_StaticEmbedding"
#: model2vec's ``max_length`` when ``config.json`` does not set one.
MODEL2VEC_DEFAULT_MAX_LENGTH = 512
#: Files whose text decides whether a model is Matryoshka-trained (see :func:`is_matryoshka`).
CARD_FILES = ("README.md", MODEL2VEC_CONFIG_FILE, ST_CONFIG_FILE)
_MATRYOSHKA = re.compile(r"matryoshka|\bmrl\b", re.IGNORECASE)

Array = npt.NDArray[np.float32]


def source_folder(folder: Path) -> Path:
    """The folder holding the weights and tokenizer: the root, or the StaticEmbedding module's.

    ``modules.json`` names the module's folder where it lists a ``StaticEmbedding`` module
    (sentence-transformers and model2vec write one); otherwise ``0_StaticEmbedding/`` is used
    when the root has no ``model.safetensors`` but it has.
    """
    for module in _modules(folder):
        if _module_kind(module) == "StaticEmbedding":
            return folder / str(module.get("path", ""))
    nested = folder / STATIC_MODULE_FOLDER
    if not (folder / "model.safetensors").is_file() and (nested / "model.safetensors").is_file():
        return nested
    return folder


def static_embedding_pooling(folder: Path, tokenizer_path: Path) -> Pooling:
    """sentence-transformers' rules for a StaticEmbedding model (see the module docstring).

    Raises:
        CheckpointError: for a module other than Normalize after the StaticEmbedding, or a
            left-side truncation in ``tokenizer.json``.
    """
    kinds = [_module_kind(module) for module in _modules(folder)]
    others = [kind for kind in kinds if kind not in ("StaticEmbedding", "Normalize")]
    if others:
        raise CheckpointError(
            f"{folder / MODULES_FILE} lists the modules {kinds}; only StaticEmbedding, "
            f"optionally followed by Normalize, can be exported ({others} cannot)."
        )
    truncation = _json_object(tokenizer_path).get("truncation")
    max_tokens = None
    if truncation:
        if truncation.get("direction", "Right") != "Right":
            raise CheckpointError(
                f"{tokenizer_path} truncates from the {truncation.get('direction')}; only "
                "right-side truncation (keep the first tokens) can be exported."
            )
        max_tokens = int(truncation["max_length"])
    prompt = _json_object(folder / ST_CONFIG_FILE).get("default_prompt_name")
    if prompt:
        logger.warning(
            "%s sets default_prompt_name=%r: sentence-transformers prepends that prompt to "
            "every text, the export does not; prepend it to your texts yourself.",
            folder / ST_CONFIG_FILE,
            prompt,
        )
    return Pooling(head="identity", max_tokens=max_tokens, normalize="Normalize" in kinds)


def model2vec_pooling(folder: Path, tokenizer_path: Path) -> Pooling:
    """model2vec's rules, from ``config.json`` and the tokenizer (see the module docstring).

    Raises:
        CheckpointError: if ``config.json`` is missing or holds a bad ``normalize`` or
            ``max_length``.
    """
    path = folder / MODEL2VEC_CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing: a Model2Vec model reads normalize and max_length from it; "
            "fetch the complete model folder."
        )
    config = _json_object(path)
    normalize = config.get("normalize", False)
    max_length = config.get("max_length", MODEL2VEC_DEFAULT_MAX_LENGTH)
    if not isinstance(normalize, bool) or not (
        max_length is None or (type(max_length) is int and max_length > 0)
    ):
        raise CheckpointError(
            f"{path}: normalize={normalize!r}, max_length={max_length!r}; expected a bool and a "
            "positive int or null."
        )
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    unk = _model2vec_unk_id(tokenizer)
    max_chars = None if max_length is None else max_length * _median_token_length(tokenizer)
    return Pooling(
        head="identity",
        skip_token_ids=() if unk is None else (unk,),
        max_chars=max_chars,
        max_tokens=max_length,
        normalize=normalize,
    )


def fold_model2vec(tensors: dict[str, npt.NDArray[Any]], vocab: int, where: Path) -> Array:
    """One row per token id: ``embeddings[mapping[id]] * weights[id]``, what model2vec averages.

    ``tensors`` are checked already: ``embeddings`` is 2-D and every value finite.

    Raises:
        CheckpointError: if ``mapping`` or ``weights`` do not have one entry per token, or
            ``mapping`` points outside ``embeddings``.
    """
    embeddings = tensors["embeddings"].astype(np.float32)
    for key in ("mapping", "weights"):
        if key in tensors and tensors[key].shape != (vocab,):
            raise CheckpointError(
                f"{where}: {key} has shape {list(tensors[key].shape)} but the tokenizer has "
                f"{vocab} tokens; it must hold one entry per token."
            )
    table = embeddings
    if "mapping" in tensors:
        mapping = tensors["mapping"]
        if mapping.dtype.kind not in "iu" or mapping.min() < 0 or mapping.max() >= len(table):
            raise CheckpointError(
                f"{where}: mapping must hold integer rows of embeddings (0 to {len(table) - 1}); "
                "the file is damaged or belongs to another model."
            )
        table = table[mapping]
    if "weights" in tensors:
        weights = tensors["weights"].astype(np.float64)
        table = (table.astype(np.float64) * weights[:, None]).astype(np.float32)
    return np.ascontiguousarray(table)


def is_matryoshka(folder: Path) -> bool:
    """Whether the model card or config says the model is Matryoshka-trained.

    The rule: ``README.md``, ``config.json`` or ``config_sentence_transformers.json`` in the
    checkpoint folder mentions "Matryoshka" (any case, e.g. the ``MatryoshkaLoss`` of
    sentence-transformers' generated cards) or "MRL" as a word (as in model names such as
    static-retrieval-mrl-en-v1).
    """
    texts = (
        (folder / name).read_text(encoding="utf-8", errors="replace")
        for name in CARD_FILES
        if (folder / name).is_file()
    )
    return any(_MATRYOSHKA.search(text) for text in texts)


def _modules(folder: Path) -> list[dict[str, Any]]:
    """The entries of ``modules.json`` (none if the file is absent)."""
    path = folder / MODULES_FILE
    modules = _read_json(path)
    if modules is None:
        return []
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise CheckpointError(f"{path} is not a list of modules; fetch it again.")
    return modules


def _module_kind(module: dict[str, Any]) -> str:
    """``"sentence_transformers.models.Normalize"`` -> ``"Normalize"``."""
    return str(module.get("type", "")).rsplit(".", 1)[-1]


def _json_object(path: Path) -> dict[str, Any]:
    """A JSON object file, or ``{}`` if the file is absent."""
    data = _read_json(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} does not hold a JSON object; fetch it again.")
    return data


def _read_json(path: Path) -> Any:
    """The parsed content of a JSON file, or ``None`` if the file is absent."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); fetch it again.") from exc


def _model2vec_unk_id(tokenizer: Tokenizer) -> int | None:
    """The id model2vec drops, found as ``model2vec.model._get_unk_token_id`` finds it."""
    model = tokenizer.model
    if hasattr(model, "unk_token"):  # WordPiece, BPE, WordLevel
        token = model.unk_token
        return None if token is None else tokenizer.token_to_id(token)
    unk_id = json.loads(tokenizer.to_str())["model"].get("unk_id")  # Unigram
    return None if unk_id is None else int(unk_id)


def _median_token_length(tokenizer: Tokenizer) -> int:
    """``int(median(len(token)))`` over the vocabulary, added tokens included, as model2vec."""
    return int(np.median([len(token) for token in tokenizer.get_vocab()]))
