"""The corpus job: read, embed on a pool of Ray actors, write Parquet in input order.

:func:`embed_corpus` checks every option, the output and the inputs before Ray starts, then
streams the embeddings into one Parquet file written by the driver, or has the actors write a
folder of shards (:mod:`sse_onnx.corpus.shards`), which a stopped job resumes.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sse_onnx.corpus import progress, shards
from sse_onnx.corpus.cluster import import_ray, ordered, pool_size, raise_remote, start_ray
from sse_onnx.corpus.embedder import CorpusEmbedder, shared_encoder
from sse_onnx.corpus.inputs import (
    NOT_UTF8,
    format_of,
    input_paths,
    read_corpus,
    undecodable_line,
)
from sse_onnx.corpus.options import (
    CALIBRATION_DOCS,
    QUANTIZED,
    SHARD_DOCS,
    EmbedderOptions,
    InputFormat,
    check_counts,
)
from sse_onnx.corpus.parquet import ROW_GROUP_BYTES, output_schema, parquet_writer
from sse_onnx.corpus.records import JobParameters, JobRecord
from sse_onnx.embeddings import Precision
from sse_onnx.encoder import BLOCK_TEXTS, Encoder
from sse_onnx.errors import CorpusError

if TYPE_CHECKING:
    from ray.data import Dataset

__all__ = ["CorpusSummary", "embed_corpus"]

logger = logging.getLogger(__name__)


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


@dataclass
class _Plan:
    """A job checked and ready to run: what :func:`embed_corpus` hands its stages."""

    paths: list[str]
    output: Path
    encoder: Encoder
    options: EmbedderOptions
    input_format: InputFormat | None
    batch_size: int
    workers: int | None
    cpus_per_worker: int
    calibration_docs: int
    progress: bool
    started: float
    #: For a folder: the job's parameters, and the record of the stopped job it resumes.
    parameters: JobParameters | None = None
    stopped: JobRecord | None = None
    pool: int = 0

    @property
    def sharded(self) -> bool:
        return self.parameters is not None


def embed_corpus(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output: str | os.PathLike[str],
    *,
    text_fields: str | Sequence[str] = ("text",),
    id_field: str | None = "id",
    model: str | os.PathLike[str] | None = None,
    variant: str | None = None,
    dim: int | None = None,
    precision: Precision = "float32",
    calibration_docs: int = CALIBRATION_DOCS,
    count_tokens: bool = False,
    input_format: InputFormat | None = None,
    workers: int | None = None,
    cpus_per_worker: int = 1,
    batch_size: int | None = None,
    ray_address: str | None = None,
    progress: bool = True,
    resume: bool = False,
    overwrite: bool = False,
) -> CorpusSummary:
    """Embed every document of ``inputs`` on Ray Data into Parquet, in input order.

    ``output`` is a ``.parquet`` file, which the driver writes, or a folder of Parquet shards
    that the workers write, with a manifest (:mod:`sse_onnx.corpus.shards`): the folder scales
    past one driver and a stopped job can be resumed.

    The output has a column ``id`` (the ``id_field`` values, or row numbers from 0 in input
    order when ``id_field`` is ``None``) and a column ``embedding`` (a fixed-size list, see
    :class:`~sse_onnx.corpus.CorpusEmbedder`); its schema metadata under
    :data:`~sse_onnx.outputs.METADATA_KEY` names the model, variant, dim and precision, and
    holds the int8/uint8 ranges. The file is written under a ``.partial`` name and renamed when
    complete. A folder holds one shard per ``batch_size`` documents
    (``part-000000000.parquet``, ...), each with the same columns and metadata, then
    ``_manifest.json`` and ``_SUCCESS``, written last.

    The input is cut into batches of ``batch_size`` consecutive documents before the actors
    get them, because ``Encoder.encode`` cuts a call into blocks of
    :data:`~sse_onnx.encoder.BLOCK_TEXTS` texts and a text's float rounding depends on the
    block it is padded with: so aligned, the vectors are bit for bit those of one
    ``Encoder().encode`` call on all the texts. That re-batching runs as Ray tasks of one CPU,
    so the actors leave one CPU free: a local Ray gets one more CPU than the actors take, and
    on a cluster ``workers * cpus_per_worker`` must stay below its CPUs.

    Args:
        inputs: JSONL or Parquet files or folders (see :func:`~sse_onnx.corpus.read_corpus`);
            one path alone is one input.
        output: The Parquet file to write (new, unless ``overwrite``), or, for any path not
            ending in ``.parquet``, a folder of shards: empty or missing, unless ``resume``.
        text_fields: Columns whose strings, joined with a space, are a document's text; one
            name alone is one column.
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
            ``BLOCK_TEXTS``; ``None`` takes ``BLOCK_TEXTS`` for a file and
            :data:`~sse_onnx.corpus.SHARD_DOCS` for a folder.
        ray_address: Join the Ray cluster at this address; ``None`` starts a local Ray for the
            job (a Ray already initialised in this process is used as it is).
        progress: Show a progress bar with throughput on stderr.
        resume: Finish the stopped job whose folder ``output`` is: its parameters must be
            these, the shards it holds are kept and only the missing ones embedded.
        overwrite: Replace the ``.parquet`` file ``output`` if it exists (a folder is never
            overwritten).

    Returns:
        The summary: documents, tokens, wall time and throughput.

    Raises:
        CorpusError: for a missing, empty or unreachable input, a missing column or value,
            text that is not UTF-8, or an output that exists.
        ModelFormatError: for a bad model folder.
        ValueError: for a bad option.
    """
    started = time.perf_counter()
    target = Path(output)
    sharded = target.suffix != ".parquet"
    if batch_size is None:
        batch_size = SHARD_DOCS if sharded else BLOCK_TEXTS
    check_counts(
        calibration_docs=calibration_docs,
        cpus_per_worker=cpus_per_worker,
        batch_size=batch_size,
        workers=1 if workers is None else workers,
    )
    if precision in QUANTIZED and calibration_docs < 2:
        raise ValueError(f"calibration_docs={calibration_docs} must be at least 2 for {precision}.")
    target = _check_output(target, sharded, resume=resume, overwrite=overwrite)
    # Load the model here first: a bad folder fails before Ray starts, and the output's
    # metadata needs its name and width.
    path = None if model is None else str(Path(model).resolve())
    encoder = shared_encoder(path, variant, 1)
    if dim is not None and not 1 <= dim <= encoder.dim:
        raise ValueError(f"dim={dim} must be between 1 and the model's {encoder.dim}.")
    options: EmbedderOptions = {
        "model": path,
        "variant": encoder.variant,
        "text_fields": (text_fields,) if isinstance(text_fields, str) else tuple(text_fields),
        "id_field": id_field,
        "dim": dim,
        "precision": precision,
        "count_tokens": count_tokens,
        "ranges": None,
    }
    _float_embedder(options)  # checks them before Ray starts
    paths = input_paths(inputs)  # a missing input fails before Ray starts, as does its format:
    format_of(paths, input_format)
    plan = _Plan(
        paths=paths, output=target, encoder=encoder, options=options, input_format=input_format,
        batch_size=batch_size, workers=workers, cpus_per_worker=cpus_per_worker,
        calibration_docs=calibration_docs, progress=progress, started=started,
    )  # fmt: skip
    if sharded:
        _prepare_folder(plan, resume=resume)
    return _run(plan, ray_address)


def _check_output(target: Path, sharded: bool, *, resume: bool, overwrite: bool) -> Path:
    """The output path to write, checked before Ray starts.

    Raises:
        CorpusError: for a file output in a missing folder, on a folder, or on an existing
            file without ``overwrite``.
        ValueError: for ``resume`` with a file, or ``overwrite`` with a folder.
    """
    if sharded:
        if overwrite:
            raise ValueError(
                f"overwrite=True replaces a .parquet file; a folder output ({target}) is never "
                "overwritten: delete it, or choose another folder."
            )
        return target.absolute()  # Ray's workers may not share the driver's directory
    if target.is_dir() or not target.parent.is_dir():
        where = "is a folder" if target.is_dir() else f"is in {target.parent}, which does not exist"
        raise CorpusError(f"output {target} {where}; pass a .parquet file in an existing folder.")
    if resume:
        raise ValueError(
            f"resume=True needs a folder output (shards a stopped job left), not the file {target}."
        )
    if target.exists() and not overwrite:
        raise CorpusError(
            f"output {target} exists; pass overwrite=True to replace it, or choose another name."
        )
    return target


def _prepare_folder(plan: _Plan, *, resume: bool) -> None:
    """Record the job's parameters and check the folder against them (and a stopped job's)."""
    local = [p if "://" in p else os.path.abspath(p) for p in plan.paths]
    quantized = plan.calibration_docs if plan.options["precision"] in QUANTIZED else None
    plan.parameters = shards.job_parameters(
        plan.encoder, plan.options, local, input_format=plan.input_format,
        shard_docs=plan.batch_size, calibration_docs=quantized,
    )  # fmt: skip
    plan.stopped = shards.prepare(plan.output, plan.parameters, resume=resume)


def _run(plan: _Plan, ray_address: str | None) -> CorpusSummary:
    """Start or join Ray, calibrate, embed and write; Ray is shut down if this call started it."""
    ray = import_ray()
    own_ray = not ray.is_initialized()
    if own_ray:
        start_ray(ray, ray_address, plan.workers, plan.cpus_per_worker)
    try:
        plan.pool = pool_size(ray, plan.workers, plan.cpus_per_worker)
        # The paths expanded before, so the files read are the files recorded for a resume.
        dataset = ordered(read_corpus(plan.paths, input_format=plan.input_format))
        try:
            _set_ranges(plan, dataset)
            startup = time.perf_counter() - plan.started
            if plan.sharded:
                return _write_folder(plan, dataset, startup)
            return _write_file(plan, ray, dataset, startup)
        except CorpusError as exc:
            _raise_where_not_utf8(plan, exc)
            raise
    finally:
        if own_ray:
            ray.shutdown()


def _set_ranges(plan: _Plan, dataset: Dataset) -> None:
    """int8/uint8 ranges: the stopped job's when resuming, else calibrated on the first docs."""
    if plan.stopped is not None and plan.stopped.ranges is not None:
        plan.options["ranges"] = np.asarray(plan.stopped.ranges, dtype=np.float32)
    elif plan.options["precision"] in QUANTIZED:
        plan.options["ranges"] = _calibration_ranges(dataset, plan.options, plan.calibration_docs)


