"""The sse-export command, in process and as the installed console script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tokenizers import Tokenizer

from sse_export import export
from sse_export.cli import main
from sse_onnx import Encoder, ParityError
from sse_onnx.folder import read_manifest, sha256_file


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--dim", "--output", "--variants", "--no-validate", "examples:"):
        assert flag in out


def test_export_writes_a_complete_folder(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["--model", str(tiny_checkpoint), "--output", str(out), "--dim", "8"]
    assert main([*args, "--variants", "fp32", "fp16"]) == 0
    printed = capsys.readouterr().out
    assert "fp32" in printed and "fp16" in printed and "max|d| <1k tok" in printed
    manifest = read_manifest(out)
    assert (manifest.dim, manifest.source_dim, manifest.vocab_size) == (8, 16, 32)
    # The first of --variants; no quality report without --eval-data (tests/test_exporter.py).
    assert manifest.default_variant == "fp32"
    assert not (out / "quality.json").exists()
    assert sorted(manifest.variants) == ["fp16", "fp32"]
    assert manifest.source_sha256["model.safetensors"] == sha256_file(
        tiny_checkpoint / "model.safetensors"
    )
    assert manifest.source_sha256["tokenizer.json"] == sha256_file(
        tiny_checkpoint / "tokenizer.json"
    )
    config = json.loads((out / "tokenizer.json").read_text())
    assert config["padding"] is None and config["truncation"] is None
    assert config["post_processor"] is None


def test_exported_tokenizer_adds_nothing(tmp_path: Path, bert_checkpoint: Path) -> None:
    export(bert_checkpoint, output=tmp_path, dim=4, validate=False)
    tokenizer = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    encoding = tokenizer.encode("hello world " * 100)  # default call: special tokens allowed
    assert len(encoding.ids) == 200 and 101 not in encoding.ids


def test_default_variant_can_be_chosen(tmp_path: Path, tiny_checkpoint: Path) -> None:
    result = export(
        tiny_checkpoint, output=tmp_path, variants=["fp32", "int4"], default_variant="fp32"
    )
    assert result.manifest.default_variant == "fp32"
    assert Encoder(tmp_path).variant == "fp32"
    with pytest.raises(ValueError, match="default_variant='int8' is not among variants"):
        export(tiny_checkpoint, output=tmp_path, variants=["fp32"], default_variant="int8")


def test_no_validate(tmp_path: Path, tiny_checkpoint: Path) -> None:
    result = export(tiny_checkpoint, output=tmp_path, validate=False)
    assert result.reports == []
    assert Encoder(tmp_path).encode("cat").shape == (16,)


def test_failed_validation_removes_the_manifest(
    tmp_path: Path, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sse_export import validate

    # A reference that disagrees with the graph: the export must fail and not be loadable.
    original = validate.SSE.embed

    def skewed(self: validate.SSE, ids: list[list[int]]) -> np.ndarray:
        return original(self, ids) + 0.5

    monkeypatch.setattr(validate.SSE, "embed", skewed)
    with pytest.raises(ParityError, match=r"Variant\(s\) \['fp32'\]"):
        export(tiny_checkpoint, output=tmp_path)
    assert not (tmp_path / "manifest.json").exists()


def test_bad_output_and_eval_data_fail_before_writing(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / "a-file"
    existing.write_text("")
    assert main(["--model", str(tiny_checkpoint), "--output", str(existing)]) == 1
    assert f"output {existing} is a file; pass a folder" in capsys.readouterr().err
    out = tmp_path / "out"
    argv = ["--model", str(tiny_checkpoint), "--output", str(out), "--eval-data", "nowhere"]
    assert main(argv) == 1
    assert "eval_data nowhere is not a folder" in capsys.readouterr().err
    assert not out.exists()


def test_bad_variant_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--variants", "int3"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'int3'" in capsys.readouterr().err


def test_installed_console_script(tmp_path: Path, tiny_checkpoint: Path) -> None:
    script = shutil.which("sse-export") or str(Path(sys.executable).parent / "sse-export")
    out = tmp_path / "out"
    done = subprocess.run(
        [script, "--model", str(tiny_checkpoint), "--output", str(out), "--dim", "4"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Validation against the PyTorch reference" in done.stdout
    assert Encoder(out).encode(["hello world"]).shape == (1, 4)
    bad = subprocess.run(
        [script, "--model", str(tmp_path / "missing"), "--output", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1
    assert bad.stderr.startswith("sse-export: error: Checkpoint folder")
    assert "Traceback" not in bad.stderr
