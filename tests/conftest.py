"""Shared fixtures: tiny synthetic SSE checkpoints (seeded) and an independent numpy reference.

Checkpoints are built here, never downloaded. Two tokenizers are used: the real
bert-base-uncased WordPiece tokenizer shipped with the default model, and a tiny WordPiece one
built in code.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis.configuration import set_hypothesis_home_dir
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

ROOT = Path(__file__).resolve().parents[1]
BERT_TOKENIZER = ROOT / "models" / "default" / "tokenizer.json"
#: The real evaluation data, for the few tests that need it (they skip where it is absent).
EVAL_DATA = Path(os.environ.get("SSE_DATA") or ROOT.parent / "shared" / "data")


def pytest_configure(config: pytest.Config) -> None:
    """Hypothesis's folder (its example database and a cache it writes while collecting) goes
    into pytest's own cache folder rather than a second folder in the working tree."""
    cache = getattr(config, "cache", None)
    if cache is not None:
        set_hypothesis_home_dir(cache.mkdir("hypothesis"))


TINY_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "dog",
    "static", "embed", "##ding", "##s", "are", "fast", ".", ",", "!", "?", "a", "b", "c",
    "hello", "world", "##ed", "caf", "##e", "naive", "東", "京",
]  # fmt: skip


def write_tiny_tokenizer(path: Path) -> Path:
    """A BERT-style WordPiece tokenizer over TINY_VOCAB, saved as tokenizer.json."""
    vocab = {token: i for i, token in enumerate(TINY_VOCAB)}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.save(str(path))
    return path


def sse_arrays(vocab: int, dim: int, seed: int) -> dict[str, npt.NDArray[np.float32]]:
    """Random SSE tensors with a non-trivial head (alpha, beta, bias far from the init)."""
    rng = np.random.default_rng(seed)
    return {
        "embedding.weight": rng.normal(0, 1, (vocab, dim)).astype(np.float32),
        "dyt.alpha": rng.uniform(0.2, 1.5, dim).astype(np.float32),
        "dyt.beta": rng.uniform(0.5, 2.0, dim).astype(np.float32),
        "dyt.bias": rng.normal(0, 0.3, dim).astype(np.float32),
    }


def write_checkpoint(
    folder: Path,
    tokenizer: Path,
    tensors: dict[str, npt.NDArray[np.float32]],
) -> Path:
    """Write an SSE checkpoint folder: model.safetensors + tokenizer.json."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"))
    shutil.copy(tokenizer, folder / "tokenizer.json")
    return folder


def numpy_sse(
    tensors: dict[str, npt.NDArray[np.float32]],
    tokenizer: Path,
    texts: Sequence[str],
    dim: int | None = None,
) -> npt.NDArray[np.float64]:
    """Independent reference: HF ids (no special tokens), float64 mean incl. [UNK], DyT, slice."""
    tok = Tokenizer.from_file(str(tokenizer))
    tok.no_padding()
    tok.no_truncation()
    table = tensors["embedding.weight"].astype(np.float64)
    alpha, beta, bias = (
        tensors[k].astype(np.float64) for k in ("dyt.alpha", "dyt.beta", "dyt.bias")
    )
    rows = []
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False).ids
        mean = table[ids].mean(axis=0) if ids else np.zeros(table.shape[1])
        rows.append(beta * np.tanh(alpha * mean + bias))
    out = np.array(rows).reshape(len(texts), table.shape[1])
    return out[:, : dim or table.shape[1]]


def stored_as(variant: str, table: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Independent restatement of each variant's storage, decoded (SSEQ per SSE.md)."""
    if variant == "fp32":
        return table
    if variant == "fp16":
        return table.astype(np.float16).astype(np.float32)
    if variant == "int8":
        scale = np.abs(table).max(axis=1, keepdims=True) / 127
        return np.round(table / scale).clip(-127, 127) * scale
    if variant == "int4":
        scale = np.abs(table).max(axis=1, keepdims=True) + 1e-8
        q = np.clip(np.round((table / scale + 1) * 7.5), 0, 15)
        return (q / 7.5 - 1) * scale
    # int4_block: blocks of 32 columns (zero-padded), scale = -(value of largest magnitude) / 8.
    width = -(-table.shape[1] // 32) * 32
    padded = np.zeros((table.shape[0], width))
    padded[:, : table.shape[1]] = table
    blocks = padded.reshape(table.shape[0], -1, 32)
    peak = np.take_along_axis(blocks, np.abs(blocks).argmax(axis=2)[..., None], axis=2)
    scale = (peak / -8).astype(np.float32)
    q = np.clip(np.round(blocks / np.where(scale == 0, 1, scale) + 8), 0, 15)
    return ((q - 8) * scale).reshape(table.shape[0], width)[:, : table.shape[1]]


def run_in_threads(work: Callable[[int], None], count: int = 8) -> None:
    """Run ``work(0)`` .. ``work(count - 1)`` on threads that switch as often as possible."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)


def l2(x: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
    """Row-wise L2 normalisation in float64 (zero rows stay zero)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


@pytest.fixture(scope="session")
def tiny_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_tokenizer(tmp_path_factory.mktemp("tiny-tokenizer") / "tokenizer.json")


@pytest.fixture(scope="session")
def tiny_tensors() -> dict[str, npt.NDArray[np.float32]]:
    return sse_arrays(len(TINY_VOCAB), 16, seed=1)


@pytest.fixture(scope="session")
def tiny_checkpoint(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_tokenizer: Path,
    tiny_tensors: dict[str, npt.NDArray[np.float32]],
) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("tiny-ckpt"), tiny_tokenizer, tiny_tensors)


