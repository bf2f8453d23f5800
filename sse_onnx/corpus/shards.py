"""A corpus job's output as a folder of Parquet shards that the workers write, exactly once.

:func:`sse_onnx.corpus.embed_corpus` writes here when its output is a folder rather than a
``.parquet`` file; :mod:`sse_onnx.outputs` names the folder's files (``LAYOUT``) and
:mod:`sse_onnx.corpus.records` its records.

The driver only reads the input's block references (Ray Data reads and re-batches the input
in Ray's workers) and hands each shard's blocks to a pool of :class:`ShardWriter` actors; the
vectors never pass through it. A job that stopped (its driver killed, say) is finished by the
same call with ``resume=True``: the parameters must equal ``_job.json``'s, the shards present
are kept (their checksums read again) and only the missing ones are embedded.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from sse_onnx import folder as fmt
from sse_onnx.corpus.cluster import import_ray, raise_remote
from sse_onnx.corpus.embedder import CorpusEmbedder
from sse_onnx.corpus.options import EmbedderOptions
from sse_onnx.corpus.parquet import output_schema, parquet_writer
from sse_onnx.corpus.progress import Advance
from sse_onnx.corpus.records import CorpusManifest, InputFile, JobParameters, JobRecord, ShardEntry
from sse_onnx.encoder import Encoder
from sse_onnx.errors import CorpusError
from sse_onnx.outputs import LAYOUT

if TYPE_CHECKING:
    from ray.data import Dataset

__all__ = [
    "ShardWriter",
    "ShardsWritten",
    "job_parameters",
    "prepare",
    "write_job",
    "write_manifest",
    "write_shards",
]

#: Shard tasks queued per worker: one running, one waiting, so a worker never idles.
TASKS_PER_WORKER = 2
#: A batch that kills its worker this many times more stops the job instead of looping.
MAX_TASK_RETRIES = 3


def job_parameters(
    encoder: Encoder,
    options: EmbedderOptions,
    inputs: Sequence[str],
    *,
    input_format: str | None,
    shard_docs: int,
    calibration_docs: int | None,
) -> JobParameters:
    """What makes a job's output: a resumed job must have the same, or its shards would mix."""
    variant = encoder.manifest.variants[encoder.variant]
    return JobParameters(
        model=encoder.manifest.model_name,
        model_sha256=variant.sha256,
        tokenizer_sha256=encoder.manifest.tokenizer.sha256,
        variant=encoder.variant,
        dim=options["dim"] or encoder.dim,
        precision=options["precision"],
        text_fields=tuple(options["text_fields"]),
        id_field=options["id_field"],
        shard_docs=shard_docs,
        calibration_docs=calibration_docs,
        input_format=input_format,
        inputs=tuple(InputFile(path, _size(path)) for path in inputs),
    )


def prepare(folder: Path, parameters: JobParameters, *, resume: bool) -> JobRecord | None:
    """Check the output folder before Ray starts; returns the stopped job's record, if any.

    Raises:
        CorpusError: if the folder holds a finished job, or shards and ``resume`` is false,
            or no readable ``_job.json`` or another job than this one. A folder holding only
            ``_job.json`` (a job stopped before its first shard) counts as empty.
    """
    if folder.exists() and not folder.is_dir():
        raise CorpusError(f"output {folder} is a file; pass a folder, or a .parquet file name.")
    if not folder.parent.is_dir():
        raise CorpusError(f"output {folder} is in {folder.parent}, which does not exist.")
    names = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    if not names or names == [LAYOUT.job]:
        # Empty, or a job that stopped before its first shard (a bad input column, say):
        # nothing to keep, and its record is written anew.
        return None
    if LAYOUT.success in names:
        raise CorpusError(
            f"output {folder} holds a finished job ({LAYOUT.success} is there); there is nothing "
            "to resume or overwrite: choose another folder, or delete this one to embed again."
        )
    if not resume:
        shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
        files = "file" if len(names) == 1 else "files"
        raise CorpusError(
            f"output {folder} is not empty ({len(names)} {files}: {shown}); pass resume=True to "
            "finish the job it holds, or choose an empty folder."
        )
    job = _read_job(folder / LAYOUT.job)
    stored, now = job.parameters.to_dict(), parameters.to_dict()
    differ = [key for key in now if stored[key] != now[key]]
    if differ:
        shown = "; ".join(f"{k}: {stored[k]!r} there, {now[k]!r} now" for k in differ)
        raise CorpusError(
            f"output {folder} holds a job with other parameters ({shown}); resume with the "
            "command that started it, or choose an empty folder (or delete this one)."
        )
    return job