def _raise_where_not_utf8(plan: _Plan, exc: CorpusError) -> None:
    """For text that is not UTF-8, raise an error naming the file and line, if local."""
    if NOT_UTF8 not in str(exc) or format_of(plan.paths, plan.input_format) != "jsonl":
        return
    where = undecodable_line(plan.paths)
    if where is not None:
        raise CorpusError(
            f"{where}; re-encode it as UTF-8 (for example: iconv -f latin1 -t utf-8 IN > OUT) "
            "and embed that."
        ) from exc


def _write_folder(plan: _Plan, dataset: Dataset, startup: float) -> CorpusSummary:
    """Write the shards the folder lacks from the workers, then the manifest and ``_SUCCESS``."""
    assert plan.parameters is not None  # a folder's plan has them
    job = shards.write_job(plan.output, plan.parameters, plan.options["ranges"])
    blocks = ordered(dataset.repartition(target_num_rows_per_block=plan.batch_size, strict=True))
    with progress.progress_bar(plan.progress) as advance:
        written = shards.write_shards(
            blocks, plan.output, plan.options, shard_docs=plan.batch_size, workers=plan.pool,
            cpus_per_worker=plan.cpus_per_worker, advance=advance,
        )  # fmt: skip
    if not written.docs:
        raise _no_documents(plan.paths)
    shards.write_manifest(plan.output, job, written.entries, plan.encoder.manifest.package_version)
    return CorpusSummary(
        docs=written.docs,
        tokens=written.tokens if plan.options["count_tokens"] else None,
        seconds=time.perf_counter() - plan.started,
        startup_seconds=startup,
        workers=plan.pool,
        output=plan.output,
        output_bytes=sum(e.bytes for e in written.entries),
        resumed_docs=written.docs - written.embedded,
    )


