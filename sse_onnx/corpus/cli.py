"""The ``sse-embed`` command: a thin argparse layer over :func:`sse_onnx.corpus.embed_corpus`.

Run it as ``sse-embed`` or ``python -m sse_onnx.corpus.cli``. ``--help`` and the option checks
need neither pyarrow nor Ray: the job's modules load only when a job runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from sse_onnx.corpus.options import CALIBRATION_DOCS, INPUT_FORMATS, SHARD_DOCS
from sse_onnx.embeddings import PRECISIONS
from sse_onnx.encoder import BLOCK_TEXTS
from sse_onnx.errors import SSEError

__all__ = ["build_parser", "main"]

#: The exit code of a job stopped by Ctrl-C (SIGINT), as shells report it.
INTERRUPTED = 130
#: Seconds a job stopped by Ctrl-C has to wind down (Ray shutting down) before the command
#: exits anyway; a second Ctrl-C exits at once. Shards are written whole (renamed into place),
#: so --resume continues either way.
STOP_SECONDS = 30.0
#: Python's names in the library's messages, and the flags this command says instead.
_FLAGS = (
    (r"\bid_field=None\b", "--row-ids"),
    (r"\bresume=True\b", "--resume"),
    (r"\boverwrite=True\b", "--overwrite"),
    (r'\binput_format="(\w+)"', r"--format \1"),
    (r"\btext_fields\b", "--text-field"),
    (r"\bid_field\b", "--id-field"),
)

EXAMPLES = """\
examples:
  sse-embed corpus.jsonl --output corpus.parquet
      embed the "text" of each line with the bundled model on a local Ray using every core;
      ids from the "id" field
  sse-embed corpus.jsonl --text-field title --text-field text --id-field _id --output out.parquet
      embed "title text" of BEIR-style documents
  sse-embed docs/*.parquet --model sse-256 --variant fp32 --dim 128 --precision int8 \\
      --row-ids --output out.parquet
      128 dims as int8 buckets calibrated on the first 10,000 documents; ids are row numbers
  sse-embed s3://bucket/corpus/ --format parquet --ray-address auto --output /shared/out/
      on the running Ray cluster; the workers write the shards of /shared/out/ (a folder
      every node reaches at that path), then _manifest.json and _SUCCESS
  sse-embed corpus.jsonl --output out/ --resume
      finish the job that stopped while writing out/: only its missing shards are embedded
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (flag names match :func:`~sse_onnx.corpus.embed_corpus`'s)."""
    parser = argparse.ArgumentParser(
        prog="sse-embed",
        description="Embed every document of JSONL or Parquet files on Ray Data with "
        "sse_onnx.Encoder, into Parquet of id and embedding, in input order: one file written "
        "by the driver, or a folder of shards written by the workers.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="JSONL or Parquet files or folders (local, or URIs Ray reads: s3://...), or quoted "
        "glob patterns of local files",
    )
    parser.add_argument(
        "--output",
        required=True,
        metavar="OUT.parquet|DIR",
        help="a .parquet file, written by the driver; or a folder (empty or new) of Parquet "
        "shards written by the workers, with _manifest.json and _SUCCESS written last",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the --output .parquet file if it exists (a folder is never overwritten)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="finish the stopped job of the --output folder (same command otherwise): keep "
        "its shards, embed the missing ones",
    )
    parser.add_argument(
        "--text-field",
        dest="text_fields",
        action="append",
        metavar="NAME",
        help="column holding the text; repeat to join several with a space (default: text)",
    )
    ids = parser.add_mutually_exclusive_group()
    ids.add_argument("--id-field", default="id", metavar="NAME", help="column of ids (default: id)")
    ids.add_argument(
        "--row-ids",
        action="store_true",
        help="number documents from 0 in input order instead of reading ids",
    )
    parser.add_argument(
        "--model", metavar="DIR", help="folder written by sse-export (default: bundled)"
    )
    parser.add_argument("--variant", help="model variant of the folder (default: its default)")
    parser.add_argument("--dim", type=int, metavar="N", help="keep the first N dimensions")
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="float32",
        help="float32, int8/uint8 buckets calibrated on the first documents, or packed sign "
        "bits (default: float32)",
    )
    parser.add_argument(
        "--calibration-docs",
        type=int,
        default=CALIBRATION_DOCS,
        metavar="N",
        help="int8/uint8: documents from the start of the input that set each dimension's "
        f"range (default: {CALIBRATION_DOCS})",
    )
    parser.add_argument(
        "--count-tokens",
        action="store_true",
        help="count tokens for the summary (tokenizes every text a second time)",
    )
    parser.add_argument(
        "--format",
        dest="input_format",
        choices=INPUT_FORMATS,
        help="input format (default: from the file suffixes; needed for folders)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="actors, one Encoder each (default: every core, or every CPU of the cluster but one)",
    )
    parser.add_argument(
        "--cpus-per-worker",
        type=int,
        default=1,
        metavar="N",
        help="CPUs Ray gives each actor, and its onnxruntime threads (default: 1)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help=f"documents per actor call and per shard, a multiple of {BLOCK_TEXTS} (default: "
        f"{BLOCK_TEXTS} for a file, {SHARD_DOCS} for a folder)",
    )
    parser.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="join this Ray cluster (e.g. auto, or ray://host:10001) instead of starting a "
        "local Ray",
    )
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    parser.add_argument("--verbose", action="store_true", help="show Ray Data's own log lines")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code (0 done, 1 bad input or failed job, 130 stopped)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    stopped = f"sse-embed: {_stopped(args.output)}"
    said = threading.Event()
    try:
        with _stoppable(stopped, said):
            summary = _embed(args)
    except (ImportError, SSEError, ValueError, TypeError) as exc:
        print(f"sse-embed: error: {_in_flags(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(stopped, file=sys.stderr, flush=True)
        said.set()
        return INTERRUPTED
    print(summary)
    return 0


@contextmanager
def _stoppable(message: str, said: threading.Event) -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt in the job, which stops it and shuts its Ray down; if the
    process has not ended ``STOP_SECONDS`` later (a Ray that does not shut down, seen on a
    loaded machine), or at a second Ctrl-C, it exits at once with ``message`` (unless ``said``).

    The deadline is kept by a thread woken through ``signal.set_wakeup_fd``, so that it holds
    even while the main thread is blocked inside Ray's C code, where no Python handler runs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def leave() -> None:
        if not said.is_set():
            print(message, file=sys.stderr, flush=True)
        os._exit(INTERRUPTED)

    reader, writer = socket.socketpair()
    writer.setblocking(False)

    def watch() -> None:
        presses = 0
        while data := reader.recv(64):
            before, presses = presses, presses + data.count(signal.SIGINT)
            if presses >= 2:
                leave()
            if before == 0 and presses == 1:
                timer = threading.Timer(STOP_SECONDS, leave)
                timer.daemon = True
                timer.start()

    watcher = threading.Thread(target=watch, name="sse-embed-stop", daemon=True)
    watcher.start()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    try:
        yield
    finally:
        # A deadline already running stays: it also ends an exit that hangs (Ray's hooks).
        signal.set_wakeup_fd(previous_fd)
        signal.signal(signal.SIGINT, previous)
        writer.close()
        watcher.join()
        reader.close()


def _embed(args: argparse.Namespace) -> object:
    """Run :func:`~sse_onnx.corpus.embed_corpus` with the command's arguments."""
    from sse_onnx.corpus.job import embed_corpus

    if not args.verbose:
        import ray.data  # noqa: F401  (configures its loggers, which are quietened next)

        # Its errors reach this command as exceptions, printed by main().
        logging.getLogger("ray.data").setLevel(logging.CRITICAL)
    return embed_corpus(
        args.inputs,
        args.output,
        text_fields=args.text_fields or ["text"],
        id_field=None if args.row_ids else args.id_field,
        model=args.model,
        variant=args.variant,
        dim=args.dim,
        precision=args.precision,
        calibration_docs=args.calibration_docs,
        count_tokens=args.count_tokens,
        input_format=args.input_format,
        workers=args.workers,
        cpus_per_worker=args.cpus_per_worker,
        batch_size=args.batch_size,
        ray_address=args.ray_address,
        progress=args.progress,
        resume=args.resume,
        overwrite=args.overwrite,
    )


def _in_flags(message: str) -> str:
    """A library message with its Python option names said as this command's flags."""
    for python, flag in _FLAGS:
        message = re.sub(python, flag, message)
    return message


def _stopped(output: str) -> str:
    """What a Ctrl-C left, and how to go on."""
    if output.endswith(".parquet"):
        return (
            f"stopped; {output} was not written (a file is written whole): run the command "
            "again, or write a folder of shards, which --resume continues."
        )
    return (
        f"stopped; {output} keeps the shards already written: run the same command with "
        "--resume to continue."
    )


if __name__ == "__main__":
    sys.exit(main())
