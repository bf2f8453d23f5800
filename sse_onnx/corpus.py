"""Embed a corpus on Ray Data with the runtime's Encoder: Parquet out, order and ids kept.

Three parts, usable alone or together through :func:`embed_corpus` (the ``sse-embed`` command):

- :func:`read_corpus`: JSONL (one JSON object per line) or Parquet files as a Ray ``Dataset``;
- :class:`CorpusEmbedder`: the callable class for ``Dataset.map_batches``. Each actor builds it
  once, with one :class:`~sse_onnx.Encoder` whose onnxruntime threads match the CPUs Ray gave
  the actor; it turns an Arrow table of documents into one of ``id`` and ``embedding``;
- :func:`embed_corpus`: reads, embeds on a pool of such actors (on a local Ray started for the
  job, or on the cluster at ``ray_address``) and streams the embeddings, in input order, into
  one Parquet file written by the driver, or has the actors write them as a folder of shards
  (:mod:`sse_onnx.shards`), which a stopped job resumes; with a progress bar and a summary.

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
not import this module.
"""

from __future__ import annotations

import glob
import importlib
import json
import logging
import os
import re
import socket
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import numpy.typing as npt

try:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "sse_onnx.corpus needs pyarrow and ray: pip install 'sse-onnx[scale]'."
    ) from exc

from sse_onnx import errors, shards
from sse_onnx import format as fmt
from sse_onnx.embeddings import PRECISIONS, Precision, quantize
from sse_onnx.encoder import BLOCK_TEXTS, Encoder
from sse_onnx.errors import CorpusError, SSEError
from sse_onnx.tokenizer import TextTokenizer

if TYPE_CHECKING:
    from ray.data import Dataset

__all__ = [
    "INPUT_FORMATS",
    "METADATA_KEY",
    "CorpusEmbedder",
    "CorpusSummary",
    "InputFormat",
    "embed_corpus",
    "read_corpus",
]

logger = logging.getLogger(__name__)

InputFormat = Literal["jsonl", "parquet"]
INPUT_FORMATS: tuple[str, ...] = get_args(InputFormat)
#: Key of the output Parquet file's metadata: JSON naming the model, precision and ranges.
METADATA_KEY = b"sse_onnx"
_QUANTIZED = ("int8", "uint8")
#: Bytes of embeddings per Parquet row group: large groups keep the footer small and scans fast.
ROW_GROUP_BYTES = 64 << 20
#: Documents per shard of a folder output (and per actor call): 4 MB of 256-d float32, about
#: 0.7 s of one worker (bench/scale.md), so 10^9 documents are 244,141 files and a killed
#: worker or driver loses little work.
SHARD_DOCS = 4096
#: How long joining a cluster waits for its head to accept a connection.
CONNECT_SECONDS = 5.0
#: How long a job waits for Ray to have the CPUs it needs free before it gives up.
FREE_CPU_WAIT_SECONDS = 30.0
#: Ray's job environment: its workers list files too (over 200 inputs, several per task, each
#: in a thread), so they settle the import that :func:`_settle_fsspec_http` describes first.
_RUNTIME_ENV = {"worker_process_setup_hook": "sse_onnx.corpus._settle_fsspec_http"}
#: Ray's logger that warns, on every local start, that token authentication is on.
_RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
#: The last line of an actor's traceback when it raised one of the project's errors.
_REMOTE_ERROR = re.compile(r"^sse_onnx\.errors\.(\w+): (.+)$", re.MULTILINE)


