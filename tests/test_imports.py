"""The runtime stays thin: importing sse_onnx and encoding loads no training stack; the shared
evaluation module loads numpy alone."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

HEAVY = ("torch", "onnx", "optimum", "transformers", "sse_export")
#: What the runtime loads for encoding, and numpy-only helpers must not.
RUNTIME = ("onnxruntime", "tokenizers", "sse_onnx.encoder")


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
    # bench/, the recipe in models/ and the exporter's report share sse_export.evaluate, which
    # normalises with sse_onnx.embeddings: that module and the package must stay numpy-only.
    code = (
        "import sys, sse_export.evaluate\n"
        f"print(' '.join(m for m in {(*HEAVY[:-1], *RUNTIME)!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_the_package_and_its_embeddings_load_without_the_runtime() -> None:
    code = (
        "import sys, sse_onnx, sse_onnx.embeddings\n"
        f"print(' '.join(m for m in {RUNTIME!r} if m in sys.modules))\n"
        "from sse_onnx import Encoder\n"
        "assert 'onnxruntime' in sys.modules, 'Encoder did not load its module'\n"
        "assert Encoder is sse_onnx.Encoder is sys.modules['sse_onnx.encoder'].Encoder\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_the_runtime_and_the_index_load_neither_pyarrow_nor_ray() -> None:
    # Only the corpus job (sse_onnx.corpus, sse-embed) needs them: the scale extra.
    code = (
        "import sys, sse_onnx, sse_onnx.index, sse_onnx.index.cli, sse_onnx.outputs\n"
        "sse_onnx.Encoder\n"
        "print(sorted({'pyarrow', 'ray'} & {m.split('.')[0] for m in sys.modules}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


#: The index package's modules, each importing (at load or on use) only those before it.
INDEX_LAYERS = ("fusion", "inputs", "vectors", "schema", "postings", "keyword", "store",
                "sources", "cli")  # fmt: skip


def test_every_index_module_imports_only_the_modules_below_it() -> None:
    import ast

    import sse_onnx.index

    package = Path(sse_onnx.index.__file__).parent
    assert sorted(p.stem for p in package.glob("*.py")) == sorted([*INDEX_LAYERS, "__init__"])
    for level, name in enumerate(INDEX_LAYERS):
        tree = ast.parse((package / f"{name}.py").read_text(encoding="utf-8"))
        found = {
            alias.name if isinstance(node, ast.Import) else f"{node.module}.{alias.name}"
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for alias in node.names
        }
        inside = {m.split(".")[2] for m in found if m.startswith("sse_onnx.index.")}
        below = set(INDEX_LAYERS[:level])
        assert inside <= below, f"{name} imports {inside - below}"
