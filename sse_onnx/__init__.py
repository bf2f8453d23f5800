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

from sse_onnx.embeddings import quantize, similarity
from sse_onnx.encoder import Encoder
from sse_onnx.errors import (
    CheckpointError,
    CorpusError,
    ModelFormatError,
    ParityError,
    SSEError,
)

try:
    __version__ = version("sse-onnx")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "CheckpointError",
    "CorpusError",
    "Encoder",
    "ModelFormatError",
    "ParityError",
    "SSEError",
    "__version__",
    "quantize",
    "similarity",
]
