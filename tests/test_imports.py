"""The runtime stays thin: importing sse_onnx and encoding loads no training stack; the shared
evaluation module loads numpy alone."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

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


def test_the_evaluation_module_needs_numpy_only() -> None:
    # bench/, the recipe in models/ and the exporter's report share sse_export.evaluate.
    code = (
        "import sys, sse_export.evaluate\n"
        f"print(' '.join(m for m in {(*HEAVY[:-1], 'sse_onnx')!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_the_evaluation_normalises_as_the_runtime() -> None:
    from sse_export.evaluate import normalize as evaluation_normalize
    from sse_onnx.embeddings import normalize

    rows = np.random.default_rng(0).normal(size=(64, 17)).astype(np.float32)
    rows[3] = 0.0
    # Scores computed from either agree to float32 rounding (the runtime may sum in another order).
    np.testing.assert_allclose(evaluation_normalize(rows), normalize(rows), rtol=0, atol=1e-7)
