"""A corpus job's output as a folder of Parquet shards that the workers write, exactly once.

:func:`sse_onnx.corpus.embed_corpus` writes here when its output is a folder rather than a
``.parquet`` file. The folder (:data:`LAYOUT`):

- ``_job.json``: the job's parameters (model sha256s, variant, dim, precision, fields, shard
  size, the input files and their sizes, int8/uint8 ranges), written before the first shard;
- ``part-000000000.parquet``, ...: shard ``k`` holds documents ``k * shard_docs`` to
  ``(k + 1) * shard_docs - 1`` in input order, ids kept, so the names give the order. A worker
  writes each shard under a temporary name and renames it, so a shard present under its own
  name is complete;
- ``_manifest.json``: model, variant, dim, precision, ranges, and every shard with its rows,
  bytes and sha256, written when all shards are; then ``_SUCCESS`` (empty), written last, says
  the folder is complete. A folder without it is a job still running, or one that stopped.

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
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sse_onnx import format as fmt
from sse_onnx.encoder import Encoder
from sse_onnx.errors import CorpusError

if TYPE_CHECKING:
    from ray.data import Dataset

__all__ = ["LAYOUT", "DatasetLayout", "ShardWriter", "job_parameters", "prepare", "write_shards"]

#: ``format`` of _job.json and _manifest.json, and the version of their schema.
FORMAT_NAME = "sse-onnx-corpus"
FORMAT_VERSION = 1
#: What the manifest says of each shard.
SHARD_KEYS = ("file", "first_row", "rows", "bytes", "sha256")
#: Shard tasks queued per worker: one running, one waiting, so a worker never idles.
TASKS_PER_WORKER = 2
#: A batch that kills its worker this many times more stops the job instead of looping.
MAX_TASK_RETRIES = 3


@dataclass(frozen=True)
class DatasetLayout:
    """File names of an output folder."""

    # Names of files that are not shards start with "_" (and temporary ones with "."): Parquet
    # readers skip such files, so pyarrow.parquet.read_table(folder) reads the shards alone.
    job: str = "_job.json"
    manifest: str = "_manifest.json"
    success: str = "_SUCCESS"
    shard_prefix: str = "part-"
    shard_suffix: str = ".parquet"
    #: Digits of a shard index: 10^9 shards of 1,024 documents are 10^12 documents.
    shard_digits: int = 9

    def shard(self, index: int) -> str:
        """The file name of shard ``index``."""
        return f"{self.shard_prefix}{index:0{self.shard_digits}d}{self.shard_suffix}"

    def shard_index(self, name: str) -> int | None:
        """The index of a shard file name; ``None`` for any other name."""
        found = re.fullmatch(
            rf"{re.escape(self.shard_prefix)}(\d{{{self.shard_digits}}}){re.escape(self.shard_suffix)}",
            name,
        )
        return None if found is None else int(found.group(1))

    def is_temporary(self, name: str) -> bool:
        """A file a writer had not yet renamed when it stopped (``.<name>.tmp-<random>``)."""
        return name.startswith(".") and ".tmp-" in name


LAYOUT = DatasetLayout()


def job_parameters(
    encoder: Encoder,
    config: dict[str, Any],
    inputs: Sequence[str],
    *,
    input_format: str | None,
    shard_docs: int,
    calibration_docs: int | None,
) -> dict[str, Any]:
    """What makes a job's output: a resumed job must have the same, or its shards would mix."""
    variant = encoder.manifest.variants[encoder.variant]
    return {
        "model": encoder.manifest.model_name,
        "model_sha256": variant.sha256,
        "tokenizer_sha256": encoder.manifest.tokenizer.sha256,
        "variant": encoder.variant,
        "dim": config["dim"] or encoder.dim,
        "precision": config["precision"],
        "text_fields": list(config["text_fields"]),
        "id_field": config["id_field"],
        "shard_docs": shard_docs,
        "calibration_docs": calibration_docs,
        "input_format": input_format,
        "inputs": [{"path": path, "bytes": _size(path)} for path in inputs],
    }