def _write_file(plan: _Plan, ray: Any, dataset: Dataset, startup: float) -> CorpusSummary:
    """Embed on a pool of actors and write their tables, in order, into the one file."""
    embedded = ordered(
        dataset.repartition(target_num_rows_per_block=plan.batch_size, strict=True).map_batches(
            CorpusEmbedder,
            fn_constructor_kwargs=dict(plan.options),
            compute=ray.data.ActorPoolStrategy(size=plan.pool),
            num_cpus=plan.cpus_per_worker,
            batch_size=plan.batch_size,
            batch_format="pyarrow",
        )
    )
    docs, tokens = _write(embedded, plan)
    return CorpusSummary(
        docs=docs,
        tokens=tokens if plan.options["count_tokens"] else None,
        seconds=time.perf_counter() - plan.started,
        startup_seconds=startup,
        workers=plan.pool,
        output=plan.output,
        output_bytes=plan.output.stat().st_size,
    )


def _write(dataset: Dataset, plan: _Plan) -> tuple[int, int]:
    """Stream ``dataset`` into the output file; returns the documents and tokens written.

    Raises:
        CorpusError: if the input holds no document (and no file is left).
    """
    output = plan.output
    partial = output.with_name(output.name + ".partial")
    writer: pq.ParquetWriter | None = None
    pending: list[pa.Table] = []
    docs = tokens = 0
    try:
        with progress.progress_bar(plan.progress) as advance:
            for table in _batches(dataset):
                if "tokens" in table.column_names:
                    tokens += int(pc.sum(table.column("tokens")).as_py() or 0)
                if "id" not in table.column_names:  # number documents in input order
                    ids = pa.array(np.arange(docs, docs + table.num_rows, dtype=np.int64))
                    table = table.add_column(0, "id", ids)
                if writer is None:
                    id_type = table.schema.field("id").type
                    writer = parquet_writer(
                        partial, output_schema(plan.encoder, plan.options, id_type)
                    )
                pending.append(table.select(writer.schema.names).cast(writer.schema))
                if sum(t.nbytes for t in pending) >= ROW_GROUP_BYTES:
                    writer.write_table(pa.concat_tables(pending))
                    pending.clear()
                docs += table.num_rows
                advance(table.num_rows, tokens)
        if writer is None:
            raise _no_documents(plan.paths)
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


