"""Checks of what callers pass to :class:`sse_onnx.index.Index`: one clear error, before work."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from sse_onnx.errors import DuplicateIdError
from sse_onnx.texts import check_unicode

__all__ = [
    "Row",
    "check_positive_int",
    "checked_alpha",
    "checked_embeddings",
    "checked_ids",
    "checked_queries",
    "checked_rows",
    "checked_where",
]

_NOT_IN_KEYS = ('"', "\\", "\0")
_JSON_TYPES = {str: "text", int: "integer", float: "real"}


@dataclass(frozen=True)
class Row:
    """A document to write: its id, text, metadata JSON and text hash."""

    id: str
    text: str
    metadata: str | None
    sha256: bytes


def checked_queries(queries: object) -> list[str]:
    if not isinstance(queries, Sequence) or isinstance(queries, (bytes, bytearray)):
        raise TypeError(f"query must be a str or a list of str, not {type(queries).__name__}.")
    for i, text in enumerate(queries):
        if not isinstance(text, str):
            raise TypeError(f"query[{i}] is {type(text).__name__}, not str.")
    return list(queries)


def checked_ids(ids: object, name: str) -> list[str]:
    if isinstance(ids, str) or not isinstance(ids, Sequence):
        raise TypeError(f"{name} must be a list of str, not {type(ids).__name__}.")
    for i, id_ in enumerate(ids):
        if not isinstance(id_, str):
            raise TypeError(
                f"{name}[{i}] is {type(id_).__name__} ({id_!r:.40}), not str; ids are strings "
                "(use str(id))."
            )
        check_unicode(id_, f"{name}[{i}]")
    return list(ids)


def checked_rows(texts: object, ids: object, metadata: object) -> list[Row]:
    if isinstance(texts, str) or not isinstance(texts, Sequence):
        raise TypeError(f"texts must be a list of str, not {type(texts).__name__}.")
    names = checked_ids(ids, "ids")
    if len(names) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(names)} ids; give one id a text.")
    repeated = [id_ for id_, n in _counts(names).items() if n > 1]
    if repeated:
        raise DuplicateIdError(
            f"ids repeat {len(repeated)} id(s) ({', '.join(map(repr, repeated[:5]))}); each "
            "document needs its own id."
        )
    if metadata is None:
        metas: Sequence[object] = [None] * len(texts)
    elif isinstance(metadata, Sequence) and not isinstance(metadata, (str, bytes)):
        metas = metadata
        if len(metas) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(metas)} metadata; give one a text.")
    else:
        raise TypeError(f"metadata must be a list of dicts, not {type(metadata).__name__}.")
    rows = []
    for i, (text, id_, meta) in enumerate(zip(texts, names, metas, strict=True)):
        if not isinstance(text, str):
            raise TypeError(
                f"texts[{i}] is {type(text).__name__} ({text!r:.40}), not str; pass strings only."
            )
        check_unicode(text, f"texts[{i}]")
        rows.append(Row(id_, text, _metadata_json(meta, i), hashlib.sha256(text.encode()).digest()))
    return rows


def _counts(values: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def _metadata_json(meta: object, i: int) -> str | None:
    if meta is None:
        return None
    if not isinstance(meta, Mapping):
        raise TypeError(f"metadata[{i}] is {type(meta).__name__}, not a dict (or None).")
    if not all(isinstance(key, str) for key in meta):
        raise TypeError(f"metadata[{i}] has a key that is not a str; JSON keys are strings.")
    try:
        text = json.dumps(dict(meta), ensure_ascii=False, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata[{i}] is not JSON-serialisable ({exc}).") from exc
    check_unicode(text, f"metadata[{i}]")
    return text


def checked_where(where: object) -> list[tuple[str, str, Any]]:
    """``(JSON path, JSON type, value)`` a key of ``where``."""
    if where is None:
        return []
    if not isinstance(where, Mapping):
        raise TypeError(f"where must be a dict, not {type(where).__name__}.")
    filters = []
    for key, value in where.items():
        if not isinstance(key, str) or any(c in key for c in _NOT_IN_KEYS):
            raise ValueError(
                f"where key {key!r} must be a str without quotes, backslashes or NUL "
                "(SQLite's JSON paths cannot name such keys)."
            )
        check_unicode(key, f"where key {key!r}")
        filters.append((f'$."{key}"', _json_type(key, value), value))
    return filters


def _json_type(key: str, value: object) -> str:
    """The JSON type a ``where`` value matches (after checking the value can be matched)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if type(value) not in _JSON_TYPES:
        raise TypeError(
            f"where[{key!r}] is {type(value).__name__}; filters match a str, int, float, "
            "bool or None exactly."
        )
    if isinstance(value, str):
        check_unicode(value, f"where[{key!r}]")
        if "\0" in value:
            raise ValueError(
                f"where[{key!r}] holds a NUL character; SQLite's JSON functions stop at one, "
                "so it cannot be matched exactly."
            )
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise ValueError(f"where[{key!r}]={value} is outside SQLite's 64-bit integers.")
    return _JSON_TYPES[type(value)]


def checked_alpha(alpha: object) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"alpha={alpha!r} must be a number from 0 (keyword) to 1 (dense).")
    return float(alpha)


def check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}={value!r} must be a positive int.")


def checked_embeddings(embeddings: object, rows: int, dim: int) -> npt.NDArray[np.float32]:
    """Given embeddings as a finite ``(rows, dim)`` float32 array."""
    try:
        array = np.asarray(embeddings, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"embeddings must be a 2-d array of numbers ({exc}).") from exc
    if array.shape != (rows, dim):
        raise ValueError(
            f"embeddings has shape {array.shape}, expected ({rows}, {dim}): one row of the "
            "index's model width a text."
        )
    if not np.isfinite(array).all():
        raise ValueError("embeddings holds NaN or infinite values.")
    return array
