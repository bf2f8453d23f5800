"""The ``sse-index`` command: a thin argparse layer over :class:`sse_onnx.Index`.

``add`` reads JSONL (and Parquet, with pyarrow) in batches of :data:`BATCH_DOCS` documents,
each one :meth:`~sse_onnx.Index.add` call and so one transaction: memory stays bounded, and an
interrupted add keeps its finished batches, which the same command run again finds unchanged
and skips. ``--embeddings`` takes the vectors of an ``sse-embed`` output for the same inputs,
by id, after checking that its model is the index's. Every expected failure is one line
``sse-index: error: ...`` on stderr (exit code 2 for usage, 130 for Ctrl-C, else 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

from sse_onnx.errors import CorpusError, DuplicateIdError, ModelMismatchError, SSEError
from sse_onnx.index.fusion import MODES, Mode
from sse_onnx.index.sources import Doc, Embeddings, Fields, documents, input_formats
from sse_onnx.index.store import DEFAULT_ALPHA, Hit, Index

if TYPE_CHECKING:
    from sse_onnx.encoder import Encoder

__all__ = ["BATCH_DOCS", "build_parser", "main"]

#: Documents read, embedded and committed at once: what an interrupted add can lose, and what
#: it holds in memory (10,000 texts and, with --embeddings, 10 MB of 256-d float32 vectors).
BATCH_DOCS = 10_000
#: Errors that are the user's input or environment, reported in one line; others are bugs.
_EXPECTED = (SSEError, ValueError, TypeError, OSError, ImportError, sqlite3.Error)

EXAMPLES = """\
examples:
  sse-index add notes.db docs.jsonl
      index the "text" and "id" of each line with the bundled model (creates notes.db)
  sse-index add scifact.db corpus.jsonl --text-field title --text-field text --id-field _id
      BEIR-style documents: "title text" is indexed and searched
  sse-index add notes.db docs.jsonl --metadata-field lang --metadata-field year
      keep these fields, for search --where lang=en --where year=2020
  sse-index add notes.db docs.jsonl --embeddings docs.parquet
      vectors from `sse-embed docs.jsonl --output docs.parquet` (same model), not encoded again
  sse-index search notes.db "where do I store data?" -k 5
  sse-index search notes.db "sqlite" --mode keyword --json | jq .id
  sse-index info notes.db
  sse-index delete notes.db doc-17 doc-18
  sse-index reembed notes.db --model sse-512/
      embed every text again with another model (one transaction)
