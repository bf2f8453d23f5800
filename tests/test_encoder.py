"""The runtime API: shapes, options, precision, and errors on bad input or a bad folder."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import run_in_threads
from sse_onnx import Encoder, ModelFormatError, SSEError, similarity
from sse_onnx import tokenizer as tokenizer_module
from sse_onnx.folder import MANIFEST_FILE, VARIANT_FILES, FileEntry


@pytest.fixture(scope="module")
def folder(tiny_checkpoint: Path, exported: Callable[..., Path]) -> Path:
    return exported(tiny_checkpoint, None, ("fp32", "fp16"))


@pytest.fixture(scope="module")
def encoder(folder: Path) -> Encoder:
    return Encoder(folder, threads=1)


def copy_of(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(folder, target)
    return target


def test_shapes(encoder: Encoder) -> None:
    assert encoder.dim == 16
    assert encoder.encode(["hello world"]).shape == (1, 16)
    assert encoder.encode("hello world").shape == (16,)
    assert encoder.encode(("a", "b", "c")).shape == (3, 16)
    empty = encoder.encode([])
    assert empty.shape == (0, 16) and empty.dtype == np.float32


def test_single_string_equals_its_row(encoder: Encoder) -> None:
    np.testing.assert_array_equal(encoder.encode("the cat"), encoder.encode(["the cat"])[0])


@pytest.mark.parametrize("text", ["", "the cat", "dog " * 5000, "\u3000 a\x0bb \x85"])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"truncate_dim": 4},
        {"normalize_embeddings": False},
        {"normalize_embeddings": False, "truncate_dim": 3},
        {"precision": "ubinary"},
        {"batch_size": 1},
    ],
)
def test_single_string_path_equals_the_list_path(
    encoder: Encoder, text: str, options: dict[str, Any]
) -> None:
    """One string takes its own fast path; it gives its row of the list path, bit for bit."""
    np.testing.assert_array_equal(
        encoder.encode(text, **options), encoder.encode([text], **options)[0]
    )


def test_normalisation_and_truncation(encoder: Encoder) -> None:
    texts = ["the cat sat", "static embeddings are fast", ""]
    raw = encoder.encode(texts, normalize_embeddings=False)
    unit = encoder.encode(texts)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
    cut = encoder.encode(texts, truncate_dim=4)
    expected = raw[:, :4] / np.linalg.norm(raw[:, :4], axis=1, keepdims=True)
    np.testing.assert_allclose(cut, expected, atol=1e-6)


def test_precisions_match_sentence_transformers_rules(encoder: Encoder) -> None:
    texts = ["the cat sat", "a dog", "static embeddings", "hello world", "c b a", ""]
    emb = encoder.encode(texts)
    # Restated from sentence-transformers' quantize_embeddings (ranges from the batch itself).
    starts, steps = emb.min(axis=0), (emb.max(axis=0) - emb.min(axis=0)) / 255
    buckets = np.clip(np.floor((emb - starts) / np.where(steps == 0, 1, steps)), 0, 255)
    np.testing.assert_array_equal(
        encoder.encode(texts, precision="uint8"), buckets.astype(np.uint8)
    )
    np.testing.assert_array_equal(
        encoder.encode(texts, precision="int8"), (buckets - 128).astype(np.int8)
    )
    bits = (emb > 0).astype(np.uint8)
    packed = np.array([[int("".join(map(str, row[i : i + 8])), 2) for i in (0, 8)] for row in bits])
    np.testing.assert_array_equal(encoder.encode(texts, precision="ubinary"), packed)
    np.testing.assert_array_equal(
        encoder.encode(texts, precision="binary"), (packed - 128).astype(np.int8)
    )
    assert encoder.encode("the cat", precision="ubinary").shape == (2,)


def test_int8_of_a_single_text_is_refused(encoder: Encoder) -> None:
    with pytest.raises(ValueError, match="single embedding"):
        encoder.encode("the cat", precision="int8")


def test_similarity(encoder: Encoder) -> None:
    a = encoder.encode(["the cat sat on the mat", "static embeddings"])
    scores = similarity(a, a)
    assert scores.shape == (2, 2)
    np.testing.assert_allclose(np.diag(scores), 1.0, atol=1e-6)
    np.testing.assert_allclose(scores[0, 1], a[0] @ a[1], atol=1e-6)
    np.testing.assert_array_equal(encoder.similarity(a, a), scores)  # the method form
    with pytest.raises(ValueError, match="same dim"):
        similarity(np.ones((2, 3)), np.ones((2, 4)))


def test_threads_give_identical_results(folder: Path, encoder: Encoder) -> None:
    texts = ["the cat sat on the mat " * 30, "hello", "dog dog dog"] * 20
    np.testing.assert_array_equal(Encoder(folder, threads=2).encode(texts), encoder.encode(texts))


def test_concurrent_calls_equal_sequential_calls(
    bert_checkpoint: Path, exported: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokenizer_module, "CACHE_CHUNKS", 64)  # the cache fills and empties
    folder = exported(bert_checkpoint, 64)
    rng = np.random.default_rng(5)
    words = ["the", "Cat", "sat", "on", "a", "mat,", "café", "naïve", "東京", "🦠", "[SEP]"]
    words += ["x_y", "don't", "3.14", "e\u0301", "\u3000", "z\x0bz", ""]
    texts = [" ".join(rng.choice(words, size=rng.integers(0, 60))) for _ in range(300)]
    expected = Encoder(folder, threads=1).encode(texts, batch_size=16)
    shared = Encoder(folder, threads=1)
    results: list[object] = [None] * 8

    def work(index: int) -> None:
        results[index] = shared.encode(texts, batch_size=16)

    run_in_threads(work)
    for result in results:
        np.testing.assert_array_equal(result, expected)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("texts", "error", "match"),
    [
        (["ok", None], TypeError, r"texts\[1\] is NoneType"),
        (["ok", "fine", 3], TypeError, r"texts\[2\] is int"),
        ([b"bytes"], TypeError, r"texts\[0\] is bytes"),
        (b"bytes", TypeError, r"texts is bytes; decode it first"),
        (
            ["ok", "a\udcffb"],
            ValueError,
            r"texts\[1\] is not valid Unicode: .* U\+DCFF at",
        ),
        ("\ud800", ValueError, r"texts\[0\] is not valid Unicode: .* U\+D800 at character 0"),
        (42, TypeError, "texts must be a string or a sequence of strings, not int"),
        ((t for t in ["a"]), TypeError, "not generator"),
    ],
)
def test_bad_texts(encoder: Encoder, texts: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        encoder.encode(texts)  # type: ignore[call-overload]


class SeriesLike:
    """What encode may rely on of a pandas Series: ``tolist()`` and ``len()``, no indexing."""

    def __init__(self, values: list[object]) -> None:
        self.values = values

    def __len__(self) -> int:
        return len(self.values)

    def tolist(self) -> list[object]:
        return list(self.values)


ARRAY_TEXTS = ["a cat sat on the mat", "", "東京 🦠 naïve"]


@pytest.mark.parametrize(
    "texts",
    [
        np.array(ARRAY_TEXTS),
        np.array(ARRAY_TEXTS, dtype=object),
        np.array([np.str_(text) for text in ARRAY_TEXTS], dtype=object),
        SeriesLike(list(ARRAY_TEXTS)),
    ],
    ids=["str array", "object array", "object array of np.str_", "series-like"],
)
def test_a_numpy_array_or_a_series_of_strings_is_a_list_of_them(
    encoder: Encoder, texts: object
) -> None:
    got = encoder.encode(texts)  # type: ignore[call-overload]
    np.testing.assert_array_equal(got, encoder.encode(ARRAY_TEXTS))


def test_a_pandas_series_of_strings_is_a_list_of_them(encoder: Encoder) -> None:
    pd = pytest.importorskip("pandas")
    series = pd.Series(ARRAY_TEXTS, index=[7, 3, 5])  # an index that is not 0..n-1
    np.testing.assert_array_equal(encoder.encode(series), encoder.encode(ARRAY_TEXTS))
    with pytest.raises(TypeError, match=r"texts\[1\] is (float|NoneType) .*fillna"):
        encoder.encode(pd.Series(["a", None]))  # a missing value: NaN or None by pandas version


@pytest.mark.parametrize(
    ("texts", "match"),
    [
        (np.array([["a", "b"]]), r"texts is a 2-d numpy array of <U1; .*\.tolist\(\)"),
        (np.array([1.5, 2.0]), r"texts is a 1-d numpy array of float64; .*\.tolist\(\)"),
        (np.array("a"), r"texts is a 0-d numpy array of <U1; .*\.tolist\(\)"),
        (np.array(["a", 3], dtype=object), r"texts\[1\] is int \(3\), not str; .*\.tolist\(\)"),
        (SeriesLike(["a", 3]), r"texts\[1\] is int \(3\), not str; .*\.tolist\(\)"),
        (SeriesLike([["a"]]), r"texts\[0\] is list"),
        ({"a", "b"}, r"not set; .*\.tolist\(\)"),
    ],
)
def test_other_array_likes_say_how_to_make_a_list(
    encoder: Encoder, texts: object, match: str
) -> None:
    with pytest.raises(TypeError, match=match):
        encoder.encode(texts)  # type: ignore[call-overload]


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"truncate_dim": 0}, ValueError, "truncate_dim=0 must be at least 1"),
        ({"truncate_dim": 17}, ValueError, "truncate_dim=17 is larger than the model's 16"),
        ({"truncate_dim": 2.5}, TypeError, "truncate_dim must be an int"),
        ({"batch_size": 0}, ValueError, "batch_size=0 must be at least 1"),
        ({"precision": "float16"}, ValueError, "precision='float16' is not supported"),
    ],
)
def test_bad_options(encoder: Encoder, options: dict[str, object], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        encoder.encode(["the cat"], **options)  # type: ignore[arg-type]


def test_variant_choice(folder: Path) -> None:
    assert Encoder(folder).variant == "fp32"  # the folder's default: the first one exported
    assert Encoder(folder, variant="fp32").variant == "fp32"
    with pytest.raises(ValueError, match=r"variant='int3' is not in .* holds \['fp16', 'fp32'\]"):
        Encoder(folder, variant="int3")
    with pytest.raises(TypeError, match="variant must be a str or None, not list"):
        Encoder(folder, variant=["fp32"])  # type: ignore[arg-type]


def test_a_failure_in_a_helper_thread_reaches_the_caller(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sse_onnx import encoder as encoder_module

    monkeypatch.setattr(encoder_module, "BLOCK_TEXTS", 4)
    monkeypatch.setattr(encoder_module, "PARALLEL_TEXTS", 8)
    texts = ["the cat"] * 40
    texts[37] = "a\udcffb"
    with pytest.raises(ValueError, match=r"texts\[37\] is not valid Unicode"):
        Encoder(folder, threads=2).encode(texts)


def test_bad_texts_in_a_list_of_documents(encoder: Encoder) -> None:
    """Lists of long texts are tokenized in the chunk table: the same errors as short lists."""
    texts = ["the cat sat on the mat " * 20] * 20  # 460 characters each
    texts[13] = texts[13] + "a\udcffb"
    with pytest.raises(ValueError, match=r"texts\[13\] is not valid Unicode: .* U\+DCFF at"):
        encoder.encode(texts)
    texts[13] = 3  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"texts\[13\] is int"):
        encoder.encode(texts)


def test_default_threads_are_the_usable_cores(folder: Path) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert Encoder(folder).threads == cores
    assert Encoder(folder, threads=3).threads == 3


@pytest.mark.parametrize(
    ("threads", "error"), [(0, ValueError), (-1, ValueError), (2**31, ValueError), ("2", TypeError)]
)
def test_bad_threads(folder: Path, threads: object, error: type) -> None:
    with pytest.raises(error, match="threads"):
        Encoder(folder, threads=threads)  # type: ignore[arg-type]


def test_missing_folder_and_manifest(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="does not exist"):
        Encoder(tmp_path / "nowhere")
    with pytest.raises(ModelFormatError, match=r"manifest.json is missing"):
        Encoder(tmp_path)
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(ModelFormatError, match=r"model.onnx is a file, not a model folder"):
        Encoder(tmp_path / "model.onnx")


@pytest.mark.parametrize("name", [VARIANT_FILES["fp32"], "tokenizer.json"])
def test_missing_file(folder: Path, tmp_path: Path, name: str) -> None:
    broken = copy_of(folder, tmp_path)
    (broken / name).unlink()
    with pytest.raises(ModelFormatError, match=f"{name} is missing"):
        Encoder(broken, variant="fp32")


def test_truncated_model(folder: Path, tmp_path: Path) -> None:
    broken = copy_of(folder, tmp_path)
    model = broken / VARIANT_FILES["fp32"]
    model.write_bytes(model.read_bytes()[:1000])
    with pytest.raises(ModelFormatError, match=r"model.onnx has 1000 bytes but the manifest"):
        Encoder(broken, variant="fp32")


def test_damaged_model_of_the_recorded_size(folder: Path, tmp_path: Path) -> None:
    # Changed table bytes still load and would give other vectors: the checksum catches them.
    broken = copy_of(folder, tmp_path)
    model = broken / VARIANT_FILES["fp32"]
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    with pytest.raises(ModelFormatError, match=r"model.onnx does not match the sha256 recorded"):
        Encoder(broken, variant="fp32")


def recorded(folder: Path, name: str, content: bytes) -> None:
    """Write ``content`` as ``name`` and record its size and sha256 in the manifest."""
    (folder / name).write_bytes(content)
    data = json.loads((folder / MANIFEST_FILE).read_text())
    entries = [data["tokenizer"], *data["variants"].values()]
    next(entry for entry in entries if entry["file"] == name).update(
        asdict(FileEntry.of(folder, name))
    )
    (folder / MANIFEST_FILE).write_text(json.dumps(data))


def test_unloadable_model_named_in_the_manifest(folder: Path, tmp_path: Path) -> None:
    broken = copy_of(folder, tmp_path)
    recorded(broken, VARIANT_FILES["fp32"], b"\xff" * 1000)
    with pytest.raises(ModelFormatError, match=r"model.onnx is not a loadable ONNX model"):
        Encoder(broken, variant="fp32")


def test_unreadable_tokenizer_named_in_the_manifest(folder: Path, tmp_path: Path) -> None:
    broken = copy_of(folder, tmp_path)
    recorded(broken, "tokenizer.json", b"{" + b" " * 99)
    with pytest.raises(ModelFormatError, match=r"tokenizer\.json is not a readable"):
        Encoder(broken)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        ({"schema_version": 99}, r"schema version 99, but this sse-onnx reads versions \[1, 2\]"),
        ({"format": "other"}, "is not an sse-onnx manifest"),
        ({"variants": None}, "incomplete or malformed"),
        ({"default_variant": "int8"}, "default_variant 'int8' is not one of"),
        ({"dim": "16"}, "dim is '16', not a non-negative integer"),
        ({"dim": 8}, r"records dim=8 but model\.onnx gives 16-dimensional sentence_embedding"),
        ({"vocab_size": -1}, "vocab_size is -1, not a non-negative integer"),
        ({"tokenizer": {"file": "tokenizer.json", "bytes": "9", "sha256": "0" * 64}}, "bytes of"),
        ({"tokenizer": {"file": "tokenizer.json", "bytes": 9, "sha256": "0"}}, "not 64 hex"),
    ],
)
def test_bad_manifest(folder: Path, tmp_path: Path, edit: dict[str, object], match: str) -> None:
    broken = copy_of(folder, tmp_path)
    data = json.loads((broken / MANIFEST_FILE).read_text())
    data.update(edit)
    (broken / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelFormatError, match=match):
        Encoder(broken)


def test_manifest_not_json(folder: Path, tmp_path: Path) -> None:
    broken = copy_of(folder, tmp_path)
    (broken / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        Encoder(broken)


def test_errors_share_one_base(folder: Path, tmp_path: Path) -> None:
    with pytest.raises(SSEError, match="does not exist"):
        Encoder(tmp_path / "nowhere")
    broken = copy_of(folder, tmp_path)
    (broken / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):  # callers catching ValueError see it
        Encoder(broken)


def test_progress_bar_is_optional(encoder: Encoder, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tqdm")
    encoder.encode(["a", "b"], show_progress_bar=True)
    assert "Encoding" in capsys.readouterr().err
    encoder.encode(["a", "b"], show_progress_bar=False)
    assert capsys.readouterr().err == ""
