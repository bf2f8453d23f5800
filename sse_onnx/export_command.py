"""The ``sse-export`` command: the exporter's CLI where it is installed, else how to install it.

The exporter (``sse_export``, with PyTorch and the default checkpoint) is a distribution of its
own, built from ``export/`` in the source tree, so that the runtime stays small. It registers
its command under the entry-point group :data:`GROUP`; the runtime finds it there and never
imports the exporter by name.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

__all__ = ["GROUP", "INSTALL", "main"]

#: Entry-point group under which the exporter registers ``sse-export``.
GROUP = "sse_onnx.commands"
#: How to install the exporter (from the top folder of an sse-onnx checkout).
INSTALL = "pip install ./export"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sse-export``; returns its exit code (1, with one line on stderr, without it)."""
    found = entry_points(group=GROUP, name="sse-export")
    if not found:
        print(
            "sse-export: the exporter is not installed (this is the runtime only); from the "
            f"sse-onnx source folder run: {INSTALL}",
            file=sys.stderr,
        )
        return 1
    try:
        command = next(iter(found)).load()
    except ModuleNotFoundError as exc:  # a damaged install, e.g. a dependency removed since
        print(
            f"sse-export: the exporter is installed but cannot run: module {exc.name!r} is "
            f"missing; reinstall it from the sse-onnx source folder: {INSTALL}",
            file=sys.stderr,
        )
        return 1
    return int(command(argv))


if __name__ == "__main__":
    sys.exit(main())
