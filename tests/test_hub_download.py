"""Checkpoints named by a hub id, fetched from a local mock of the hub (there is no hub here).

Two mocks, both laid out as the hub lays out the repositories the README names: a
sentence-transformers repository with its weights in ``0_StaticEmbedding/``
(static-retrieval-mrl-en-v1's layout) and an SSEQ 4-bit repository (quantized-stable-static-
embedding-*), each with files the exporter must not fetch (ONNX and OpenVINO exports, code):

- the hub client's ``snapshot_download`` replaced by one that applies the exporter's
  ``allow_patterns`` with the client's own filter, so a pattern that misses a file the layout
  needs (or fetches a foreign one) fails here;
- the real client, offline, on a cache folder laid out as the client lays it out
  (``models--org--name/blobs``, ``snapshots/<revision>``, ``refs/main``), through the CLI.

Each export equals the export of the same files from a local folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_families import write_static_embedding
from test_sseq import write_sseq

from conftest import TINY_VOCAB, sse_arrays
from sse_export import load_checkpoint
from sse_export.cli import main
from sse_onnx import Encoder

REVISION = "0123456789abcdef0123456789abcdef01234567"
TEXTS = ["the cat sat on the mat", "static embeddings are fast!", "", "zebra 東京"]
#: Files a hub repository holds beside the checkpoint, which the exporter never reads.
FOREIGN = ("onnx/model.onnx", "openvino/openvino_model.bin", "modeling_custom.py")


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer: Path) -> dict[str, Path]:
    """Repository id -> a folder with the repository's files, as the hub holds them."""
    root = tmp_path_factory.mktemp("hub")
    table = np.random.default_rng(3).normal(0, 1, (len(TINY_VOCAB), 16)).astype(np.float32)
    static = write_static_embedding(root / "static", tiny_tokenizer, table, normalize=True)
    (static / "README.md").write_text("# static-retrieval-mrl-en-v1 (mock)\n", encoding="utf-8")
    sseq = root / "sseq"
    write_sseq(sseq, tiny_tokenizer, sse_arrays(len(TINY_VOCAB), 16, seed=7))
    (sseq / "README.md").write_text("# quantized-stable-static-embedding (mock)\n")
    for folder in (static, sseq):
        for name in FOREIGN:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(b"not for the exporter")
    return {"org/static-mock": static, "org/sseq-mock": sseq}


def repo_files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def local_vectors(folder: Path, tmp_path: Path) -> Any:
    out = tmp_path / f"local-{folder.name}"
    assert main(["--model", str(folder), "--output", str(out), "--quiet"]) == 0
    return Encoder(out).encode(TEXTS)


@pytest.mark.parametrize(
    ("repo", "needed"),
    [
        (
            "org/static-mock",
            {
                "modules.json",
                "0_StaticEmbedding/model.safetensors",
                "0_StaticEmbedding/tokenizer.json",
            },
        ),
        ("org/sseq-mock", {"embedding.q4_k_m.bin", "model_rest.safetensors", "tokenizer.json"}),
    ],
)
def test_allow_patterns_fetch_what_each_layout_needs(
    repo: str,
    needed: set[str],
    hub: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    fetched: list[str] = []

    def snapshot_download(
        repo_id: str,
        *,
        allow_patterns: list[str] | None = None,
        ignore_patterns: list[str] | None = None,
        **_: Any,
    ) -> str:
        source = hub[repo_id]
        snapshot = tmp_path / f"models--{repo_id.replace('/', '--')}" / "snapshots" / REVISION
        for name in filter_repo_objects(
            repo_files(source), allow_patterns=allow_patterns, ignore_patterns=ignore_patterns
        ):
            (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source / name, snapshot / name)
            fetched.append(name)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    checkpoint = load_checkpoint(repo)
    assert needed <= set(fetched), f"not fetched: {needed - set(fetched)}"
    assert not set(fetched) & set(FOREIGN), (
        f"fetched files never read: {set(fetched) & set(FOREIGN)}"
    )
    assert checkpoint.family == ("sse" if "sseq" in repo else "sentence-transformers")

    out = tmp_path / "from-hub"
    assert main(["--model", repo, "--output", str(out), "--quiet"]) == 0
    expected = local_vectors(hub[repo], tmp_path)
    np.testing.assert_array_equal(Encoder(out).encode(TEXTS), expected)


def hub_cache(hub: dict[str, Path], cache: Path) -> Path:
    """Lay the repositories out as huggingface_hub's cache does: blobs named by their sha256,
    a snapshot of symlinks to them per revision, and ``refs/main`` naming the revision."""
    for repo, source in hub.items():
        base = cache / f"models--{repo.replace('/', '--')}"
        (base / "refs").mkdir(parents=True)
        (base / "refs" / "main").write_text(REVISION)
        (base / "blobs").mkdir()
        for name in repo_files(source):
            data = (source / name).read_bytes()
            blob = base / "blobs" / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
            link = base / "snapshots" / REVISION / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    return cache


def test_real_client_reads_the_hub_cache_offline(hub: dict[str, Path], tmp_path: Path) -> None:
    cache = hub_cache(hub, tmp_path / "hub-cache")
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HOME", None)
    # The CLI in a fresh interpreter: the client reads its cache and offline settings on import.
    code = (
        "import sys\nfrom sse_export.cli import main\n"
        "for repo, out in zip(sys.argv[1::2], sys.argv[2::2]):\n"
        "    assert main(['--model', repo, '--output', out, '--quiet']) == 0, repo\n"
    )
    outs = {repo: tmp_path / repo.replace("/", "-") for repo in hub}
    arguments = [str(arg) for pair in outs.items() for arg in pair]
    run = subprocess.run(
        [sys.executable, "-c", code, *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for repo, out in outs.items():
        expected = local_vectors(hub[repo], tmp_path)
        np.testing.assert_array_equal(Encoder(out).encode(TEXTS), expected, err_msg=repo)
