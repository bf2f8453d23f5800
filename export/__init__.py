"""sse-export: turn a static-embedding checkpoint into a validated ONNX folder for :mod:`sse_onnx`.

SSE checkpoints, sentence-transformers ``StaticEmbedding`` and Model2Vec folders are read, each
with its own semantics (:mod:`sse_export.families`).

Example:
    >>> from sse_export import export
    >>> result = export(output="sse-256", dim=256)  # doctest: +SKIP
"""

from __future__ import annotations

from sse_export.checkpoint import Checkpoint, load_checkpoint
from sse_export.exporter import ExportResult, export

__all__ = ["Checkpoint", "ExportResult", "export", "load_checkpoint"]
