"""The mobile bundle: .ort files against the .onnx files they came from, and the bundle's files."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
from onnxruntime.tools.ort_format_model import create_config_from_models
from onnxruntime.tools.reduced_build_config_parser import parse_config
from tokenizers import Tokenizer, models, pre_tokenizers

from conftest import BERT_TOKENIZER, EVAL_DATA, l2, numpy_sse, sse_arrays, write_checkpoint
from sse_export import export, mobile
from sse_export.adversarial import adversarial_texts
from sse_export.cli import main
from sse_export.integration import integration_guide
from sse_onnx import Encoder, ParityError
from sse_onnx import folder as fmt

Ids = npt.NDArray[np.int64]


@pytest.fixture(scope="module")
def onnx_and_bundle(
    bert_checkpoint: Path, exported: Callable[..., Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """An export of every mobile variant (real BERT tokenizer, 16 dims) and its bundle."""
    source = exported(bert_checkpoint, 16, mobile.MOBILE_VARIANTS)
    bundle = tmp_path_factory.mktemp("bundle")
    mobile.write_bundle(source, bundle)
    return source, bundle


def real_texts() -> list[str]:
    """The adversarial set (but its 20,000-token text) and the SciFact queries if present."""
    texts = [text for name, text in adversarial_texts() if name != "long text"]
    queries = EVAL_DATA / "retrieval" / "scifact" / "queries.jsonl"
    if queries.is_file():
        with queries.open(encoding="utf-8") as handle:
            texts += [json.loads(line)["text"] for line in handle]
    return texts


def padded_ids(texts: list[str]) -> dict[str, Ids]:
    tokenizer = Tokenizer.from_file(str(BERT_TOKENIZER))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    rows = [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    ids = np.zeros((len(rows), max(map(len, rows))), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = row, 1
    return {fmt.INPUT_IDS: ids, fmt.ATTENTION_MASK: mask}


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def test_every_ort_file_equals_its_onnx(onnx_and_bundle: tuple[Path, Path]) -> None:
    source, bundle = onnx_and_bundle
    feeds = padded_ids(real_texts())
    manifest = fmt.read_manifest(bundle)
    assert sorted(manifest.variants) == sorted(mobile.MOBILE_VARIANTS)
    for variant, entry in manifest.variants.items():
        ort_path = bundle / entry.file
        assert entry.file == fmt.ORT_VARIANT_FILES[variant]
        assert ort_path.read_bytes()[4:8] == b"ORTM", "not a flatbuffer in onnxruntime's format"
        converted, reference = session(ort_path), session(source / fmt.VARIANT_FILES[variant])
        names = [o.name for o in reference.get_outputs()]
        assert [o.name for o in converted.get_outputs()] == names
        for name, a, b in zip(
            names, reference.run(names, feeds), converted.run(names, feeds), strict=True
        ):
            # Exact: the converter saves the very graph onnxruntime runs for the .onnx file.
            np.testing.assert_array_equal(b, a, err_msg=f"{variant} {name}")


def test_encoder_loads_the_bundle(onnx_and_bundle: tuple[Path, Path]) -> None:
    source, bundle = onnx_and_bundle
    texts = [text for _, text in adversarial_texts()]
    for variant in ("int8", "int4"):
        got = Encoder(bundle, variant=variant, threads=1).encode(texts)
        expected = Encoder(source, variant=variant, threads=1).encode(texts)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_operator_config_is_standard_and_complete(
    onnx_and_bundle: tuple[Path, Path], tmp_path: Path
) -> None:
    _, bundle = onnx_and_bundle
    path = bundle / fmt.REQUIRED_OPERATORS_FILE
    required, _ = parse_config(str(path))  # onnxruntime's own reader of the file
    assert set(required) == {"ai.onnx"}
    # The operators onnxruntime's tools read back from every .ort file of the bundle.
    create_config_from_models(sorted(bundle.glob("*.ort")), tmp_path / "config", False)
    assert parse_config(str(tmp_path / "config"))[0] == required
    operators = set().union(*required["ai.onnx"].values())
    assert {"Gather", "Tanh", "DequantizeLinear", "BitShift"} <= operators
    assert str(bundle) not in path.read_text(encoding="utf-8")


def test_tokenizer_files(onnx_and_bundle: tuple[Path, Path]) -> None:
    _, bundle = onnx_and_bundle
    tokenizer = Tokenizer.from_file(str(bundle / fmt.TOKENIZER_FILE))
    lines = (bundle / fmt.VOCAB_FILE).read_text(encoding="utf-8").split("\n")
    assert lines[-1] == "" and len(lines) - 1 == tokenizer.get_vocab_size() == 30522
    assert all(tokenizer.id_to_token(i) == token for i, token in enumerate(lines[:-1]))
    config = json.loads((bundle / fmt.TOKENIZER_CONFIG_FILE).read_text(encoding="utf-8"))
    assert config["tokenizer_class"] == "BertTokenizer" and config["do_lower_case"] is True
    encoding = tokenizer.encode("[CLS] hello " * 300)  # defaults: nothing added, nothing cut
    assert len(encoding.ids) == 600 and encoding.ids[0] == 101


def test_cli_writes_a_bundle_with_a_parity_file(
    tmp_path: Path,
    tiny_checkpoint: Path,
    tiny_tensors: dict[str, npt.NDArray[np.float32]],
    tiny_tokenizer: Path,
) -> None:
    out = tmp_path / "app"
    argv = ["--model", str(tiny_checkpoint), "--output", str(out), "--variants", "fp32"]
    assert main([*argv, "--target", "mobile", "--no-report", "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            fmt.MANIFEST_FILE,
            fmt.ORT_VARIANT_FILES["fp32"],
            fmt.REQUIRED_OPERATORS_FILE,
            fmt.TOKENIZER_FILE,
            fmt.TOKENIZER_CONFIG_FILE,
            fmt.VOCAB_FILE,
            fmt.PARITY_FILE,
            fmt.INTEGRATION_FILE,
        ]
    )
    records = [json.loads(line) for line in (out / fmt.PARITY_FILE).read_text().splitlines()]
    texts = [record["text"] for record in records]
    assert texts == [text for _, text in adversarial_texts()]
    hf = Tokenizer.from_file(str(tiny_tokenizer))
    assert [r[fmt.INPUT_IDS] for r in records] == [
        hf.encode(t, add_special_tokens=False).ids for t in texts
    ]
    expected = l2(numpy_sse(tiny_tensors, tiny_tokenizer, texts))
    got = np.array([r[fmt.SENTENCE_EMBEDDING] for r in records])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    guide = (out / fmt.INTEGRATION_FILE).read_text(encoding="utf-8")
    for needle in (
        '"addSpecialTokens" to "false"',
        '"truncation" to "false"',
        "addSpecialTokens: false",
        f"$dir/{fmt.ORT_VARIANT_FILES['fp32']}",
        f"onnxruntime {ort.__version__}",
        "no truncation",
    ):
        assert needle in guide, needle


def test_int4_block_is_refused_before_exporting(tmp_path: Path, tiny_checkpoint: Path) -> None:
    with pytest.raises(ValueError, match=r"GatherBlockQuantized.*for 4 bits choose int4"):
        export(
            tiny_checkpoint, output=tmp_path / "b", variants=["int8", "int4_block"], target="mobile"
        )
    assert not (tmp_path / "b").exists()
    with pytest.raises(ValueError, match=r"target='wasm' is not one of \['onnx', 'mobile', 'web"):
        export(tiny_checkpoint, output=tmp_path / "b", target="wasm")


def test_non_wordpiece_tokenizer_is_refused(tmp_path: Path) -> None:
    vocab = {"[UNK]": 0, "[PAD]": 1, "hello": 2, "world": 3}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    checkpoint = write_checkpoint(
        tmp_path / "ckpt", tmp_path / "tokenizer.json", sse_arrays(len(vocab), 8, seed=3)
    )
    with pytest.raises(ValueError, match="is a WordLevel tokenizer; a mobile bundle is made for"):
        export(checkpoint, output=tmp_path / "b", report=False, target="mobile")


def test_a_differing_ort_file_leaves_no_manifest(
    tmp_path: Path,
    tiny_checkpoint: Path,
    exported: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mobile, "ORT_TOLERANCE", -1.0)  # any difference, even 0, is too much
    with pytest.raises(ParityError, match=r"model.ort differs from model.onnx by 0.00e\+00"):
        mobile.write_bundle(exported(tiny_checkpoint), tmp_path)
    assert not (tmp_path / fmt.MANIFEST_FILE).exists()


def test_guide_states_a_family_truncation(onnx_and_bundle: tuple[Path, Path]) -> None:
    manifest = fmt.read_manifest(onnx_and_bundle[1])
    plain = integration_guide(manifest, onnxruntime_version="1.22.0")
    assert "no truncation: a text of any length is embedded whole" in plain
    assert "converted by onnxruntime 1.22.0" in plain
    cut = replace(manifest, pooling=fmt.Pooling(max_chars=2048, max_tokens=512))
    guide = integration_guide(cut, onnxruntime_version="1.22.0")
    assert "cut the text to its first 2048 characters before and keep its first 512 ids" in guide
    assert "no truncation" not in guide
