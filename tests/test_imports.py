"""The runtime stays thin: importing sse_onnx and encoding loads no training stack."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

HEAVY = ("torch", "onnx", "optimum", "transformers", "sse_export")


def test_encode_loads_no_heavy_modules(
    tiny_checkpoint: Path, exported: Callable[..., Path]
) -> None:
    folder = exported(tiny_checkpoint)
    code = (
        "import sys, sse_onnx\n"
        f"sse_onnx.Encoder({str(folder)!r}).encode(['hello world', ''])\n"
        f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
