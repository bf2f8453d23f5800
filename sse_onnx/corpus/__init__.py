"""Embed a corpus on Ray Data with the runtime's Encoder: Parquet out, order and ids kept.

An application of the runtime: it imports the core (``sse_onnx.encoder``, ``tokenizer``,
``folder``, ``embeddings``, ``errors``, ``outputs``) and nothing imports it but its command.
Its modules, each importing only those listed before it:

- :mod:`~sse_onnx.corpus.options`: options, defaults and their checks (no pyarrow, no Ray);
- :mod:`~sse_onnx.corpus.records`: ``_job.json``, shard entries and ``_manifest.json`` as
  frozen dataclasses;
- :mod:`~sse_onnx.corpus.progress`: the progress bar;
- :mod:`~sse_onnx.corpus.inputs`: :func:`read_corpus`, JSONL (one JSON object per line) or
  Parquet files as a Ray ``Dataset``, and the input checks made before Ray starts;
- :mod:`~sse_onnx.corpus.cluster`: starting or joining Ray, the actor pool's size;
- :mod:`~sse_onnx.corpus.embedder`: :class:`CorpusEmbedder`, the callable class for
  ``Dataset.map_batches``. Each actor builds it once, with one :class:`~sse_onnx.Encoder`
  whose onnxruntime threads match the CPUs Ray gave the actor; it turns an Arrow table of
  documents into one of ``id`` and ``embedding``;
- :mod:`~sse_onnx.corpus.parquet`: the output schema and writer;
- :mod:`~sse_onnx.corpus.shards`: a folder of shards written by the workers, resumable;
- :mod:`~sse_onnx.corpus.job`: :func:`embed_corpus`, which reads, embeds on a pool of such
  actors (on a local Ray started for the job, or on the cluster at ``ray_address``) and
  streams the embeddings, in input order, into one Parquet file written by the driver, or has
  the actors write them as a folder of shards, which a stopped job resumes;
- :mod:`~sse_onnx.corpus.cli`: the ``sse-embed`` command.

:func:`embed_corpus` gives bit for bit the vectors of one ``Encoder().encode`` call on all the
texts. ``encode`` pads the texts of each block of ``BLOCK_TEXTS`` together, and the float
rounding of a text's vector depends on that padding (in the last bit: about 1e-7), so the
input is cut into batches that start at multiples of ``BLOCK_TEXTS`` before the actors get
them. int8 and uint8 buckets calibrated per call would depend on the whole batch, so they are
calibrated once, on the first ``calibration_docs`` documents, and the ranges are stored in the
output's metadata. Binary precisions depend on each vector alone.

Ray Data restarts a dead actor and runs its batch again; the driver receives each batch once
and in order, so the output has neither gaps nor duplicates (a shard's writer is restarted and
its shard written again, under a temporary name renamed when complete). An error in the data
(a missing column, a null text) is not retried: it stops the job with a
:class:`~sse_onnx.CorpusError`, and no output file is left (a folder keeps its finished shards,
without ``_SUCCESS``).

Needs ``pip install 'sse-onnx[scale]'`` (ray[data], pyarrow, tqdm); ``import sse_onnx`` does
not import this package, and importing it loads each name's module on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sse_onnx._lazy import lazy_names

if TYPE_CHECKING:
    from sse_onnx.corpus.embedder import CorpusEmbedder
    from sse_onnx.corpus.inputs import read_corpus
    from sse_onnx.corpus.job import CorpusSummary, embed_corpus
    from sse_onnx.corpus.options import INPUT_FORMATS, SHARD_DOCS, InputFormat
    from sse_onnx.corpus.parquet import ROW_GROUP_BYTES
    from sse_onnx.outputs import METADATA_KEY

__all__ = [
    "INPUT_FORMATS",
    "METADATA_KEY",
    "ROW_GROUP_BYTES",
    "SHARD_DOCS",
    "CorpusEmbedder",
    "CorpusSummary",
    "InputFormat",
    "embed_corpus",
    "read_corpus",
]

#: Public names and the module each loads from on first use (pyarrow comes with the embedder).
_LAZY = {
    "INPUT_FORMATS": "sse_onnx.corpus.options",
    "InputFormat": "sse_onnx.corpus.options",
    "SHARD_DOCS": "sse_onnx.corpus.options",
    "METADATA_KEY": "sse_onnx.outputs",
    "ROW_GROUP_BYTES": "sse_onnx.corpus.parquet",
    "CorpusEmbedder": "sse_onnx.corpus.embedder",
    "read_corpus": "sse_onnx.corpus.inputs",
    "CorpusSummary": "sse_onnx.corpus.job",
    "embed_corpus": "sse_onnx.corpus.job",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY, globals())
