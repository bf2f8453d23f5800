"""An export is a pure function of its arguments, and never mixes into or deletes others' files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sse_export import export
from sse_export.cli import main
from sse_onnx import Encoder
from sse_onnx.folder import read_manifest

ALL_VARIANTS = ["fp32", "fp16", "int8", "int4", "int4_block", "int8_dynamic"]


def write_tiny_data(root: Path) -> Path:
    """A BEIR-layout data root with a three-document SciFact, as the quality report reads it."""
    folder = root / "retrieval" / "scifact"
    (folder / "qrels").mkdir(parents=True)
    docs = [("d1", "the cat sat on the mat"), ("d2", "static embeddings are fast"), ("d3", "a")]
    lines = [json.dumps({"_id": i, "title": "", "text": t}) for i, t in docs]
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    query = json.dumps({"_id": "q1", "text": "fast embeddings"})
    (folder / "queries.jsonl").write_text(query + "\n", encoding="utf-8")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td2\t1\n")
    return root


def files_of(folder: Path) -> dict[str, bytes]:
    """Each entry's bytes by name (a folder's as empty)."""
    return {p.name: p.read_bytes() if p.is_file() else b"" for p in sorted(folder.iterdir())}


def test_same_command_same_bytes_wherever_it_runs(tmp_path: Path, tiny_checkpoint: Path) -> None:
    # Machine A has evaluation data beside the working folder and in $SSE_DATA; machine B has
    # none. Neither may change a byte of the export, and no report is made unless asked.
    with_data, without = tmp_path / "a" / "work", tmp_path / "b" / "deep" / "work"
    with_data.mkdir(parents=True)
    without.mkdir(parents=True)
    write_tiny_data(tmp_path / "a" / "shared" / "data")
    argv = ["--model", str(tiny_checkpoint), "--dim", "8", "--output", "out", "--quiet"]
    code = "import sys; from sse_export.cli import main; sys.exit(main(sys.argv[1:]))"
    for cwd, data in ((with_data, str(tmp_path / "a" / "shared" / "data")), (without, None)):
        env = {k: v for k, v in os.environ.items() if k != "SSE_DATA"}
        env |= {"SSE_DATA": data} if data else {}
        done = subprocess.run(
            [sys.executable, "-c", code, *argv, "--variants", *ALL_VARIANTS],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
    first, second = files_of(with_data / "out"), files_of(without / "out")
    assert first == second
    assert sorted(first) == sorted(
        [
            "manifest.json",
            "tokenizer.json",
            *(f.file for f in read_manifest(without / "out").variants.values()),
        ]
    )
    manifest = read_manifest(without / "out")
    assert manifest.default_variant == "fp32"  # the first of --variants, never a measurement
    # Nothing of the machine: no path, user or time in any file.
    for name, content in first.items():
        for part in (str(tmp_path), tmp_path.name, str(tiny_checkpoint), str(Path.home())):
            assert part.encode() not in content, (name, part)
    data = json.loads(first["manifest.json"])
    assert not {"created", "timestamp", "date", "path", "host"} & set(data)


def test_report_only_with_eval_data(tmp_path: Path, tiny_checkpoint: Path) -> None:
    data = write_tiny_data(tmp_path / "data")
    plain = export(tiny_checkpoint, output=tmp_path / "plain", variants=["fp32", "fp16"])
    assert plain.quality == [] and not (tmp_path / "plain" / "quality.json").exists()
    measured = export(
        tiny_checkpoint, output=tmp_path / "measured", variants=["fp32", "fp16"], eval_data=data
    )
    assert [row.variant for row in measured.quality] == ["fp32", "fp16"]
    assert measured.quality[1].within_bounds  # fp16 fits its bound, yet fp32 stays the default
    reported = files_of(tmp_path / "measured")
    assert {"quality.json", "quality.md"} <= set(reported)
    assert {k: v for k, v in reported.items() if not k.startswith("quality.")} == files_of(
        tmp_path / "plain"
    )


def test_cli_names_the_smallest_variant_within_bounds(
    tmp_path: Path, tiny_checkpoint: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_tiny_data(tmp_path / "data")
    argv = ["--model", str(tiny_checkpoint), "--output", str(tmp_path / "out"), "--no-validate"]
    assert main([*argv, "--variants", "fp32", "fp16", "--eval-data", str(data)]) == 0
    assert "export with --default-variant fp16 to make Encoder load it" in capsys.readouterr().out
    assert Encoder(tmp_path / "out").variant == "fp32"


def test_a_non_empty_output_needs_overwrite(tmp_path: Path, tiny_checkpoint: Path) -> None:
    out = tmp_path / "out"
    data = write_tiny_data(tmp_path / "data")
    export(tiny_checkpoint, output=out, variants=["fp32", "fp16", "int8"], eval_data=data)
    before = files_of(out)
    with pytest.raises(ValueError, match=r"already holds an export \(manifest.json, model.onnx"):
        export(tiny_checkpoint, output=out, variants=["int8"])
    assert files_of(out) == before
    # --overwrite leaves exactly the new manifest's files: no stale variant, no old report.
    export(tiny_checkpoint, output=out, dim=4, variants=["int8"], overwrite=True)
    assert sorted(files_of(out)) == ["manifest.json", "model_int8.onnx", "tokenizer.json"]
    assert Encoder(out).dim == 4
    fresh = tmp_path / "fresh"
    export(tiny_checkpoint, output=fresh, dim=4, variants=["int8"])
    assert files_of(out) == files_of(fresh)


@pytest.mark.parametrize("overwrite", [False, True])
def test_unrelated_files_are_never_deleted(
    tmp_path: Path, tiny_checkpoint: Path, overwrite: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    export(tiny_checkpoint, output=out, variants=["fp32"])
    (out / "notes.txt").write_text("mine")
    (out / "sub").mkdir()
    before = files_of(out)
    argv = ["--model", str(tiny_checkpoint), "--output", str(out), "--no-validate"]
    assert main([*argv, *(["--overwrite"] if overwrite else [])]) == 1
    err = capsys.readouterr().err
    assert "holds files an sse-onnx export does not write (notes.txt, sub)" in err
    assert "nothing was changed" in err and len(err.strip().splitlines()) == 1
    assert files_of(out) == before


def test_mobile_refuses_a_non_empty_output_before_exporting(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "app.kt").write_text("")
    with pytest.raises(ValueError, match=r"does not write \(app.kt\)"):
        export(tiny_checkpoint, output=out, variants=["int8"], target="mobile")
    assert sorted(p.name for p in out.iterdir()) == ["app.kt"]


def test_out_of_range_dim_names_the_valid_range(tiny_checkpoint: Path) -> None:
    with pytest.raises(ValueError, match=r"dim=99999 is out of range: .*; choose 1 to 16\.$"):
        export(tiny_checkpoint, output=None, dim=99999)


def test_variants_help_says_which_is_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "the first is the default" not in out
    assert "Encoder loads the first unless --default-variant names another" in out