def _read_job(path: Path) -> JobRecord:
    if not path.is_file():
        raise CorpusError(
            f"output {path.parent} holds no {LAYOUT.job}, so no job sse-embed started; it cannot "
            "be resumed. Choose an empty folder."
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise CorpusError(
            f"{path} is not a job sse-embed wrote ({exc!r}); it cannot be resumed. Choose an "
            "empty folder."
        ) from exc
    return JobRecord.from_dict(data, where=str(path))


def write_job(
    folder: Path, parameters: JobParameters, ranges: npt.NDArray[np.float32] | None
) -> JobRecord:
    """Write ``_job.json`` (atomically) before the first shard; return what it holds."""
    folder.mkdir(exist_ok=True)
    rows = None if ranges is None else tuple(tuple(row) for row in np.asarray(ranges).tolist())
    job = JobRecord(parameters=parameters, ranges=rows)
    _write_atomic(folder / LAYOUT.job, json.dumps(job.to_dict(), indent=2).encode())
    return job


class ShardWriter:
    """A Ray actor: embeds the documents of one shard and writes them as ``part-<k>.parquet``.

    Built once per actor with one :class:`~sse_onnx.corpus.CorpusEmbedder`; its constructor
    arguments are small (the options and, for int8/uint8, 2 x dim ranges), so Ray passes them
    inline rather than through its object store.
    """

    def __init__(self, options: EmbedderOptions, folder: str) -> None:
        self.options = options
        self.embedder = CorpusEmbedder(**options)
        self.folder = Path(folder)

    def write(self, pieces: list[tuple[Any, int, int]], index: int, start: int) -> ShardEntry:
        """Embed the rows of ``pieces`` (block reference, first row, end row) as shard ``index``.

        Returns:
            The shard's entry for the manifest, with the tokens counted.
        """
        import ray

        blocks = ray.get([ref for ref, _, _ in pieces])
        tables = [
            _arrow(block).slice(lo, hi - lo)
            for block, (_, lo, hi) in zip(blocks, pieces, strict=True)
        ]
        batch = pa.concat_tables(tables, promote_options="permissive").combine_chunks()
        table = self.embedder(batch)
        tokens = int(np.sum(table.column("tokens"))) if "tokens" in table.column_names else None
        if "id" not in table.column_names:  # number documents in input order
            ids = pa.array(np.arange(start, start + table.num_rows, dtype=np.int64))
            table = table.add_column(0, "id", ids)
        options: EmbedderOptions = {**self.options, "ranges": self.embedder.ranges}
        schema = output_schema(self.embedder.encoder, options, table.schema.field("id").type)
        sink = pa.BufferOutputStream()
        writer = parquet_writer(sink, schema)
        writer.write_table(table.select(schema.names).cast(schema))
        writer.close()
        data = sink.getvalue().to_pybytes()
        name = LAYOUT.shard(index)
        _write_atomic(self.folder / name, data)
        return ShardEntry(
            file=name,
            first_row=start,
            rows=table.num_rows,
            bytes=len(data),
            sha256=hashlib.sha256(data).hexdigest(),
            tokens=tokens,
        )


@dataclass(frozen=True)
class ShardsWritten:
    """The shards of a folder after :func:`write_shards`.

    Attributes:
        entries: Every shard, in input order.
        embedded: Documents embedded by this call (the others were a stopped job's).
        tokens: Their token ids, if counted, else 0.
    """

    entries: tuple[ShardEntry, ...]
    embedded: int
    tokens: int

    @property
    def docs(self) -> int:
        """Documents in the folder."""
        return sum(entry.rows for entry in self.entries)


class _WriterPool:
    """Shard tasks on a pool of :class:`ShardWriter` actors, a few queued on each."""

    def __init__(
        self,
        ray: Any,
        options: EmbedderOptions,
        folder: Path,
        *,
        workers: int,
        cpus_per_worker: int,
        advance: Advance,
    ) -> None:
        actor = ray.remote(
            num_cpus=cpus_per_worker, max_restarts=-1, max_task_retries=MAX_TASK_RETRIES
        )(ShardWriter)
        self.ray = ray
        self.actors: list[Any] = [actor.remote(options, str(folder)) for _ in range(workers)]
        self.advance = advance
        self.running: dict[Any, tuple[int, Any]] = {}  # task -> (worker, its pieces, kept alive)
        self.load = [0] * workers
        self.entries: list[ShardEntry] = []
        self.embedded = self.tokens = 0

    def submit(self, pieces: list[tuple[Any, int, int]], index: int, start: int) -> None:
        """Queue a shard on the least loaded worker, once one has room."""
        # Take the shards already written (for the progress bar and early errors), then
        # wait for one if every worker has its queue full.
        if self.running:
            done, _ = self.ray.wait(list(self.running), num_returns=len(self.running), timeout=0)
            for task in done:
                self._finish(task)
        while len(self.running) >= TASKS_PER_WORKER * len(self.actors):
            self._finish_one()
        worker = self.load.index(min(self.load))
        task = self.actors[worker].write.remote(pieces, index, start)
        self.running[task] = (worker, pieces)
        self.load[worker] += 1

    def drain(self) -> None:
        """Wait for every queued shard."""
        while self.running:
            self._finish_one()

    def close(self) -> None:
        """End the actors."""
        for handle in self.actors:
            self.ray.kill(handle)

    def _finish_one(self) -> None:
        done, _ = self.ray.wait(list(self.running), num_returns=1)
        self._finish(done[0])

    def _finish(self, task: Any) -> None:
        worker, _ = self.running.pop(task)
        self.load[worker] -= 1
        try:
            entry: ShardEntry = self.ray.get(task)
        except Exception as exc:
            raise_remote(exc)
            raise
        self.entries.append(entry)
        self.embedded += entry.rows
        self.tokens += entry.tokens or 0
        self.advance(entry.rows, self.tokens)


def write_shards(
    dataset: Dataset,
    folder: Path,
    options: EmbedderOptions,
    *,
    shard_docs: int,
    workers: int,
    cpus_per_worker: int,
    advance: Advance,
) -> ShardsWritten:
    """Embed the shards the folder lacks on ``workers`` actors; returns what is there.

    Raises:
        CorpusError: if an actor raised one, or the shards present do not fit the input.
    """
    for path in folder.iterdir():  # a writer killed before its rename left these
        if LAYOUT.is_temporary(path.name):
            path.unlink()
    present = {
        index: path
        for path in folder.iterdir()
        if (index := LAYOUT.shard_index(path.name)) is not None
    }
    kept: dict[int, ShardEntry] = {}
    pool = _WriterPool(
        import_ray(), options, folder, workers=workers, cpus_per_worker=cpus_per_worker,
        advance=advance,
    )  # fmt: skip
    try:
        for index, start, pieces in _shard_pieces(dataset, shard_docs):
            if index not in present:
                pool.submit(pieces, index, start)
                continue
            rows = sum(hi - lo for _, lo, hi in pieces)
            kept[index] = _existing(present[index], index, start, rows)
            advance(0, pool.tokens)
        pool.drain()
    finally:
        pool.close()
    entries = {**kept, **{entry.first_row // shard_docs: entry for entry in pool.entries}}
    extra = sorted(set(present) - set(entries))
    if extra:
        raise CorpusError(
            f"output {folder} has shards past the end of the input ({LAYOUT.shard(extra[0])}, "
            "...): the input is not the one the job started with."
        )
    ordered = tuple(entries[i] for i in sorted(entries))
    return ShardsWritten(ordered, pool.embedded, pool.tokens)


def write_manifest(
    folder: Path, job: JobRecord, shards: Sequence[ShardEntry], version: str
) -> None:
    """Write ``_manifest.json``, then ``_SUCCESS``: the folder is complete only after both."""
    manifest = CorpusManifest(job=job, shards=tuple(shards), sse_onnx_version=version)
    _write_atomic(folder / LAYOUT.manifest, json.dumps(manifest.to_dict(), indent=2).encode())
    _write_atomic(folder / LAYOUT.success, b"")


def _shard_pieces(dataset: Dataset, shard_docs: int) -> Iterator[tuple[int, int, list[Any]]]:
    """(shard index, first row, [(block reference, first row, end row), ...]) in input order.

    Only block references and row counts reach the driver. Blocks of any size are cut at
    multiples of ``shard_docs``, so shards do not depend on how Ray Data cut the input.
    """
    pieces: list[tuple[Any, int, int]] = []
    filled = start = 0
    for bundle in dataset.iter_internal_ref_bundles():
        for entry, piece in zip(bundle.blocks, bundle.slices, strict=True):
            lo = 0 if piece is None else piece.start_offset
            hi = entry.metadata.num_rows if piece is None else piece.end_offset
            while lo < hi:
                take = min(hi - lo, shard_docs - filled)
                pieces.append((entry.ref, lo, lo + take))
                lo += take
                filled += take
                if filled == shard_docs:
                    yield start // shard_docs, start, pieces
                    pieces, start, filled = [], start + filled, 0
    if filled:
        yield start // shard_docs, start, pieces


def _existing(path: Path, index: int, start: int, rows: int) -> ShardEntry:
    """The manifest entry of a shard a stopped job wrote, checked against the input's rows."""
    found = pq.ParquetFile(path).metadata.num_rows
    if found != rows:
        raise CorpusError(
            f"{path} holds {found} documents where the input has {rows} for shard {index}: the "
            "input is not the one the job started with. Choose an empty folder."
        )
    return ShardEntry(
        file=path.name,
        first_row=start,
        rows=rows,
        bytes=path.stat().st_size,
        sha256=fmt.sha256_file(path),
    )


def _arrow(block: Any) -> pa.Table:
    if isinstance(block, pa.Table):
        return block
    from ray.data.block import BlockAccessor

    table: pa.Table = BlockAccessor.for_block(block).to_arrow()
    return table


def _write_atomic(path: Path, data: bytes) -> None:
    """Write under a temporary name in the same folder, flush to disk, then rename."""
    temp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:12]}")
    with open(temp, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)


def _size(path: str) -> int | None:
    """Bytes of a local file, or of every file under a local folder; ``None`` for a URI."""
    if "://" in path:
        return None
    local = Path(path)
    if local.is_dir():
        return sum(p.stat().st_size for p in sorted(local.rglob("*")) if p.is_file())
    return local.stat().st_size
