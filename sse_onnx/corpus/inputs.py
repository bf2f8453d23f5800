"""A corpus job's input: its paths checked before Ray starts, and its documents as a Dataset.

Nothing here imports pyarrow or Ray when the module loads: Ray's workers import it first thing
(:func:`settle_fsspec_http` is their setup hook).
"""

from __future__ import annotations

import glob
import importlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from sse_onnx.corpus.options import INPUT_FORMATS, InputFormat, one_or_many
from sse_onnx.errors import CorpusError

if TYPE_CHECKING:
    from ray.data import Dataset

__all__ = [
    "NOT_UTF8",
    "format_of",
    "input_paths",
    "read_corpus",
    "settle_fsspec_http",
    "undecodable_line",
]

#: Words of the error an actor raises on text that is not UTF-8: the driver, seeing them, looks
#: for the file and line, reading the input again only when the job failed so.
NOT_UTF8 = "is not UTF-8"
#: URI schemes whose files pyarrow reaches itself, so an input there is checked before Ray starts.
_CHECKED_SCHEMES = ("s3", "gs", "gcs")


def read_corpus(
    inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    input_format: InputFormat | None = None,
) -> Dataset:
    """The documents of JSONL or Parquet files as a Ray ``Dataset``, in file and line order.

    Reads take no CPU of Ray's: they are light next to embedding, and a read waiting for a CPU
    that the actors hold would wait forever.

    Args:
        inputs: Files, folders or glob patterns of local files (``'docs/*.parquet'``); local
            paths, or URIs Ray reads (``s3://...``). One path alone is one input.
        input_format: ``"jsonl"`` or ``"parquet"``; ``None`` decides by the files' suffixes.

    Raises:
        CorpusError: if an input is missing, empty or unreachable, or its format cannot be told.
    """
    from sse_onnx.corpus.cluster import import_ray

    ray = import_ray()
    paths = input_paths(inputs)
    chosen = format_of(paths, input_format)
    settle_fsspec_http()
    read = ray.data.read_parquet if chosen == "parquet" else ray.data.read_json
    dataset: Dataset = read(paths, num_cpus=0)
    return dataset


def input_paths(inputs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    """The input paths, with local glob patterns (``'docs/*.parquet'``) expanded in order.

    Raises:
        CorpusError: if there is no input, a local input or pattern matches nothing, every
            local input is empty, or a remote input cannot be reached.
    """
    paths = []
    for item in one_or_many(inputs):
        path = os.fspath(item)
        if "://" in path:
            _check_remote(path)
            paths.append(path)
        elif Path(path).exists():
            paths.append(path)
        elif glob.has_magic(path) and (matches := sorted(glob.glob(path))):
            paths.extend(matches)
        else:
            raise CorpusError(f"input {path} does not exist.")
    if not paths:
        raise CorpusError("no input given; pass one or more JSONL or Parquet files.")
    if all("://" not in p for p in paths) and not any(f.stat().st_size for f in _files(paths)):
        shown = paths[0] if len(paths) == 1 else f"{paths[0]}, ... ({len(paths)} inputs)"
        raise CorpusError(f"input {shown} is empty: there is no document to embed.")
    return paths


def _check_remote(path: str) -> None:
    """Fail in one line, before Ray starts, when pyarrow cannot reach a remote input.

    Ray retries an unreachable store for minutes before it raises, in a traceback.
    """
    if path.split("://", 1)[0].lower() not in _CHECKED_SCHEMES:
        return  # a scheme Ray reads through fsspec: Ray says what goes wrong
    import pyarrow as pa
    import pyarrow.fs as pafs

    try:
        filesystem, inner = pafs.FileSystem.from_uri(path)
        found = filesystem.get_file_info(inner)
    except (OSError, pa.ArrowException) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorpusError(
            f"cannot read input {path}: {reason}; check the address, the credentials and the "
            "network (or copy the input to a local file)."
        ) from exc
    if found.type == pafs.FileType.NotFound:
        raise CorpusError(f"input {path} does not exist.")


def _files(paths: Sequence[str]) -> Iterator[Path]:
    """The local files of ``paths``: each file, and every file under each folder, in order."""
    for path in paths:
        if "://" in path:
            continue
        local = Path(path)
        if local.is_dir():
            yield from (p for p in sorted(local.rglob("*")) if p.is_file())
        else:
            yield local


def undecodable_line(paths: Sequence[str]) -> str | None:
    """Where the local inputs first hold bytes that are not UTF-8: ``'<file> line <n> ...'``.

    Reads the files line by line to the first such line; ``None`` if every line decodes.
    """
    for path in _files(paths):
        with open(path, "rb") as lines:
            for number, line in enumerate(lines, 1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as exc:
                    byte, column = line[exc.start], exc.start + 1
                    return f"{path} line {number} {NOT_UTF8} (byte 0x{byte:02x} at column {column})"
    return None


def format_of(paths: Sequence[str], input_format: str | None) -> InputFormat:
    """The format of the input files: ``input_format`` if given, else told by their names.

    Raises:
        CorpusError: for an unknown format, a name that tells none, or JSONL and Parquet mixed.
    """
    if input_format is not None:
        if input_format not in INPUT_FORMATS:
            raise CorpusError(f"input_format={input_format!r} is not one of {INPUT_FORMATS}.")
        given: InputFormat = "parquet" if input_format == "parquet" else "jsonl"
        return given
    formats = set()
    for path in paths:
        suffixes = Path(path).suffixes
        if ".parquet" in suffixes:
            formats.add("parquet")
        elif {".jsonl", ".json", ".ndjson"} & set(suffixes):
            formats.add("jsonl")
        else:
            raise CorpusError(
                f'cannot tell the format of {path} from its name; pass input_format="jsonl" '
                'or input_format="parquet".'
            )
    if len(formats) > 1:
        raise CorpusError(
            f"inputs mix JSONL and Parquet files ({list(paths)}); embed each kind apart."
        )
    chosen: InputFormat = "parquet" if formats == {"parquet"} else "jsonl"
    return chosen


def settle_fsspec_http() -> None:
    """Import fsspec's optional HTTP filesystem once, before Ray Data lists files in threads.

    Ray Data resolves each input path in its own thread and asks whether the filesystem is
    fsspec's ``HTTPFileSystem``, importing ``fsspec.implementations.http``, which needs
    ``aiohttp``. Without ``aiohttp`` that import fails and is not cached, so every path tries
    it again; two threads importing at once can hand one of them the other's half-imported
    module, an ``ImportError`` ("cannot import name 'HTTPFileSystem'") that Ray does not catch,
    where one thread alone gets the ``ModuleNotFoundError`` it does catch (jobs of several
    input files failed so). Recording the failed import as ``None`` in ``sys.modules`` makes
    every later import fail at once with ``ModuleNotFoundError``.

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