class CorpusEmbedder:
    """Embeds a table of documents: the callable class for Ray Data's ``map_batches``.

    Ray builds it once per actor; in any one process, embedders of the same model, variant and
    thread count share one :class:`~sse_onnx.Encoder` (and so its tokenizer cache), which also
    makes it cheap to build per task elsewhere (a Spark ``mapInPandas`` function).

    Args:
        model: A folder written by ``sse-export``; ``None`` takes the bundled default model. On a
            cluster, the folder must exist at this path on every node.
        variant: Which model file of the folder to run; ``None`` takes its default variant.
        text_fields: Columns whose strings, joined with a space, are a document's text.
        id_field: Column copied to the output as ``id``; ``None`` leaves ids out.
        dim: Keep the first ``dim`` dimensions (Matryoshka); ``None`` keeps all.
        precision: As ``Encoder.encode`` defines it; ``int8`` and ``uint8`` need ``ranges``.
        ranges: For int8/uint8, a ``(2, dim)`` array of each dimension's minimum and maximum,
            taken once from a calibration sample (see ``sse_onnx.embeddings.quantize``).
        count_tokens: Add a ``tokens`` column: the number of token ids of each text. This
            tokenizes every text a second time: about a quarter fewer documents per second
            (bench/scale.md).
        threads: onnxruntime threads; ``None`` takes the CPUs Ray assigned to this actor, or 1
            outside Ray.

    Raises:
        ValueError: for an unknown precision, int8/uint8 without ``ranges``, or no text field.

    Example:
        >>> import pyarrow as pa
        >>> from sse_onnx.corpus import CorpusEmbedder
        >>> embedder = CorpusEmbedder(id_field="id")
        >>> out = embedder(pa.table({"id": [7, 8], "text": ["a cat", "a dog"]}))
        >>> out.column_names, out.schema.field("embedding").type.list_size
        (['id', 'embedding'], 256)
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        variant: str | None = None,
        text_fields: Sequence[str] = ("text",),
        id_field: str | None = "id",
        dim: int | None = None,
        precision: Precision = "float32",
        ranges: npt.ArrayLike | None = None,
        count_tokens: bool = False,
        threads: int | None = None,
    ) -> None:
        if isinstance(text_fields, str) or not text_fields:
            raise ValueError(
                f"text_fields={text_fields!r} must be a non-empty sequence of column names."
            )
        if precision not in PRECISIONS:
            raise ValueError(
                f"precision={precision!r} is not supported; choose one of {PRECISIONS}."
            )
        if precision in _QUANTIZED and ranges is None:
            raise ValueError(
                f"precision={precision!r} needs ranges: buckets calibrated on each batch would "
                "make a document's vector depend on its batch. Take them once from a sample "
                "(embed_corpus does so with calibration_docs), or use float32 or a binary "
                "precision."
            )
        self.threads = threads if threads is not None else _ray_assigned_cpus() or 1
        path = None if model is None else str(Path(model).resolve())
        self.encoder = _shared_encoder(path, variant, self.threads)
        self.text_fields = tuple(text_fields)
        self.id_field = id_field
        self.dim = dim
        self.precision: Precision = precision
        self.ranges = None if ranges is None else np.asarray(ranges, dtype=np.float32)
        self._counter = _shared_tokenizer(self.encoder) if count_tokens else None

    def __call__(self, batch: pa.Table | pa.RecordBatch) -> pa.Table:
        """The ``id`` (if ``id_field``), ``embedding`` and ``tokens`` (if counted) of a batch.

        ``embedding`` is a fixed-size list per row: float32 of ``dim`` values, int8/uint8 of
        ``dim`` buckets, or ``ceil(dim / 8)`` bytes of sign bits for the binary precisions.

        Raises:
            CorpusError: if a column is missing, holds other values than strings, or has a
                null value.
        """
        texts = self.texts(batch)
        vectors = self.embed(texts)
        columns: dict[str, pa.Array | pa.ChunkedArray] = {}
        if self.id_field is not None:
            columns["id"] = self._ids(batch, self.id_field)
        columns["embedding"] = pa.FixedSizeListArray.from_arrays(
            pa.array(vectors.reshape(-1)), vectors.shape[1]
        )
        if self._counter is not None:
            columns["tokens"] = pa.array(self._counter.encode_flat(texts)[1])
        return pa.table(columns)

    def embed(self, texts: Sequence[str]) -> npt.NDArray[Any]:
        """Embeddings of ``texts`` in this embedder's dim and precision: ``(n, width)``."""
        floats = self.encoder.encode(list(texts), truncate_dim=self.dim, show_progress_bar=False)
        return quantize(floats, self.precision, ranges=self.ranges)

    def texts(self, batch: pa.Table | pa.RecordBatch) -> list[str]:
        """The texts of a batch: its ``text_fields`` joined with a space.

        Raises:
            CorpusError: for a missing column, values other than strings, or a null.
        """
        columns = []
        for field in self.text_fields:
            column = _column(batch, field, "text")
            if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
                raise CorpusError(
                    f"column {field!r} holds {column.type}, not strings; name a text column "
                    "(--text-field)."
                )
            if column.null_count:
                first = pc.index(pc.is_null(column), True).as_py()
                raise CorpusError(
                    f"{self._name(batch, first)} has no {field!r} (null); fill it (for example "
                    "with an empty string) or drop such documents before embedding."
                )
            columns.append(column.to_pylist())
        if len(columns) == 1:
            texts: list[str] = columns[0]
            return texts
        return [" ".join(parts) for parts in zip(*columns, strict=True)]

    def _ids(self, batch: pa.Table | pa.RecordBatch, field: str) -> pa.Array | pa.ChunkedArray:
        ids = _column(batch, field, "id")
        if ids.null_count:
            raise CorpusError(
                f"column {field!r} has {ids.null_count} null ids; give every document "
                "an id, or number documents in input order instead (--row-ids)."
            )
        return ids

    def _name(self, batch: pa.Table | pa.RecordBatch, row: int) -> str:
        if self.id_field is not None and self.id_field in batch.schema.names:
            return f"document {self.id_field}={batch.column(self.id_field)[row].as_py()!r}"
        return f"a document (row {row} of a batch of {batch.num_rows})"


