"""Hybrid search in one SQLite file: FTS5's BM25 and the dense model, fused.

``from sse_onnx import Index`` is the way in (:class:`sse_onnx.index.store.Index`). This
application imports the core (the encoder, the format, the errors); the core never imports it.
"""

from __future__ import annotations

from sse_onnx.index.store import DEFAULT_ALPHA, AddResult, Hit, Index

__all__ = ["DEFAULT_ALPHA", "AddResult", "Hit", "Index"]