def _no_documents(paths: Sequence[str]) -> CorpusError:
    shown = paths[0] if len(paths) == 1 else f"{paths[0]}, ... ({len(paths)} inputs)"
    return CorpusError(f"input {shown} holds no document: there is nothing to embed.")


def _batches(dataset: Dataset) -> Iterator[pa.Table]:
    """The dataset's blocks in order; an sse_onnx error raised in an actor is raised again."""
    try:
        yield from dataset.iter_batches(batch_size=None, batch_format="pyarrow")
    except Exception as exc:
        raise_remote(exc)
        raise


def _float_embedder(options: EmbedderOptions) -> CorpusEmbedder:
    """An embedder of ``options`` that gives float32 vectors and counts no tokens."""
    floats = options.copy()
    floats["precision"] = "float32"
    floats["count_tokens"] = False
    return CorpusEmbedder(**floats)


def _calibration_ranges(
    dataset: Dataset, options: EmbedderOptions, count: int
) -> npt.NDArray[np.float32]:
    """Each dimension's minimum and maximum over the float embeddings of the first documents."""
    tables = list(dataset.limit(count).iter_batches(batch_size=None, batch_format="pyarrow"))
    sample = pa.concat_tables(tables) if tables else pa.table({})
    precision = options["precision"]
    if sample.num_rows < 2:
        raise CorpusError(
            f"{precision} needs at least 2 documents to calibrate its ranges; the input has "
            f"{sample.num_rows}. Use float32 or a binary precision."
        )
    embedder = _float_embedder(options)
    floats = embedder.embed(embedder.texts(sample))
    logger.info("%s ranges calibrated on the first %d documents", precision, len(floats))
    return np.stack([floats.min(axis=0), floats.max(axis=0)])