@dataclass(frozen=True)
class CorpusSummary:
    """What :func:`embed_corpus` did.

    Attributes:
        docs: Documents embedded (rows written).
        tokens: Their token ids in total; ``None`` if not counted.
        seconds: Wall time of the whole call.
        startup_seconds: The part of it spent loading the model and starting or joining Ray.
        workers: Actors in the pool.
        output: The Parquet file or the folder of shards written.
        output_bytes: Its size (of all its shards).
        resumed_docs: Of ``docs``, those a stopped job had already written (``resume``), which
            this call neither embedded nor counted tokens of.
    """

    docs: int
    tokens: int | None
    seconds: float
    startup_seconds: float
    workers: int
    output: Path
    output_bytes: int
    resumed_docs: int = 0

    @property
    def docs_per_second(self) -> float:
        """Documents embedded per second after start-up."""
        return (self.docs - self.resumed_docs) / max(self.seconds - self.startup_seconds, 1e-9)

    def __str__(self) -> str:
        tokens = "" if self.tokens is None else f" ({self.tokens:,} tokens)"
        rate = f"{self.docs_per_second:,.0f} docs/s"
        if self.tokens is not None:
            rate += (
                f", {self.tokens / max(self.seconds - self.startup_seconds, 1e-9):,.0f} tokens/s"
            )
        kept = ""
        if self.resumed_docs:
            kept = f" ({self.resumed_docs:,} of them kept from the stopped job's shards)"
        return (
            f"embedded {self.docs:,} docs{tokens}{kept} in {self.seconds:.1f} s wall time "
            f"({self.startup_seconds:.1f} s of it starting up): {rate} after start-up, "
            f"{self.workers} workers; wrote {self.output_bytes / 1e6:.1f} MB to {self.output}"
        )


def read_corpus(
    inputs: Sequence[str | os.PathLike[str]], *, input_format: InputFormat | None = None
) -> Dataset:
    """The documents of JSONL or Parquet files as a Ray ``Dataset``, in file and line order.

    Reads take no CPU of Ray's: they are light next to embedding, and a read waiting for a CPU
    that the actors hold would wait forever.

    Args:
        inputs: Files, folders or glob patterns of local files (``'docs/*.parquet'``); local
            paths, or URIs Ray reads (``s3://...``).
        input_format: ``"jsonl"`` or ``"parquet"``; ``None`` decides by the files' suffixes.

    Raises:
        CorpusError: if an input is missing or its format cannot be told.
    """
    ray = _import_ray()
    paths = _input_paths(inputs)
    chosen = input_format or _format_of(paths)
    if chosen not in INPUT_FORMATS:
        raise CorpusError(f"input_format={chosen!r} is not one of {INPUT_FORMATS}.")
    _settle_fsspec_http()
    read = ray.data.read_parquet if chosen == "parquet" else ray.data.read_json
    dataset: Dataset = read(paths, num_cpus=0)
    return dataset


