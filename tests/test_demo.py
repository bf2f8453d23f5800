"""The sse-demo command (the desktop bundle's entry point): ranking, matrix and input errors."""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from conftest import l2, numpy_sse
from sse_onnx.demo import main

LINES = ["the cat sat on the mat", "a dog on the mat", "東京", "static embeddings are fast"]


def run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], stdin: bytes, *args: str
) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    try:
        code = main(list(args))
    except SystemExit as exit_:  # argparse's errors
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def tiny(tiny_checkpoint: Path, exported: Callable[..., Path]) -> Path:
    return exported(tiny_checkpoint)


def cosines(tensors: dict[str, npt.NDArray[np.float32]], tokenizer: Path) -> npt.NDArray[Any]:
    vectors = l2(numpy_sse(tensors, tokenizer, LINES))
    return vectors @ vectors.T


def test_lines_ranked_against_the_first(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tiny: Path,
    tiny_checkpoint: Path,
    tiny_tensors: dict[str, npt.NDArray[np.float32]],
) -> None:
    stdin = ("\n".join(LINES[:2]) + "\r\n\n   \n" + "\n".join(LINES[2:])).encode()
    code, out, _ = run(monkeypatch, capsys, stdin, "--model", str(tiny))
    expected = cosines(tiny_tensors, tiny_checkpoint / "tokenizer.json")[0, 1:]
    rows = [line.split("  ", 1) for line in out.strip("\n").split("\n")]
    assert code == 0
    assert [text for _, text in rows] == [LINES[1:][i] for i in np.argsort(-expected)]
    np.testing.assert_allclose([float(s) for s, _ in rows], np.sort(expected)[::-1], atol=1e-4)


def test_matrix(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tiny: Path,
    tiny_checkpoint: Path,
    tiny_tensors: dict[str, npt.NDArray[np.float32]],
) -> None:
    code, out, _ = run(
        monkeypatch, capsys, "\n".join(LINES).encode(), "--model", str(tiny), "--matrix"
    )
    rows = out.strip("\n").split("\n")
    assert code == 0
    assert [row.split("  ")[-1] for row in rows] == LINES
    got = [[float(x) for x in row.rsplit("  ", 1)[0].split()] for row in rows]
    expected = cosines(tiny_tensors, tiny_checkpoint / "tokenizer.json")
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_bundled_model_by_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(monkeypatch, capsys, b"a cat\na kitten\nstock market\n")
    assert code == 0
    assert [line.split("  ", 1)[1] for line in out.splitlines()] == ["a kitten", "stock market"]


@pytest.mark.parametrize(
    ("stdin", "code", "message"),
    [
        (b"only one line\n\n", 2, r"got 1 non-blank line\(s\)"),
        (b"caf\xe9\nok\n", 2, "standard input is not UTF-8"),
    ],
)
def test_bad_input(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    stdin: bytes,
    code: int,
    message: str,
) -> None:
    got, _, err = run(monkeypatch, capsys, stdin)
    assert got == code
    assert re.search(message, err), err


def test_bad_model_folder(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run(monkeypatch, capsys, b"a\nb\n", "--model", str(tmp_path / "absent"))
    assert code == 1
    assert err.startswith("sse-demo: ") and "absent" in err
