"""Checkpoint loading: every error path names the file, key or shape, in the API and the CLI."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from conftest import TINY_VOCAB, sse_arrays, write_checkpoint
from sse_export import load_checkpoint
from sse_export.checkpoint import LAYOUTS
from sse_export.cli import main
from sse_onnx import CheckpointError

Tensors = dict[str, npt.NDArray[np.float32]]


def broken_tensors(kind: str) -> Tensors:
    tensors = sse_arrays(len(TINY_VOCAB), 8, seed=3)
    if kind == "missing key":
        del tensors["dyt.beta"]
    elif kind == "unexpected key":
        tensors["head.weight"] = np.ones(8, dtype=np.float32)
    elif kind == "table rows":
        tensors["embedding.weight"] = tensors["embedding.weight"][:-2]
    elif kind == "dyt length":
        tensors["dyt.alpha"] = tensors["dyt.alpha"][:5]
    elif kind == "table not 2-d":
        tensors["embedding.weight"] = tensors["embedding.weight"].reshape(-1)
    elif kind == "nan":
        tensors["embedding.weight"][3, 1] = np.nan
    elif kind == "inf":
        tensors["dyt.bias"][0] = np.inf
    return tensors


CASES = [
    ("missing key", r"missing keys \['dyt.beta'\], unexpected keys \[\]"),
    ("unexpected key", r"unexpected keys \['head.weight'\]"),
    ("table rows", rf"has {len(TINY_VOCAB)} tokens but .* has {len(TINY_VOCAB) - 2} table rows"),
    ("dyt length", r"dyt.alpha has shape \[5\] but embedding.weight is \[32, 8\]"),
    ("table not 2-d", r"embedding.weight has shape \[256\], expected \[vocab, dim\]"),
    ("nan", r"embedding.weight holds 1 non-finite values"),
    ("inf", r"dyt.bias holds 1 non-finite values"),
]


@pytest.mark.parametrize(("kind", "match"), CASES)
def test_bad_tensors(tmp_path: Path, tiny_tokenizer: Path, kind: str, match: str) -> None:
    folder = write_checkpoint(tmp_path / "ckpt", tiny_tokenizer, broken_tensors(kind))
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(folder)


@pytest.mark.parametrize(("kind", "match"), CASES)
def test_cli_reports_one_line_and_fails(
    tmp_path: Path,
    tiny_tokenizer: Path,
    capsys: pytest.CaptureFixture[str],
    kind: str,
    match: str,
) -> None:
    folder = write_checkpoint(tmp_path / "ckpt", tiny_tokenizer, broken_tensors(kind))
    assert main(["--model", str(folder), "--output", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sse-export: error: ")
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_missing_folder_and_files(tmp_path: Path, tiny_checkpoint: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere" / "deeper")
    for name in ("model.safetensors", "tokenizer.json"):
        folder = tmp_path / name
        shutil.copytree(tiny_checkpoint, folder)
        (folder / name).unlink()
        with pytest.raises(CheckpointError, match=f"{name} is missing"):
            load_checkpoint(folder)
    with pytest.raises(CheckpointError, match="is a file; pass the checkpoint folder"):
        load_checkpoint(tiny_checkpoint / "model.safetensors")


def test_a_folder_without_weights_names_every_layout(tmp_path: Path, tiny_tokenizer: Path) -> None:
    shutil.copy(tiny_tokenizer, tmp_path / "tokenizer.json")
    with pytest.raises(CheckpointError, match=r"model\.safetensors is missing") as caught:
        load_checkpoint(tmp_path)
    for layout in LAYOUTS:
        assert f"{layout.name}: {' and '.join(layout.files)}" in str(caught.value)


def test_damaged_files(tmp_path: Path, tiny_checkpoint: Path) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="is not a readable safetensors file"):
        load_checkpoint(folder)
    shutil.copy(tiny_checkpoint / "model.safetensors", weights)
    (folder / "tokenizer.json").write_text("{}")
    with pytest.raises(CheckpointError, match=r"is not a readable Hugging Face tokenizer\.json"):
        load_checkpoint(folder)


def test_hub_id_fails_clearly_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="not a local folder"):
        load_checkpoint("some-org/some-sse-model")


def test_half_precision_checkpoint_loads_as_float32(tmp_path: Path, tiny_tokenizer: Path) -> None:
    tensors = {k: v.astype(np.float16) for k, v in sse_arrays(len(TINY_VOCAB), 8, 4).items()}
    checkpoint = load_checkpoint(write_checkpoint(tmp_path / "half", tiny_tokenizer, tensors))  # type: ignore[arg-type]
    assert checkpoint.table.dtype == np.float32
    np.testing.assert_array_equal(checkpoint.table, tensors["embedding.weight"].astype(np.float32))


def test_python_files_in_the_folder_are_never_run(
    tmp_path: Path, tiny_checkpoint: Path, exported: Callable[..., Path]
) -> None:
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint, folder)
    marker = tmp_path / "ran"
    payload = f"open({str(marker)!r}, 'w').write('ran')\n"
    for name in ("__init__.py", "modeling_sse.py", "custom_module.py"):
        (folder / name).write_text(payload)
    (folder / "modules.json").write_text('[{"type": "custom_module.SSE", "path": ""}]')
    assert main(["--model", str(folder), "--output", str(tmp_path / "out"), "--quiet"]) == 0
    assert not marker.exists()


@pytest.mark.parametrize("dim", [0, -3, 17])
def test_dim_out_of_range(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str], dim: int
) -> None:
    out = ["--model", str(tiny_checkpoint), "--output", str(tmp_path / "o"), "--dim", str(dim)]
    assert main(out) == 1
    err = capsys.readouterr().err.strip()
    assert f"dim={dim} is out of range: the model has 16 dimensions; choose 1 to 16" in err
    assert len(err.splitlines()) == 1


def test_fp16_overflow_is_named_before_writing(tmp_path: Path, tiny_tokenizer: Path) -> None:
    from sse_export import export

    tensors = sse_arrays(len(TINY_VOCAB), 8, 4)
    tensors["embedding.weight"][3, 5] = 1e5  # beyond float16's 65504
    checkpoint = write_checkpoint(tmp_path / "big", tiny_tokenizer, tensors)
    out = tmp_path / "out"
    with pytest.raises(CheckpointError, match=r"values up to 1e\+05, beyond float16's largest"):
        export(checkpoint, output=out, variants=["fp32", "fp16"])
    assert not out.exists()
    export(checkpoint, output=out, variants=["fp32", "int8"], report=False)  # others are fine


def test_export_arguments_of_other_types(tmp_path: Path, tiny_checkpoint: Path) -> None:
    from sse_export import export

    with pytest.raises(TypeError, match="variants must be a list of variant names, not NoneType"):
        export(tiny_checkpoint, output=tmp_path, variants=None)  # type: ignore[arg-type]
    result = export(tiny_checkpoint, output=tmp_path, dim=np.int64(8), report=False)
    assert result.manifest.dim == 8 and isinstance(result.manifest.dim, int)