def _input_paths(inputs: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The input paths, with local glob patterns (``'docs/*.parquet'``) expanded in order.

    Raises:
        CorpusError: if there is no input, or a local input or pattern matches nothing.
    """
    paths = []
    for item in inputs:
        path = os.fspath(item)
        if "://" in path or Path(path).exists():
            paths.append(path)
        elif glob.has_magic(path) and (matches := sorted(glob.glob(path))):
            paths.extend(matches)
        else:
            raise CorpusError(f"input {path} does not exist.")
    if not paths:
        raise CorpusError("no input given; pass one or more JSONL or Parquet files.")
    return paths


def _settle_fsspec_http() -> None:
    """Import fsspec's optional HTTP filesystem once, before Ray Data lists files in threads.

    Ray Data resolves each input path in its own thread and asks whether the filesystem is
    fsspec's ``HTTPFileSystem``, importing ``fsspec.implementations.http``, which needs
    ``aiohttp``. Without ``aiohttp`` that import fails and is not cached, so every path tries
    it again; two threads importing at once can hand one of them the other's half-imported
    module, an ``ImportError`` ("cannot import name 'HTTPFileSystem'") that Ray does not catch,
    where one thread alone gets the ``ModuleNotFoundError`` it does catch. Several input files
    failed 3 runs in 5 that way. Recording the failed import as ``None`` in ``sys.modules``
    makes every later import fail at once with ``ModuleNotFoundError``.

    The ``scale`` extra installs ``aiohttp``, so the import succeeds and there is no race,
    in the worker processes of a Ray someone else started too (their list tasks do not run
    this as a setup hook: a CI run failed that way); this covers a Ray installed without it.
    """
    name = "fsspec.implementations.http"
    if name in sys.modules:
        return
    try:
        importlib.import_module(name)
    except ImportError:
        sys.modules[name] = None  # type: ignore[assignment]


def embed_corpus(
    inputs: Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    text_fields: Sequence[str] = ("text",),
    id_field: str | None = "id",
    model: str | os.PathLike[str] | None = None,
    variant: str | None = None,
    dim: int | None = None,
    precision: Precision = "float32",
    calibration_docs: int = 10_000,
    count_tokens: bool = False,
    input_format: InputFormat | None = None,
    workers: int | None = None,
    cpus_per_worker: int = 1,
    batch_size: int | None = None,
    ray_address: str | None = None,
    progress: bool = True,
    resume: bool = False,
) -> CorpusSummary:
    """Embed every document of ``inputs`` on Ray Data into Parquet, in input order.

    ``output`` is a ``.parquet`` file, which the driver writes, or a folder of Parquet shards
    that the workers write, with a manifest (:mod:`sse_onnx.shards`): the folder scales past
    one driver and a stopped job can be resumed.

    The output has a column ``id`` (the ``id_field`` values, or row numbers from 0 in input
    order when ``id_field`` is ``None``) and a column ``embedding`` (a fixed-size list, see
    :class:`CorpusEmbedder`); its schema metadata under :data:`METADATA_KEY` names the model,
    variant, dim and precision, and holds the int8/uint8 ranges. The file is written under a
    ``.partial`` name and renamed when complete. A folder holds one shard per ``batch_size``
    documents (``part-000000000.parquet``, ...), each with the same columns and metadata,
    then ``_manifest.json`` and ``_SUCCESS``, written last.

    The input is cut into batches of ``batch_size`` consecutive documents before the actors
    get them, because ``Encoder.encode`` cuts a call into blocks of
    :data:`~sse_onnx.encoder.BLOCK_TEXTS` texts and a text's float rounding depends on the
    block it is padded with: so aligned, the vectors are bit for bit those of one
    ``Encoder().encode`` call on all the texts. That re-batching runs as Ray tasks of one CPU,
    so the actors leave one CPU free: a local Ray gets one more CPU than the actors take, and
    on a cluster ``workers * cpus_per_worker`` must stay below its CPUs.

    Args:
        inputs: JSONL or Parquet files or folders (see :func:`read_corpus`).
        output: The Parquet file to write (replaced if it exists), or, for any path not
            ending in ``.parquet``, a folder of shards: empty or missing, unless ``resume``.
        text_fields: Columns whose strings, joined with a space, are a document's text.
        id_field: Column of document ids; ``None`` numbers documents in input order.
        model: A folder written by ``sse-export``; ``None`` takes the bundled default model.
        variant: Which model file of the folder to run; ``None`` takes its default.
        dim: Keep the first ``dim`` dimensions (Matryoshka); ``None`` keeps all.
        precision: ``float32``, ``int8``, ``uint8``, ``binary`` or ``ubinary``.
        calibration_docs: For int8/uint8, how many documents from the start of the input give
            each dimension's range (put a representative sample first).
        count_tokens: Count each document's tokens for the summary (tokenizes twice).
        input_format: ``"jsonl"`` or ``"parquet"``; ``None`` decides by suffix.
        workers: Actors, each with its own Encoder; ``None`` uses every core of this machine
            (local Ray) or every CPU of the cluster but one.
        cpus_per_worker: CPUs (and onnxruntime threads) per actor.
        batch_size: Documents per actor call, and per shard of a folder: a multiple of
            ``BLOCK_TEXTS``; ``None`` takes ``BLOCK_TEXTS`` for a file and :data:`SHARD_DOCS`
            for a folder.
        ray_address: Join the Ray cluster at this address; ``None`` starts a local Ray for the
            job (a Ray already initialised in this process is used as it is).
        progress: Show a progress bar with throughput on stderr.
        resume: Finish the stopped job whose folder ``output`` is: its parameters must be
            these, the shards it holds are kept and only the missing ones embedded.

    Returns:
        The summary: documents, tokens, wall time and throughput.

    Raises:
        CorpusError: for a missing input, column or value.
        ModelFormatError: for a bad model folder.
        ValueError: for a bad option.
    """
    started = time.perf_counter()
    target = Path(output)
    sharded = target.suffix != ".parquet"
    if batch_size is None:
        batch_size = SHARD_DOCS if sharded else BLOCK_TEXTS
    for name, value in (
        ("calibration_docs", calibration_docs),
        ("cpus_per_worker", cpus_per_worker),
        ("batch_size", batch_size),
        ("workers", 1 if workers is None else workers),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive int.")
    if batch_size % BLOCK_TEXTS:
        raise ValueError(
            f"batch_size={batch_size} must be a multiple of {BLOCK_TEXTS}, the block of texts "
            "Encoder.encode pads together; other batches change the float rounding of vectors."
        )
    if precision in _QUANTIZED and calibration_docs < 2:
        raise ValueError(f"calibration_docs={calibration_docs} must be at least 2 for {precision}.")
    if sharded:
        target = target.absolute()  # Ray's workers may not share the driver's directory
    elif target.is_dir() or not target.parent.is_dir():
        where = "is a folder" if target.is_dir() else f"is in {target.parent}, which does not exist"
        raise CorpusError(f"output {target} {where}; pass a .parquet file in an existing folder.")
    if resume and not sharded:
        raise ValueError(
            f"resume=True needs a folder output (shards a stopped job left), not the file {target}."
        )
    # Load the model here first: a bad folder fails before Ray starts, and the output's
    # metadata needs its name and width.
    path = None if model is None else str(Path(model).resolve())
    encoder = _shared_encoder(path, variant, 1)
    if dim is not None and not 1 <= dim <= encoder.dim:
        raise ValueError(f"dim={dim} must be between 1 and the model's {encoder.dim}.")
    config: dict[str, Any] = {
        "model": path,
        "variant": encoder.variant,
        "text_fields": tuple(text_fields),
        "id_field": id_field,
        "dim": dim,
        "precision": precision,
        "count_tokens": count_tokens,
    }
    CorpusEmbedder(**{**config, "precision": "float32", "count_tokens": False})  # checks options
    paths = _input_paths(inputs)  # a missing input fails before Ray starts
    job = parameters = None
    if sharded:
        local = [p if "://" in p else os.path.abspath(p) for p in paths]
        quantized = calibration_docs if precision in _QUANTIZED else None
        parameters = shards.job_parameters(
            encoder, config, local, input_format=input_format, shard_docs=batch_size,
            calibration_docs=quantized,
        )  # fmt: skip
        job = shards.prepare(target, parameters, resume=resume)
    ray = _import_ray()
    own_ray = not ray.is_initialized()
    if own_ray:
        _start_ray(ray, ray_address, workers, cpus_per_worker)
    try:
        pool = _pool_size(ray, workers, cpus_per_worker)
        # The paths expanded above, so the files read are the files recorded for a resume.
        dataset = _ordered(read_corpus(paths, input_format=input_format))
        if job is not None and job["ranges"] is not None:  # resumed: the ranges it started with
            config["ranges"] = np.asarray(job["ranges"], dtype=np.float32)
        elif precision in _QUANTIZED:
            config["ranges"] = _calibration_ranges(dataset, config, calibration_docs)
        startup = time.perf_counter() - started
        if sharded:
            assert parameters is not None  # set above for a folder
            return _write_folder(
                dataset, target, encoder, config, parameters,
                batch_size=batch_size, pool=pool, cpus_per_worker=cpus_per_worker,
                started=started, startup=startup, progress=progress,
            )  # fmt: skip
        embedded = _ordered(
            dataset.repartition(target_num_rows_per_block=batch_size, strict=True).map_batches(
                CorpusEmbedder,
                fn_constructor_kwargs=config,
                compute=ray.data.ActorPoolStrategy(size=pool),
                num_cpus=cpus_per_worker,
                batch_size=batch_size,
                batch_format="pyarrow",
            )
        )
        docs, tokens = _write(embedded, Path(output), encoder, config, progress=progress)
    finally:
        if own_ray:
            ray.shutdown()
    return CorpusSummary(
        docs=docs,
        tokens=tokens if count_tokens else None,
        seconds=time.perf_counter() - started,
        startup_seconds=startup,
        workers=pool,
        output=Path(output),
        output_bytes=Path(output).stat().st_size,
    )


def _write_folder(
    dataset: Dataset,
    folder: Path,
    encoder: Encoder,
    config: dict[str, Any],
    parameters: dict[str, Any],
    *,
    batch_size: int,
    pool: int,
    cpus_per_worker: int,
    started: float,
    startup: float,
    progress: bool,
) -> CorpusSummary:
    """Write the shards the folder lacks from the workers, then the manifest and ``_SUCCESS``."""
    job = shards.write_job(folder, parameters, config.get("ranges"))
    blocks = _ordered(dataset.repartition(target_num_rows_per_block=batch_size, strict=True))
    with _progress(progress) as advance:
        docs, embedded, tokens, entries = shards.write_shards(
            blocks,
            folder,
            config,
            shard_docs=batch_size,
            workers=pool,
            cpus_per_worker=cpus_per_worker,
            advance=advance,
            raise_remote=_raise_remote,
        )
    shards.write_manifest(folder, job, entries, encoder.manifest.package_version)
    return CorpusSummary(
        docs=docs,
        tokens=tokens if config["count_tokens"] else None,
        seconds=time.perf_counter() - started,
        startup_seconds=startup,
        workers=pool,
        output=folder,
        output_bytes=sum(e["bytes"] for e in entries),
        resumed_docs=docs - embedded,
    )


def _ordered(dataset: Dataset) -> Dataset:
    """The dataset, set to deliver blocks in input order, without Ray's own progress bars."""
    dataset.context.execution_options.preserve_order = True
    dataset.context.enable_progress_bars = False  # ours counts documents and tokens
    return dataset


def _pool_size(ray: Any, workers: int | None, cpus_per_worker: int) -> int:
    """How many actors to start, leaving one CPU of the cluster for reading and re-batching.

    Waits up to :data:`FREE_CPU_WAIT_SECONDS` for the CPUs to be free (a previous job's actors
    are released asynchronously), then fails rather than let the job wait forever.
    """
    total = int(ray.cluster_resources().get("CPU", 0))
    pool = workers or max(1, (total - 1) // cpus_per_worker)
    needed = pool * cpus_per_worker + 1
    if needed > total:
        raise ValueError(
            f"{pool} workers of {cpus_per_worker} CPUs need {needed} CPUs (one for reading and "
            f"re-batching the input), but Ray has {total}; ask for fewer workers."
        )
    deadline = time.monotonic() + FREE_CPU_WAIT_SECONDS
    while (free := ray.available_resources().get("CPU", 0.0)) < needed:
        if time.monotonic() > deadline:
            raise CorpusError(
                f"Ray has {free:g} of its {total} CPUs free, and {pool} workers need {needed}: "
                "other jobs or actors hold the rest (the actors of a failed job in this process "
                "are released when Python collects them); wait, or ask for fewer workers."
            )
        time.sleep(0.5)
    return pool


def _write(
    dataset: Dataset,
    output: Path,
    encoder: Encoder,
    config: dict[str, Any],
    *,
    progress: bool,
) -> tuple[int, int]:
    """Stream ``dataset`` into ``output``; returns the documents and tokens written."""
    partial = output.with_name(output.name + ".partial")
    writer: pq.ParquetWriter | None = None
    pending: list[pa.Table] = []
    docs = tokens = 0
    try:
        with _progress(progress) as advance:
            for table in _batches(dataset):
                if "tokens" in table.column_names:
                    tokens += int(pc.sum(table.column("tokens")).as_py() or 0)
                if "id" not in table.column_names:  # number documents in input order
                    ids = pa.array(np.arange(docs, docs + table.num_rows, dtype=np.int64))
                    table = table.add_column(0, "id", ids)
                if writer is None:
                    schema = _output_schema(encoder, config, table.schema.field("id").type)
                    writer = _parquet_writer(partial, schema)
                pending.append(table.select(writer.schema.names).cast(writer.schema))
                if sum(t.nbytes for t in pending) >= ROW_GROUP_BYTES:
                    writer.write_table(pa.concat_tables(pending))
                    pending.clear()
                docs += table.num_rows
                advance(table.num_rows, tokens)
        if writer is None:  # no documents: an empty file of the same layout
            id_type = pa.int64() if config["id_field"] is None else pa.string()
            writer = _parquet_writer(partial, _output_schema(encoder, config, id_type))
        if pending:
            writer.write_table(pa.concat_tables(pending))
        writer.close()
        os.replace(partial, output)
    except BaseException:
        if writer is not None:
            writer.close()
        partial.unlink(missing_ok=True)
        raise
    return docs, tokens


def _parquet_writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    """A Parquet writer for the output: no dictionary for embeddings, which hardly repeat.

    Parquet stores 8-bit values as 32-bit ints; delta bit-packing brings them back to about a
    byte each (bytes per document measured in bench/scale.md).
    """
    integers = not pa.types.is_floating(schema.field("embedding").type.value_type)
    encoding = {"embedding.list.element": "DELTA_BINARY_PACKED"} if integers else None
    return pq.ParquetWriter(path, schema, use_dictionary=["id"], column_encoding=encoding)


def _batches(dataset: Dataset) -> Iterator[pa.Table]:
    """The dataset's blocks in order; an sse_onnx error raised in an actor is raised again."""
    try:
        yield from dataset.iter_batches(batch_size=None, batch_format="pyarrow")
    except Exception as exc:
        _raise_remote(exc)
        raise


def _raise_remote(exc: BaseException) -> None:
    """Raise again the sse_onnx error an actor raised; return for any other error."""
    # Ray hands the driver the actor's traceback as text only, not the exception object.
    found = _REMOTE_ERROR.search(str(exc))
    kind = getattr(errors, found.group(1), None) if found else None
    if found is not None and isinstance(kind, type) and issubclass(kind, SSEError):
        raise kind(found.group(2)) from exc


def _calibration_ranges(
    dataset: Dataset, config: dict[str, Any], count: int
) -> npt.NDArray[np.float32]:
    """Each dimension's minimum and maximum over the float embeddings of the first documents."""
    tables = list(dataset.limit(count).iter_batches(batch_size=None, batch_format="pyarrow"))
    sample = pa.concat_tables(tables) if tables else pa.table({})
    if sample.num_rows < 2:
        raise CorpusError(
            f"{config['precision']} needs at least 2 documents to calibrate its ranges; the input "
            f"has {sample.num_rows}. Use float32 or a binary precision."
        )
    embedder = CorpusEmbedder(**{**config, "precision": "float32", "count_tokens": False})
    floats = embedder.embed(embedder.texts(sample))
    logger.info("%s ranges calibrated on the first %d documents", config["precision"], len(floats))
    return np.stack([floats.min(axis=0), floats.max(axis=0)])


def _output_schema(encoder: Encoder, config: dict[str, Any], id_type: pa.DataType) -> pa.Schema:
    width = config["dim"] or encoder.dim
    precision = config["precision"]
    if precision in ("binary", "ubinary"):
        item, size = (pa.int8() if precision == "binary" else pa.uint8()), -(-width // 8)
    else:
        item = {"float32": pa.float32(), "int8": pa.int8(), "uint8": pa.uint8()}[precision]
        size = width
    ranges = config.get("ranges")
    metadata = {
        "model": encoder.manifest.model_name,
        "variant": encoder.variant,
        "dim": width,
        "precision": precision,
        "normalized": True,
        "text_fields": list(config["text_fields"]),
        "id_field": config["id_field"],
        "ranges": None if ranges is None else ranges.tolist(),
        "sse_onnx_version": encoder.manifest.package_version,
    }
    return pa.schema(
        [("id", id_type), ("embedding", pa.list_(item, size))],
        metadata={METADATA_KEY: json.dumps(metadata)},
    )


@contextmanager
def _progress(show: bool) -> Iterator[Any]:
    """Yield ``advance(docs, tokens_so_far)`` that moves a tqdm bar with throughput."""
    if not show:
        yield lambda _docs, _tokens: None
        return
    from tqdm.auto import tqdm

    started = time.perf_counter()
    with tqdm(unit="doc", unit_scale=True, desc="Embedding", file=sys.stderr) as bar:

        def advance(docs: int, tokens: int) -> None:
            if tokens:
                rate = tokens / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix_str(f"{rate:,.0f} tokens/s", refresh=False)
            bar.update(docs)

        yield advance


def _column(batch: pa.Table | pa.RecordBatch, name: str, kind: str) -> Any:
    if name not in batch.schema.names:
        raise CorpusError(
            f"the input has no column {name!r} (it has {batch.schema.names}); name the {kind} "
            f"column with --{kind}-field."
        )
    return batch.column(name)


def _format_of(paths: Sequence[str]) -> InputFormat:
    formats = set()
    for path in paths:
        suffixes = Path(path).suffixes
        if ".parquet" in suffixes:
            formats.add("parquet")
        elif {".jsonl", ".json", ".ndjson"} & set(suffixes):
            formats.add("jsonl")
        else:
            raise CorpusError(
                f"cannot tell the format of {path} from its name; pass --format jsonl or "
                "--format parquet."
            )
    if len(formats) > 1:
        raise CorpusError(
            f"inputs mix JSONL and Parquet files ({list(paths)}); embed each kind apart."
        )
    chosen: InputFormat = "parquet" if formats == {"parquet"} else "jsonl"
    return chosen


@lru_cache(maxsize=4)
def _shared_encoder(model: str | None, variant: str | None, threads: int) -> Encoder:
    return Encoder(model, variant=variant, threads=threads)


@lru_cache(maxsize=4)
def _shared_tokenizer(encoder: Encoder) -> TextTokenizer:
    return TextTokenizer(fmt.entry_path(encoder.folder, encoder.manifest.tokenizer))


def _ray_assigned_cpus() -> int | None:
    """The CPUs Ray assigned to this actor or task; ``None`` outside a Ray worker."""
    ray = sys.modules.get("ray")  # a Ray worker has imported it; nothing else needs to
    if ray is None or not ray.is_initialized():
        return None
    try:
        cpus = float(ray.get_runtime_context().get_assigned_resources().get("CPU", 0.0))
    except AssertionError:  # the driver: Ray assigns resources to workers only
        return None
    return max(1, round(cpus)) if cpus else None


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ImportError(
            "embedding a corpus needs Ray Data: pip install 'sse-onnx[scale]'."
        ) from exc
    # A corpus of fewer blocks than workers (a small or failing job) leaves actors idle, which
    # Ray Data warns about on every such run; the job is right as it is.
    warnings.filterwarnings(
        "ignore", message="The minimum number of concurrent actors", category=UserWarning
    )
    return ray


def _start_ray(ray: Any, address: str | None, workers: int | None, cpus_per_worker: int) -> None:
    if address is not None:
        _check_reachable(address)
        logger.info("joining the Ray cluster at %s", address)
        try:
            ray.init(address=address, logging_level=logging.WARNING, runtime_env=_RUNTIME_ENV)
        except ConnectionError as exc:
            hint = "check the address and that its head is running (ray status)"
            if "AuthenticationError" in repr(exc.__cause__) or "token" in str(exc.__cause__):
                hint = (
                    "it asks for a token: set RAY_AUTH_MODE=token, with the cluster's token "
                    "in ~/.ray/auth_token or RAY_AUTH_TOKEN"
                )
            raise CorpusError(f"cannot join the Ray cluster at {address}: {hint}.") from exc
        return
    # Ray turns token authentication on for a cluster it starts (unless RAY_AUTH_MODE says
    # otherwise) and warns that it did on every run: the default is kept, the warning dropped.
    logging.getLogger(_RAY_AUTH_LOGGER).setLevel(logging.ERROR)
    pool = workers or max(1, (os.cpu_count() or 1) // cpus_per_worker)
    # One CPU more than the actors take, for the reading and re-batching tasks.
    cpus = pool * cpus_per_worker + 1
    logger.info("starting a local Ray with %d CPUs for %d workers", cpus, pool)
    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        logging_level=logging.WARNING,
        runtime_env=_RUNTIME_ENV,
    )


def _check_reachable(address: str) -> None:
    """Fail at once, in one line, when nothing listens at a ``host:port`` address.

    Ray itself retries a dead address, printing a warning every few seconds (still retrying
    after 5 minutes when measured), then raises a ``ConnectionError`` that names the node's IP
    rather than the address given.
    """
    found = re.fullmatch(r"(?:ray://)?\[?([^\]/]+?)\]?:(\d+)", address)
    if found is None:  # "auto", or a form Ray resolves itself
        return
    host, port = found.group(1), int(found.group(2))
    try:
        socket.create_connection((host, port), timeout=CONNECT_SECONDS).close()
    except OSError as exc:
        raise CorpusError(
            f"cannot join the Ray cluster at {address}: nothing answers there "
            f"({exc.strerror or exc}); start its head (ray start --head --port={port}) or pass "
            "the address it printed."
        ) from exc
