"""The ``sse-demo`` command: embed lines of standard input and print cosine similarities.

The first non-blank line is the query; the other lines are printed most similar first, each
after its cosine similarity with the query. ``--matrix`` prints every pair instead. The bundled
default model (int8, 256 dimensions) is used unless ``--model`` names an exported folder. This
is also the entry point of the desktop bundle (``export/desktop/build.sh``).

Example::

    $ printf '%s\\n' 'how fast are static embeddings?' 'The cat sat on the mat.' \\
        'Static embeddings are fast.' | sse-demo
     0.8788  Static embeddings are fast.
    -0.0314  The cat sat on the mat.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sse_onnx.encoder import Encoder
from sse_onnx.errors import SSEError

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code (2 for bad input, 1 for a bad model)."""
    parser = argparse.ArgumentParser(
        prog="sse-demo",
        description="Embed the lines of standard input (UTF-8) with an SSE model and print "
        "cosine similarities: the other lines against the first one, most similar first.",
    )
    parser.add_argument("--model", type=Path, help="an exported folder (default: the bundled one)")
    parser.add_argument(
        "--matrix", action="store_true", help="print the similarity of every pair of lines"
    )
    args = parser.parse_args(argv)
    try:
        text = sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError as exc:
        parser.error(f"standard input is not UTF-8 ({exc}); convert it, e.g. with iconv.")
    lines = [line.removesuffix("\r") for line in text.split("\n") if line.strip()]
    if len(lines) < 2:
        parser.error(f"got {len(lines)} non-blank line(s) on standard input; give at least two.")
    try:
        encoder = Encoder(args.model)
    except (SSEError, OSError) as exc:
        parser.exit(1, f"sse-demo: {exc}\n")
    embeddings = encoder.encode(lines)
    scores = embeddings @ embeddings.T
    if args.matrix:
        rows = [
            " ".join(f"{s:7.4f}" for s in scores[i]) + f"  {line}" for i, line in enumerate(lines)
        ]
    else:
        order = np.argsort(-scores[0, 1:], kind="stable") + 1
        rows = [f"{scores[0, i]:7.4f}  {lines[i]}" for i in order]
    # Bytes, so that the output is UTF-8 whatever the locale (a bundle may run with none).
    sys.stdout.buffer.write("".join(row + "\n" for row in rows).encode("utf-8"))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
