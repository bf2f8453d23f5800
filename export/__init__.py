"""sse-export: turn a static-embedding checkpoint into a validated ONNX folder for :mod:`sse_onnx`.

SSE checkpoints, sentence-transformers ``StaticEmbedding`` and Model2Vec folders are read, each
with its own semantics (:mod:`sse_export.families`).

Example:
    >>> from sse_export import export
    >>> result = export(output="sse-256", dim=256)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sse_onnx._lazy import lazy_names

if TYPE_CHECKING:
    from sse_export.checkpoint import Checkpoint, load_checkpoint
    from sse_export.exporter import ExportResult, export

__all__ = ["Checkpoint", "ExportResult", "export", "load_checkpoint"]

#: Where each public name lives. They are imported on first use, so that importing a light
#: module of the package (``sse_export.evaluate``, numpy only) does not load torch and onnx.
_HOMES = {
    "Checkpoint": "sse_export.checkpoint",
    "load_checkpoint": "sse_export.checkpoint",
    "ExportResult": "sse_export.exporter",
    "export": "sse_export.exporter",
}


__getattr__, __dir__ = lazy_names(__name__, _HOMES, globals())