@pytest.fixture(scope="session")
def bert_tensors() -> dict[str, npt.NDArray[np.float32]]:
    """A 30,522-row table of width 300, so that 256, 64 and 1 are true truncations."""
    return sse_arrays(30522, 300, seed=2)


@pytest.fixture(scope="session")
def bert_checkpoint(
    tmp_path_factory: pytest.TempPathFactory, bert_tensors: dict[str, npt.NDArray[np.float32]]
) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("bert-ckpt"), BERT_TOKENIZER, bert_tensors)


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Export a checkpoint once per (checkpoint, dim, variants) and reuse the folder."""
    from sse_export import export

    cache: dict[tuple[Path, int | None, tuple[str, ...]], Path] = {}

    def get(
        checkpoint: Path, dim: int | None = None, variants: tuple[str, ...] = ("fp32",)
    ) -> Path:
        key = (checkpoint, dim, variants)
        if key not in cache:
            folder = tmp_path_factory.mktemp("export")
            export(checkpoint, output=folder, dim=dim, variants=variants)
            cache[key] = folder
        return cache[key]

    return get


def run_cases(worker: str, cases: list[Path]) -> dict[str, str]:
    """Run fuzzed ``cases`` through ``worker`` (Python source) in as few subprocesses as it takes.

    The worker reads one case path a line on stdin and prints ``start CASE`` before and
    ``end {"case": ..., "outcome": ...}`` after each. Returns each case's outcome; a case that
    ends its process is ``"crash: return code N: <stderr>"``, and the rest run in a new one.
    """
    outcomes: dict[str, str] = {}
    pending = [str(case) for case in cases]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    while pending:
        run = subprocess.run(
            [sys.executable, "-c", worker],
            input="\n".join(pending) + "\n",
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        started = None
        for line in run.stdout.split("\n"):  # other lines are the libraries' own output
            if line.startswith("start "):
                started = line.removeprefix("start ")
            elif line.startswith("end "):
                result = json.loads(line.removeprefix("end "))
                outcomes[result["case"]] = result["outcome"]
                started = None
        if started is not None:  # the process died inside this case
            outcomes[started] = f"crash: return code {run.returncode}: {run.stderr[-300:]}"
        pending = [case for case in pending if case not in outcomes]
        if pending and started is None:
            raise AssertionError(f"the worker stopped before any case: {run.stderr[-2000:]}")
    return outcomes
