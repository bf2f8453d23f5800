"""What every bench script shares: its options, logging, environment record and result files.

A script builds its parser with :func:`parser` (``--out``, and ``--model``/``--data`` where it
takes them), calls :func:`setup_logging`, records :func:`environment` in its results and
writes ``OUT/NAME.json`` and ``OUT/NAME.md`` with :func:`write_results`. Scripts are run as
``python bench/NAME.py`` (``bench/`` is then on ``sys.path``, so they ``import harness``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sqlite3
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from sse_export.evaluate import RetrievalData, default_data_dir, load_named

#: Where the committed results live.
RESULTS = Path(__file__).resolve().parent / "results"
#: Packages whose versions every environment record names.
PACKAGES = ("numpy", "onnxruntime", "tokenizers")


def parser(
    doc: str | None,
    *,
    out: Path | None = None,
    model: bool = False,
    data: bool = False,
) -> argparse.ArgumentParser:
    """An argument parser described by the first paragraph of ``doc`` (a module docstring).

    Args:
        doc: The script's ``__doc__``.
        out: The default of ``--out``; ``None`` makes ``--out`` required.
        model: Add ``--model`` (an SSE checkpoint; the bundled default when absent).
        data: Add ``--data`` (the evaluation data root; ``$SSE_DATA`` or ``../shared/data``).
    """
    made = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    made.add_argument(
        "--out",
        type=Path,
        required=out is None,
        default=out,
        help="folder for the result files" + ("" if out is None else f" (default: {out})"),
    )
    if model:
        made.add_argument("--model", default=None, help="SSE checkpoint (default: bundled)")
    if data:
        made.add_argument(
            "--data",
            type=Path,
            default=None,
            help="evaluation data root (default: $SSE_DATA or ../shared/data)",
        )
    return made


def setup_logging(fmt: str = "%(asctime)s %(message)s") -> None:
    """INFO logging to stderr, for a script's ``main()``."""
    logging.basicConfig(level=logging.INFO, format=fmt)


def data_dir(data: Path | str | None) -> Path:
    """The evaluation data root: ``--data``, else ``$SSE_DATA`` or ``../shared/data``."""
    return default_data_dir() if data is None else Path(data)


def scifact(data: Path | str | None) -> RetrievalData:
    """SciFact from the evaluation data root; stops the script with the fix when absent."""
    root = data_dir(data)
    found = load_named("scifact", root)
    if not isinstance(found, RetrievalData):
        raise SystemExit(
            f"SciFact was not found under {root}; pass --data or set $SSE_DATA to the "
            "evaluation data folder (python bench/get_data.py DATA_DIR builds it)."
        )
    return found


def package_version(name: str) -> str | None:
    """The installed version of a distribution, ``None`` when it is not installed."""
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def cpu_name() -> str:
    """The CPU's model name (from ``/proc/cpuinfo`` on Linux)."""
    cpu = platform.processor()
    info = Path("/proc/cpuinfo")
    if info.exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in info.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return cpu


def environment(packages: Sequence[str] = PACKAGES) -> dict[str, Any]:
    """The date, Python, platform, CPU, cores, SQLite, the load average now, and the versions
    of ``packages`` (every bench script records this one dict)."""
    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        "load_average_before": os.getloadavg(),
        "versions": {name: package_version(name) for name in packages},
    }


def write_results(
    out: Path, name: str, results: Any, markdown: str, *, ensure_ascii: bool = True
) -> None:
    """Write ``out/name.json`` (indented, newline-terminated) and ``out/name.md``."""
    out.mkdir(parents=True, exist_ok=True)
    text = json.dumps(results, indent=2, ensure_ascii=ensure_ascii) + "\n"
    (out / f"{name}.json").write_text(text, encoding="utf-8")
    (out / f"{name}.md").write_text(markdown, encoding="utf-8")