def prepare(folder: Path, parameters: dict[str, Any], *, resume: bool) -> dict[str, Any] | None:
    """Check the output folder before Ray starts; returns the stopped job's ``_job.json``, if any.

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
            f"output {folder} is not empty ({len(names)} {files}: {shown}); pass --resume to "
            "finish the job it holds, or choose an empty folder."
        )
    job_path = folder / LAYOUT.job
    if not job_path.is_file():
        raise CorpusError(
            f"output {folder} holds no {LAYOUT.job}, so no job sse-embed started; it cannot be "
            "resumed. Choose an empty folder."
        )
    try:
        job: dict[str, Any] = json.loads(job_path.read_text(encoding="utf-8"))
        stored = job["parameters"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CorpusError(
            f"{job_path} is not a job sse-embed wrote ({exc!r}); it cannot be resumed. Choose an "
            "empty folder."
        ) from exc
    differ = [key for key in parameters if stored.get(key) != parameters[key]]
    if differ:
        shown = "; ".join(f"{k}: {stored.get(k)!r} there, {parameters[k]!r} now" for k in differ)
        raise CorpusError(
            f"output {folder} holds a job with other parameters ({shown}); resume with the "
            "command that started it, or choose an empty folder (or delete this one)."
        )
    return job


def write_job(folder: Path, parameters: dict[str, Any], ranges: Any) -> dict[str, Any]:
    """Write ``_job.json`` (atomically) before the first shard; return what it holds."""
    folder.mkdir(exist_ok=True)
    job = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "parameters": parameters,
        "ranges": None if ranges is None else np.asarray(ranges).tolist(),
    }
    _write_atomic(folder / LAYOUT.job, json.dumps(job, indent=2).encode())
    return job


class ShardWriter:
    """A Ray actor: embeds the documents of one shard and writes them as ``part-<k>.parquet``.

    Built once per actor with one :class:`~sse_onnx.corpus.CorpusEmbedder`; its constructor
    arguments are small (the options and, for int8/uint8, 2 x dim ranges), so Ray passes them
    inline rather than through its object store.
    """

    def __init__(self, config: dict[str, Any], folder: str) -> None:
        from sse_onnx.corpus import CorpusEmbedder

        self.embedder = CorpusEmbedder(**config)
        self.folder = Path(folder)

    def write(self, pieces: list[tuple[Any, int, int]], index: int, start: int) -> dict[str, Any]:
        """Embed the rows of ``pieces`` (block reference, first row, end row) as shard ``index``.

        Returns:
            The shard's entry for the manifest: file, rows, bytes, sha256, first row, tokens.
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
        from sse_onnx.corpus import _output_schema, _parquet_writer

        config = {
            "dim": self.embedder.dim,
            "precision": self.embedder.precision,
            "ranges": self.embedder.ranges,
            "text_fields": self.embedder.text_fields,
            "id_field": self.embedder.id_field,
        }
        schema = _output_schema(self.embedder.encoder, config, table.schema.field("id").type)
        sink = pa.BufferOutputStream()
        writer = _parquet_writer(sink, schema)
        writer.write_table(table.select(schema.names).cast(schema))
        writer.close()
        data = sink.getvalue().to_pybytes()
        name = LAYOUT.shard(index)
        _write_atomic(self.folder / name, data)
        return {
            "file": name,
            "first_row": start,
            "rows": table.num_rows,
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "tokens": tokens,
        }


