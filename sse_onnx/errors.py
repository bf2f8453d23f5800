"""The error hierarchy shared by the runtime and the exporter.

Every error the project raises on purpose derives from :class:`SSEError`, so callers can catch
one class. Errors about a file or folder on disk also derive from :class:`ValueError`, as
model2vec and sentence-transformers do for bad model folders.
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "CorpusError",
    "DuplicateIdError",
    "IndexFormatError",
    "ModelFormatError",
    "ModelMismatchError",
    "ParityError",
    "SSEError",
]


class SSEError(Exception):
    """Base class of every error raised on purpose by sse-onnx and sse-export."""


class ModelFormatError(SSEError, ValueError):
    """An exported model folder is missing a file, is corrupt, or has another schema version."""


class CheckpointError(SSEError, ValueError):
    """A source checkpoint cannot be exported: a file, key, shape or value is wrong."""


class CorpusError(SSEError, ValueError):
    """A corpus cannot be embedded: an input file, column or value is missing or wrong."""


class ParityError(SSEError):
    """An exported model does not reproduce the PyTorch reference within tolerance."""


class IndexFormatError(SSEError, ValueError):
    """A search index file is damaged, is not an index, or has another schema version."""


class ModelMismatchError(IndexFormatError):
    """A search index file was built with another model than the one it is opened with."""


class DuplicateIdError(SSEError, ValueError):
    """Documents added to a search index reuse ids, without ``replace=True``."""