"""

ADD_NOTES = f"""\
Documents are read and added in batches of --batch-size (default {BATCH_DOCS:,}), each one
transaction. An interrupted add (Ctrl-C, an error in a later line) keeps every finished batch;
running the same command again skips the documents already added unchanged and continues.
A document whose id is in the index with another text or metadata is refused unless --replace
(then a later line with the same id replaces an earlier one). Integer ids are stored as text.
"""


# ---------------------------------------------------------------------- the parser


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line (``sse-index: error: ...``) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"sse-index: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: one subcommand a method of :class:`~sse_onnx.Index`."""
    parser = _Parser(
        prog="sse-index",
        description="Hybrid search (BM25 + the dense model) over documents kept in one SQLite "
        "file, with sse_onnx.Index.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_parser(commands)
    _search_parser(commands)
    info = commands.add_parser("info", help="what an index holds and which model built it")
    _index_and_model(info)
    info.add_argument("--json", action="store_true", help="print one JSON object")
    info.set_defaults(run=_info)
    delete = commands.add_parser("delete", help="delete documents by id (one transaction)")
    _index_and_model(delete)
    delete.add_argument("ids", nargs="+", metavar="ID")
    delete.add_argument(
        "--missing-ok",
        action="store_true",
        help="delete the ids found; without it, an id not in the index deletes nothing",
    )
    delete.set_defaults(run=_delete)
    reembed = commands.add_parser(
        "reembed", help="embed every text again with another model (--model, --variant)"
    )
    _index_and_model(reembed)
    reembed.set_defaults(run=_reembed)
    return parser


def _index_and_model(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("index", type=Path, metavar="INDEX", help="the index file (.db)")
    parser.add_argument(
        "--model",
        metavar="DIR",
        help="folder written by sse-export (default: bundled); an index is used with the "
        "model that built it",
    )
    parser.add_argument("--variant", help="model variant of the folder (default: its default)")


def _add_parser(commands: Any) -> None:
    add = commands.add_parser(
        "add",
        help="add documents from JSONL or Parquet files",
        description="Add the documents of JSONL (or Parquet) files to an index, created if "
        "missing.",
        epilog=ADD_NOTES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _index_and_model(add)
    add.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="JSONL or Parquet file")
    add.add_argument(
        "--text-field",
        dest="text_fields",
        action="append",
        metavar="NAME",
        help="field holding the text; repeat to join several with a space (default: text)",
    )
    add.add_argument("--id-field", default="id", metavar="NAME", help="field of ids (default: id)")
    add.add_argument(
        "--metadata-field",
        dest="metadata_fields",
        action="append",
        default=[],
        metavar="NAME",
        help="field kept as metadata, for search --where (repeatable)",
    )
    add.add_argument(
        "--replace", action="store_true", help="update documents whose id is already there"
    )
    add.add_argument(
        "--embeddings",
        type=Path,
        metavar="OUT.parquet|DIR",
        help="the sse-embed output (file, or finished folder) of these inputs, made with the "
        "index's model at full width in float32: its vectors are stored, matched by id",
    )
    add.add_argument(
        "--format",
        dest="input_format",
        choices=("jsonl", "parquet"),
        help="input format (default: from the file suffixes)",
    )
    add.add_argument(
        "--batch-size",
        type=_positive,
        default=BATCH_DOCS,
        metavar="N",
        help=f"documents a transaction (default: {BATCH_DOCS})",
    )
    add.add_argument("--quiet", action="store_true", help="no progress bar")
    add.set_defaults(run=_add)


def _search_parser(commands: Any) -> None:
    search = commands.add_parser("search", help="the best documents for a query, best first")
    _index_and_model(search)
    search.add_argument("query", help="the query text (never read as FTS5 syntax)")
    search.add_argument("-k", type=_positive, default=10, help="hits at most (default: 10)")
    search.add_argument(
        "--mode",
        choices=MODES,
        default="hybrid",
        help="both parts fused, the cosine alone, or BM25 alone (default: hybrid)",
    )
    search.add_argument(
        "--alpha",
        type=_alpha,
        metavar="A",
        help=f"the dense part's weight in hybrid, 0 to 1 (default: {DEFAULT_ALPHA})",
    )
    search.add_argument(
        "--where",
        type=_where_item,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="keep documents whose metadata KEY is VALUE (read as JSON if it parses: 2020, "
        'true, null, "2020"; else a string); repeat for several',
    )
    search.add_argument(
        "--json", action="store_true", help="one JSON object a hit: rank, id, score, text, metadata"
    )
    search.set_defaults(run=_search)


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive integer")
    return number


def _alpha(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number from 0 (keyword) to 1 (dense)")
    return number


def _where_item(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{item!r} is not KEY=VALUE")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


# ---------------------------------------------------------------------- main


class _AddStopped(Exception):
    """An add stopped by ``error`` after ``done`` documents of finished batches."""

    def __init__(self, error: BaseException, done: int, path: Path) -> None:
        super().__init__(str(error))
        self.error, self.done, self.path = error, done, path


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code (0 done, 1 failed, 2 usage, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="sse-index: %(message)s")
    try:
        run = cast(Callable[[argparse.Namespace], None], args.run)
        run(args)
    except _AddStopped as stop:
        interrupted = isinstance(stop.error, KeyboardInterrupt)
        return _fail(_stopped(stop, interrupted), 130 if interrupted else 1)
    except KeyboardInterrupt:
        return _fail("interrupted; nothing was changed", 130)
    except BrokenPipeError:
        # The reader of stdout left (`| head`): stop quietly, as other commands do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except _EXPECTED as exc:
        return _fail(_message(exc), 1)
    return 0


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"sse-index: error: {message}\n")
    return code


def _say(line: str) -> None:
    """Write a line of the command's output (stdout)."""
    sys.stdout.write(line + "\n")


def _message(exc: BaseException) -> str:
    """The error in one line: a file error names its file, newlines become spaces, and the
    library's advice gets the command's flag."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    message = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, DuplicateIdError) and "replace=True" in message:
        message += " (sse-index add: --replace)"
    elif isinstance(exc, ModelMismatchError):
        message += " (sse-index: --model FOLDER, --variant NAME)"
    return message


def _stopped(stop: _AddStopped, interrupted: bool) -> str:
    """Why an add stopped, and what the finished batches left in the index."""
    kept = (
        f"the {stop.done:,} documents of the finished batches are kept in {stop.path}"
        if stop.done
        else f"no batch had finished, so {stop.path} is as it was"
    )
    if interrupted:
        return f"interrupted; {kept}; running the same command again skips them and continues"
    if not stop.done:
        return _message(stop.error)
    return (
        f"{_message(stop.error)}; {kept}: fix this and run the same command again, which skips them"
    )


def _encoder(args: argparse.Namespace) -> Encoder:
    from sse_onnx.encoder import Encoder

    return Encoder(args.model, variant=args.variant)


def _existing_index(path: Path) -> Path:
    """``path``, if it is an index file to open (so that a typo creates nothing)."""
    if not path.exists():
        raise FileNotFoundError(
            f"index {path} does not exist; create it with: sse-index add {path} FILE"
        )
    return path


# ---------------------------------------------------------------------- search, info, delete


def _search(args: argparse.Namespace) -> None:
    with Index(_existing_index(args.index), encoder=_encoder(args), readonly=True) as index:
        hits = index.search(
            args.query,
            k=args.k,
            mode=cast(Mode, args.mode),
            alpha=args.alpha,
            where=dict(args.where) or None,
        )
    if args.json:
        for rank, hit in enumerate(hits, 1):
            row = {"rank": rank, "id": hit.id, "score": hit.score, "text": hit.text}
            _say(json.dumps({**row, "metadata": hit.metadata}, ensure_ascii=False))
    else:
        _print_hits(hits)


def _print_hits(hits: Sequence[Hit]) -> None:
    """One line a hit: rank, score, id and the start of the text, to the terminal's width."""
    if not hits:
        _say("no documents match")
        return
    width = min(max(len(hit.id) for hit in hits), 24)
    columns = shutil.get_terminal_size((100, 24)).columns
    for rank, hit in enumerate(hits, 1):
        head = f"{rank:>3}  {hit.score:8.4f}  {_clip(hit.id, width):<{width}}  "
        _say(head + _clip(" ".join(hit.text.split()), max(20, columns - len(head) - 1)))


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _info(args: argparse.Namespace) -> None:
    with Index(_existing_index(args.index), encoder=_encoder(args), readonly=True) as index:
        info = index.info()
    if args.json:
        _say(json.dumps(info, indent=2))
        return
    width = max(map(len, info))
    for key, value in info.items():
        shown = f"{value:,}" if isinstance(value, int) else "-" if value is None else value
        _say(f"{key:<{width}}  {shown}")


def _delete(args: argparse.Namespace) -> None:
    with Index(_existing_index(args.index), encoder=_encoder(args)) as index:
        try:
            deleted = index.delete(args.ids, missing_ok=args.missing_ok)
        except KeyError as exc:  # the message says which ids, and that nothing was deleted
            raise SSEError(f"{exc.args[0]} (sse-index: --missing-ok)") from exc
        left = len(index)
    _say(f"deleted {deleted:,} document(s) from {args.index}; it holds {left:,}")


def _reembed(args: argparse.Namespace) -> None:
    path, encoder = _existing_index(args.index), _encoder(args)
    name = f"{encoder.manifest.model_name!r} ({encoder.variant}, {encoder.dim} dims)"
    started = time.perf_counter()
    try:
        Index(path, encoder=encoder).close()
    except ModelMismatchError:
        with Index(path, encoder=encoder, reembed=True) as index:
            count = len(index)
        seconds = time.perf_counter() - started
        _say(f"embedded the {count:,} documents of {path} again with {name} in {seconds:.1f} s")
        return
    _say(f"{path} was already built with {name}; nothing to embed")


# ---------------------------------------------------------------------- add


def _add(args: argparse.Namespace) -> None:
    fields = Fields(tuple(args.text_fields or ["text"]), args.id_field, tuple(args.metadata_fields))
    formats = input_formats(args.inputs, args.input_format)
    encoder = _encoder(args)
    vectors = None
    if args.embeddings is not None:
        vectors = Embeddings(args.embeddings, encoder, fields.text)
    batches = _batches(documents(args.inputs, formats, fields), args.batch_size)
    first = next(batches, [])  # a bad first line fails before the index file is created
    started = time.perf_counter()
    totals = [0, 0, 0]
    with Index(args.index, encoder=encoder) as index, _progress(not args.quiet) as advance:
        try:
            for batch in chain([first], batches):
                given = None if vectors is None else vectors.take(batch)
                result = index.add(
                    [doc.text for doc in batch],
                    ids=[doc.id for doc in batch],
                    metadata=[doc.metadata for doc in batch],
                    replace=args.replace,
                    embeddings=given,
                    progress=advance,
                )
                counts = (result.added, result.replaced, result.unchanged)
                totals = [total + count for total, count in zip(totals, counts, strict=True)]
        except (KeyboardInterrupt, *_EXPECTED) as exc:
            raise _AddStopped(exc, sum(totals), index.path) from exc
        held = len(index)
    seconds = time.perf_counter() - started
    _say(
        f"added {totals[0]:,} documents, replaced {totals[1]:,}, {totals[2]:,} unchanged; "
        f"{args.index} holds {held:,} ({seconds:.1f} s)"
    )


def _batches(docs: Iterator[Doc], size: int) -> Iterator[list[Doc]]:
    """Lists of ``size`` documents; a repeated id within one is refused with both places."""
    while batch := list(islice(docs, size)):
        seen: dict[str, str] = {}
        for doc in batch:
            if doc.id in seen:
                raise CorpusError(
                    f"{doc.where}: id {doc.id!r} is repeated (first at {seen[doc.id]}); each "
                    "document needs its own id"
                )
            seen[doc.id] = doc.where
        yield batch


@contextmanager
def _progress(show: bool) -> Iterator[Callable[[int], object] | None]:
    """A tqdm bar on stderr, drawn once an add has run a second (none without tqdm)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        show = False
    if not show:
        yield None
        return
    with tqdm(unit="doc", unit_scale=True, desc="Adding", file=sys.stderr, delay=1.0) as bar:
        yield bar.update


if __name__ == "__main__":
    sys.exit(main())
