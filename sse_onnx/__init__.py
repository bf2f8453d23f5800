"""sse-onnx: run SSE (Stable Static Embedding) models with onnxruntime, numpy and tokenizers.

Example:
    >>> from sse_onnx import Encoder, similarity
    >>> encoder = Encoder()  # the bundled default model, offline
    >>> embeddings = encoder.encode(["a cat sat on the mat", "a kitten rested on a rug"])
    >>> float(similarity(embeddings[0], embeddings[1])[0, 0]) > 0.5
    True
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from sse_onnx._lazy import lazy_names
from sse_onnx.embeddings import quantize, similarity
from sse_onnx.errors import (
    CheckpointError,
    CorpusError,
    DuplicateIdError,
    IndexFormatError,
    ModelFormatError,
    ModelMismatchError,
    ParityError,
    SSEError,
)

if TYPE_CHECKING:
    from sse_onnx.encoder import Encoder
    from sse_onnx.index import Hit, Index

try:
    __version__ = version("sse-onnx")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "CheckpointError",
    "CorpusError",
    "DuplicateIdError",
    "Encoder",
    "Hit",
    "Index",
    "IndexFormatError",
    "ModelFormatError",
    "ModelMismatchError",
    "ParityError",
    "SSEError",
    "__version__",
    "quantize",
    "similarity",
]


#: Public names whose module loads on first use: the encoder brings onnxruntime and tokenizers,
#: the search index sqlite3, so that numpy-only helpers (``sse_onnx.embeddings``) import alone.
_LAZY = {"Encoder": "sse_onnx.encoder", "Hit": "sse_onnx.index", "Index": "sse_onnx.index"}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