def write_shards(
    dataset: Dataset,
    folder: Path,
    config: dict[str, Any],
    *,
    shard_docs: int,
    workers: int,
    cpus_per_worker: int,
    advance: Callable[[int, int], None],
    raise_remote: Callable[[BaseException], None],
) -> tuple[int, int, int, list[dict[str, Any]]]:
    """Embed the shards the folder lacks on ``workers`` actors; returns what is there.

    Returns:
        Documents in the folder, documents embedded now, their tokens, and the shard entries
        in order.
    """
    import ray

    for path in folder.iterdir():  # a writer killed before its rename left these
        if LAYOUT.is_temporary(path.name):
            path.unlink()
    present = {
        index: path
        for path in folder.iterdir()
        if (index := LAYOUT.shard_index(path.name)) is not None
    }
    actor = ray.remote(
        num_cpus=cpus_per_worker, max_restarts=-1, max_task_retries=MAX_TASK_RETRIES
    )(ShardWriter)
    pool: list[Any] = [actor.remote(config, str(folder)) for _ in range(workers)]
    entries: dict[int, dict[str, Any]] = {}
    running: dict[Any, tuple[int, Any]] = {}  # task -> (worker, its pieces, kept alive)
    load = [0] * workers
    embedded = tokens = 0

    def finish(task: Any) -> None:
        nonlocal embedded, tokens
        worker, _ = running.pop(task)
        load[worker] -= 1
        try:
            entry = ray.get(task)
        except Exception as exc:
            raise_remote(exc)
            raise
        entries[entry["first_row"] // shard_docs] = entry
        embedded += entry["rows"]
        tokens += entry["tokens"] or 0
        advance(entry["rows"], tokens)

    try:
        for index, start, pieces in _shard_pieces(dataset, shard_docs):
            rows = sum(hi - lo for _, lo, hi in pieces)
            if index in present:
                entries[index] = _existing(present[index], index, start, rows)
                advance(0, tokens)
                continue
            # Take the shards already written (for the progress bar and early errors), then
            # wait for one if every worker has its queue full.
            if running:
                done, _ = ray.wait(list(running), num_returns=len(running), timeout=0)
                for task in done:
                    finish(task)
            while len(running) >= TASKS_PER_WORKER * workers:
                done, _ = ray.wait(list(running), num_returns=1)
                finish(done[0])
            worker = load.index(min(load))
            task = pool[worker].write.remote(pieces, index, start)
            running[task] = (worker, pieces)
            load[worker] += 1
        while running:
            done, _ = ray.wait(list(running), num_returns=1)
            finish(done[0])
    finally:
        for handle in pool:
            ray.kill(handle)
    ordered = [entries[i] for i in sorted(entries)]
    extra = sorted(set(present) - set(entries))
    if extra:
        raise CorpusError(
            f"output {folder} has shards past the end of the input ({LAYOUT.shard(extra[0])}, "
            "...): the input is not the one the job started with."
        )
    return sum(e["rows"] for e in ordered), embedded, tokens, ordered


def write_manifest(
    folder: Path, job: dict[str, Any], shards: list[dict[str, Any]], version: str
) -> None:
    """Write ``_manifest.json``, then ``_SUCCESS``: the folder is complete only after both."""
    parameters = job["parameters"]
    manifest = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "complete": True,
        "model": parameters["model"],
        "model_sha256": parameters["model_sha256"],
        "variant": parameters["variant"],
        "dim": parameters["dim"],
        "precision": parameters["precision"],
        "normalized": True,
        "ranges": job["ranges"],
        "text_fields": parameters["text_fields"],
        "id_field": parameters["id_field"],
        "rows": sum(s["rows"] for s in shards),
        "shards": [{k: s[k] for k in SHARD_KEYS} for s in shards],
        "parameters": parameters,
        "sse_onnx_version": version,
    }
    _write_atomic(folder / LAYOUT.manifest, json.dumps(manifest, indent=2).encode())
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


def _existing(path: Path, index: int, start: int, rows: int) -> dict[str, Any]:
    """The manifest entry of a shard a stopped job wrote, checked against the input's rows."""
    found = pq.ParquetFile(path).metadata.num_rows
    if found != rows:
        raise CorpusError(
            f"{path} holds {found} documents where the input has {rows} for shard {index}: the "
            "input is not the one the job started with. Choose an empty folder."
        )
    return {
        "file": path.name,
        "first_row": start,
        "rows": rows,
        "bytes": path.stat().st_size,
        "sha256": fmt.sha256_file(path),
        "tokens": None,
    }


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
