"""Checkpoint families: sentence-transformers StaticEmbedding and Model2Vec folders.

Folders are built here in each family's layout (never downloaded), exported, and checked
against numpy restatements of each library's semantics written here: ids without special
tokens, the mean, [UNK] kept (sentence-transformers) or dropped (Model2Vec), truncation,
normalisation; in every graph variant and at a cut width. Where the libraries themselves are
installed, the exports are also compared with them.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
import pytest
from safetensors.numpy import save_file
from tokenizers import Tokenizer, models, pre_tokenizers

from conftest import BERT_TOKENIZER, TINY_VOCAB, l2, stored_as, write_tiny_tokenizer
from sse_export import load_checkpoint
from sse_export.adversarial import adversarial_texts
from sse_export.cli import main
from sse_export.families import model2vec_pooling
from sse_export.reference import SSE, reference_ids
from sse_onnx import CheckpointError, Encoder, ModelFormatError
from sse_onnx.folder import MANIFEST_FILE, Pooling, read_manifest

Array = npt.NDArray[Any]

ST_MODULE = "sentence_transformers.models.StaticEmbedding"
NORMALIZE_MODULE = "sentence_transformers.models.Normalize"
VARIANTS = ("fp32", "fp16", "int8", "int4", "int4_block")
CAT, DOG, UNK = TINY_VOCAB.index("cat"), TINY_VOCAB.index("dog"), TINY_VOCAB.index("[UNK]")
TEXTS = [
    *(text for _, text in adversarial_texts()),
    "the cat sat on the mat",
    "cat zebra",
    "zebra giraffe",
    "static embeddings are fast! a b c zebra",
    "東京 caf naive ?",
    "hello world " * 300,
]
#: Largest abs diff per text: float32 sums drift with length (bounds as the exporter's own).
TOLERANCE = np.array(
    [1e-6 if n < 100 else 1e-5 if n < 1000 else 1e-4 for n in map(len, map(str.split, TEXTS))]
)


def assert_close(got: Array, expected: Array, message: str = "") -> None:
    """Each row within its text's tolerance."""
    diff = np.abs(np.asarray(got, dtype=np.float64) - expected).max(axis=1, initial=0.0)
    bad = np.flatnonzero(diff > TOLERANCE)
    assert not bad.size, f"{message}: texts {bad.tolist()} differ by {diff[bad].tolist()}"


def write_static_embedding(
    folder: Path,
    tokenizer: Path,
    table: Array,
    *,
    nested: bool = True,
    normalize: bool = False,
    truncation: dict[str, Any] | None = None,
    extra_modules: Sequence[str] = (),
) -> Path:
    """A sentence-transformers folder: modules.json and the StaticEmbedding module's files."""
    module = folder / "0_StaticEmbedding" if nested else folder
    module.mkdir(parents=True, exist_ok=True)
    save_file({"embedding.weight": table}, str(module / "model.safetensors"))
    config = json.loads(tokenizer.read_text(encoding="utf-8"))
    config["truncation"] = truncation
    (module / "tokenizer.json").write_text(json.dumps(config), encoding="utf-8")
    kinds = [ST_MODULE, *([NORMALIZE_MODULE] if normalize else []), *extra_modules]
    paths = ["0_StaticEmbedding" if nested else "", *(f"{i}_module" for i in range(1, 9))]
    modules = [
        {"idx": i, "name": str(i), "path": path, "type": kind}
        for i, (path, kind) in enumerate(zip(paths, kinds, strict=False))
    ]
    (folder / "modules.json").write_text(json.dumps(modules), encoding="utf-8")
    (folder / "config_sentence_transformers.json").write_text('{"similarity_fn_name": "cosine"}')
    return folder


def write_model2vec(
    folder: Path, tokenizer: Path, tensors: dict[str, Array], config: dict[str, Any] | None
) -> Path:
    """A Model2Vec folder: model.safetensors, tokenizer.json and (unless None) config.json."""
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / "model.safetensors"))
    shutil.copy(tokenizer, folder / "tokenizer.json")
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


def plain_ids(tokenizer: Path) -> Callable[[str], list[int]]:
    tok = Tokenizer.from_file(str(tokenizer))
    tok.no_padding()
    tok.no_truncation()
    return lambda text: tok.encode(text, add_special_tokens=False).ids


def numpy_static(
    table: Array,
    tokenizer: Path,
    texts: Sequence[str],
    *,
    max_tokens: int | None = None,
    normalize: bool = False,
) -> npt.NDArray[np.float64]:
    """sentence-transformers StaticEmbedding: ids without special tokens (the first
    ``max_tokens`` where tokenizer.json truncates), mean with [UNK], zeros for no token, and a
    Normalize module if ``normalize``."""
    ids_of, table = plain_ids(tokenizer), table.astype(np.float64)
    rows = []
    for text in texts:
        ids = ids_of(text)[:max_tokens]
        rows.append(table[ids].mean(axis=0) if ids else np.zeros(table.shape[1]))
    out = np.array(rows)
    return l2(out) if normalize else out


def numpy_model2vec(
    tensors: dict[str, Array],
    tokenizer: Path,
    config: dict[str, Any],
    texts: Sequence[str],
    dim: int | None = None,
) -> npt.NDArray[np.float64]:
    """model2vec 0.10 ``StaticModel.encode``: text cut to max_length * median token length
    characters, ids without special tokens cut to max_length (512 unless the config says),
    the unknown token dropped, mean of ``embeddings[mapping[id]] * weights[id]`` (zeros for no
    token), normalised if the config says so; ``dim`` keeps the first columns, as
    ``from_pretrained(dimensionality=dim)``."""
    spec = json.loads(tokenizer.read_text(encoding="utf-8"))["model"]
    vocab = Tokenizer.from_file(str(tokenizer)).get_vocab()
    unk = vocab.get(spec["unk_token"]) if "unk_token" in spec else spec.get("unk_id")
    median = int(np.median([len(token) for token in vocab]))
    max_length = config.get("max_length", 512)
    embeddings = tensors["embeddings"].astype(np.float64)[:, :dim]
    mapping = tensors.get("mapping", np.arange(len(vocab)))
    weights = tensors.get("weights", np.ones(len(vocab))).astype(np.float64)
    ids_of, rows = plain_ids(tokenizer), []
    for text in texts:
        if max_length is not None:
            text = text[: max_length * median]
        ids = [i for i in ids_of(text)[:max_length] if i != unk]
        vectors = embeddings[mapping[ids]] * weights[ids, None]
        rows.append(vectors.mean(axis=0) if ids else np.zeros(embeddings.shape[1]))
    out = np.array(rows)
    return l2(out) if config.get("normalize", False) else out


@dataclass(frozen=True)
class Case:
    """A checkpoint built in one layout, its numpy reference, and what its manifest records."""

    folder: Path
    pooling: Pooling
    family: str
    reference: Callable[[Array | None, Sequence[str], int | None], npt.NDArray[np.float64]]
    table: Array = field(repr=False)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Case]:
    """Four checkpoints: sentence-transformers and Model2Vec, two layouts or configs each."""
    root = tmp_path_factory.mktemp("families")
    tiny = write_tiny_tokenizer(root / "tokenizer.json")
    tiny_median = int(np.median([len(token) for token in TINY_VOCAB]))
    rng = np.random.default_rng(8)
    table = rng.normal(0, 1, (len(TINY_VOCAB), 40)).astype(np.float32)
    out: dict[str, Case] = {}

    def static(stored: Array | None, texts: Sequence[str], dim: int | None, **kw: Any) -> Any:
        source = table[:, :dim] if stored is None else stored
        return numpy_static(source, tiny, texts, **kw)

    folder = write_static_embedding(root / "st-nested", tiny, table, normalize=True)
    out["st-nested-normalize"] = Case(
        folder,
        Pooling(head="identity", normalize=True),
        "sentence-transformers",
        lambda s, t, d: static(s, t, d, normalize=True),
        table,
    )
    truncation = {"direction": "Right", "max_length": 5, "strategy": "LongestFirst", "stride": 0}
    folder = write_static_embedding(
        root / "st-root", tiny, table, nested=False, truncation=truncation
    )
    out["st-root-truncating"] = Case(
        folder,
        Pooling(head="identity", max_tokens=5),
        "sentence-transformers",
        lambda s, t, d: static(s, t, d, max_tokens=5),
        table,
    )

    def model2vec_case(name: str, tensors: dict[str, Array], config: dict[str, Any]) -> None:
        folder = write_model2vec(root / name, tiny, tensors, config)
        folded = tensors["embeddings"][tensors.get("mapping", np.arange(len(TINY_VOCAB)))]
        folded = folded * tensors.get("weights", np.ones(len(TINY_VOCAB)))[:, None]
        max_length = config.get("max_length", 512)

        def reference(stored: Array | None, texts: Sequence[str], dim: int | None) -> Any:
            if stored is None:  # the library's own lookup, mapping and weights unfolded
                return numpy_model2vec(tensors, tiny, config, texts, dim)
            return numpy_model2vec({"embeddings": stored}, tiny, config, texts)

        out[name] = Case(
            folder,
            Pooling(
                head="identity",
                skip_token_ids=(UNK,),
                max_chars=None if max_length is None else max_length * tiny_median,
                max_tokens=max_length,
                normalize=config.get("normalize", False),
            ),
            "model2vec",
            reference,
            folded.astype(np.float32),
        )

    model2vec_case("m2v-defaults", {"embeddings": table}, {})
    model2vec_case(
        "m2v-quantized-normalize",
        {
            "embeddings": rng.normal(0, 1, (7, 40)).astype(np.float32),
            "mapping": rng.integers(0, 7, len(TINY_VOCAB)),
            "weights": rng.uniform(0.2, 2.0, len(TINY_VOCAB)).astype(np.float32),
        },
        {"normalize": True, "max_length": 6},
    )
    return out


CASE_NAMES = [
    "st-nested-normalize",
    "st-root-truncating",
    "m2v-defaults",
    "m2v-quantized-normalize",
]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_family_is_detected_and_recorded(name: str, cases: dict[str, Case]) -> None:
    case = cases[name]
    checkpoint = load_checkpoint(case.folder)
    assert (checkpoint.family, checkpoint.pooling) == (case.family, case.pooling)
    assert checkpoint.dyt() is None
    np.testing.assert_allclose(checkpoint.table, case.table, rtol=1e-6)


@pytest.mark.parametrize("dim", [None, 24])
@pytest.mark.parametrize("name", CASE_NAMES)
def test_every_variant_matches_the_family_reference(
    name: str, dim: int | None, cases: dict[str, Case], exported: Callable[..., Path]
) -> None:
    case = cases[name]
    folder = exported(case.folder, dim, VARIANTS)
    manifest = read_manifest(folder)
    assert (manifest.family, manifest.pooling, manifest.dim) == (
        case.family,
        case.pooling,
        dim or 40,
    )
    exact = case.reference(None, TEXTS, dim)
    checkpoint = load_checkpoint(case.folder)
    torch_out = SSE.from_checkpoint(checkpoint, dim).embed(reference_ids(checkpoint, TEXTS))
    assert_close(torch_out, exact, "torch")
    for variant in VARIANTS:
        encoder = Encoder(folder, variant=variant)
        stored = stored_as(variant, case.table[:, :dim])
        expected = case.reference(stored, TEXTS, None)
        raw = encoder.encode(TEXTS, normalize_embeddings=False)
        assert_close(raw, expected, variant)
        assert_close(encoder.encode(TEXTS), l2(expected), variant)
        single = np.array([encoder.encode(text, normalize_embeddings=False) for text in TEXTS])
        assert_close(single, raw, variant)
        if variant == "fp32":
            assert_close(raw, exact, "fp32 vs the library")


@pytest.mark.parametrize("name", ["st-nested-normalize", "m2v-quantized-normalize"])
def test_dynamic_variants(name: str, cases: dict[str, Case], exported: Callable[..., Path]) -> None:
    pytest.importorskip("optimum.onnxruntime", reason="dynamic variants need optimum[onnxruntime]")
    from sse_export.dynamic import PRESETS

    case = cases[name]
    # The export itself checks each variant against the reference on its stored table.
    folder = exported(case.folder, None, tuple(PRESETS))
    exact = l2(case.reference(None, TEXTS, None))
    nonzero = np.linalg.norm(exact, axis=1) > 0
    for variant in PRESETS:
        got = Encoder(folder, variant=variant).encode(TEXTS)
        assert (got * exact).sum(axis=1)[nonzero].min() > 0.99, variant


def test_unknown_token_kept_by_sentence_transformers_dropped_by_model2vec(
    cases: dict[str, Case], exported: Callable[..., Path]
) -> None:
    table = cases["st-root-truncating"].table.astype(np.float64)
    static = Encoder(exported(cases["st-root-truncating"].folder))
    model2vec = Encoder(exported(cases["m2v-defaults"].folder))
    raw = {"normalize_embeddings": False}
    np.testing.assert_allclose(
        static.encode("cat zebra", **raw), (table[CAT] + table[UNK]) / 2, atol=1e-6
    )
    np.testing.assert_allclose(model2vec.encode("cat zebra", **raw), table[CAT], atol=1e-6)
    # All tokens dropped: model2vec returns zeros (normalised too); so does an empty text.
    for texts in (["zebra 🦠", "", "   "], "zebra"):
        for normalize in (False, True):
            got = model2vec.encode(texts, normalize_embeddings=normalize)
            assert not np.isnan(got).any() and not got.any()


def test_model2vec_cuts_characters_then_tokens(
    tmp_path: Path, tiny_tokenizer: Path, exported: Callable[..., Path]
) -> None:
    table = np.random.default_rng(9).normal(0, 1, (len(TINY_VOCAB), 8)).astype(np.float32)
    assert int(np.median([len(token) for token in TINY_VOCAB])) == 3
    # 300 cats then 300 dogs, 4 characters each.
    text = "cat " * 300 + "dog " * 300
    expected = {
        # 512 * 3 = 1536 characters: 300 cats and 84 dogs, fewer than 512 tokens.
        "{}": (300 * table[CAT] + 84 * table[DOG]) / 384,
        # 1000 * 3 = 3000 characters hold all 600 tokens; 1000 tokens cut none.
        '{"max_length": 1000}': (table[CAT] + table[DOG]) / 2,
        '{"max_length": null}': (table[CAT] + table[DOG]) / 2,
        # 200 * 3 = 600 characters: 150 cats; 200 tokens cut none of those.
        '{"max_length": 200}': table[CAT],
    }
    for i, (config, vector) in enumerate(expected.items()):
        folder = write_model2vec(
            tmp_path / str(i), tiny_tokenizer, {"embeddings": table}, json.loads(config)
        )
        got = Encoder(exported(folder)).encode([text, "cat"], normalize_embeddings=False)
        np.testing.assert_allclose(got[0], vector, rtol=0, atol=1e-6, err_msg=config)


def test_model2vec_int8_table_is_averaged_as_the_integers_it_holds(
    tmp_path: Path, tiny_tokenizer: Path, exported: Callable[..., Path]
) -> None:
    # model2vec stores no scale with an int8 table; normalised, the scale would not matter.
    table = np.random.default_rng(12).integers(-127, 128, (len(TINY_VOCAB), 8)).astype(np.int8)
    folder = write_model2vec(tmp_path / "int8", tiny_tokenizer, {"embeddings": table}, {})
    got = Encoder(exported(folder)).encode("cat dog zebra", normalize_embeddings=False)
    expected = (table[CAT].astype(np.float64) + table[DOG]) / 2
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_model2vec_long_texts_in_chunks_leave_out_dropped_tokens(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    tiny_tokenizer: Path,
    exported: Callable[..., Path],
) -> None:
    from sse_onnx import encoder as encoder_module

    table = np.random.default_rng(10).normal(0, 1, (len(TINY_VOCAB), 8)).astype(np.float32)
    config = {"max_length": None}
    folder = write_model2vec(tmp_path / "m2v", tiny_tokenizer, {"embeddings": table}, config)
    encoder = Encoder(exported(folder))
    monkeypatch.setattr(encoder_module, "CHUNK_TOKENS", 4)
    monkeypatch.setattr(encoder_module, "TOKEN_BUDGET", 12)
    texts = ["cat zebra dog zebra zebra the mat " * k for k in (1, 3, 10)] + ["zebra " * 9, "a"]
    expected = numpy_model2vec({"embeddings": table}, tiny_tokenizer, config, texts)
    got = encoder.encode(texts, batch_size=2, normalize_embeddings=False)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    single = encoder.encode(texts[1], normalize_embeddings=False)
    np.testing.assert_allclose(single, expected[1], rtol=0, atol=1e-6)


def test_family_normalisation_comes_before_truncate_dim(
    cases: dict[str, Case], exported: Callable[..., Path]
) -> None:
    # sentence-transformers: Normalize is a module, truncate_dim cuts its output.
    case = cases["st-nested-normalize"]
    encoder = Encoder(exported(case.folder))
    unit = case.reference(None, TEXTS, None)
    got = encoder.encode(TEXTS, normalize_embeddings=False, truncate_dim=8)
    assert_close(got, unit[:, :8])
    assert_close(encoder.encode(TEXTS, truncate_dim=8), l2(unit[:, :8]))
    # Without the family's normalisation, normalize_embeddings=False gives the raw mean.
    plain = Encoder(exported(cases["m2v-defaults"].folder)).encode(
        TEXTS, normalize_embeddings=False
    )
    norms = np.linalg.norm(plain, axis=1)
    assert (np.abs(norms[norms > 0] - 1) > 1e-3).all()


def test_graph_alone_leaves_out_the_skipped_ids(
    cases: dict[str, Case], exported: Callable[..., Path]
) -> None:
    case = cases["m2v-defaults"]
    folder = exported(case.folder)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    assert {o.name for o in session.get_outputs()} == {"sentence_embedding", "token_sum"}
    ids = np.array([[CAT, UNK, DOG, 0], [UNK, UNK, 0, 0]], dtype=np.int64)
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=np.int64)
    embedding, token_sum = session.run(None, {"input_ids": ids, "attention_mask": mask})
    np.testing.assert_allclose(embedding[0], (case.table[CAT] + case.table[DOG]) / 2, atol=1e-6)
    np.testing.assert_allclose(token_sum[0], case.table[CAT] + case.table[DOG], atol=1e-6)
    assert not embedding[1].any() and not token_sum[1].any()


def test_unknown_token_id_is_found_as_model2vec_finds_it(tmp_path: Path) -> None:
    vocab = {"<pad>": 0, "hello": 1, "world": 2, "<unk>": 3}
    tokenizers = {
        "wordlevel": (Tokenizer(models.WordLevel(vocab, unk_token="<unk>")), (3,)),
        "unigram": (
            Tokenizer(models.Unigram([(t, -1.0) for t in vocab], unk_id=3, byte_fallback=False)),
            (3,),
        ),
        "bpe without unk": (Tokenizer(models.BPE(vocab, [])), ()),
    }
    for name, (tokenizer, skip) in tokenizers.items():
        tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
        folder = tmp_path / name
        folder.mkdir()
        tokenizer.save(str(folder / "tokenizer.json"))
        (folder / "config.json").write_text("{}")
        pooling = model2vec_pooling(folder, folder / "tokenizer.json")
        assert pooling.skip_token_ids == skip, name
        # Median token length: sorted lengths 5, 5, 5, 5 -> 5; 512 tokens by default.
        assert (pooling.max_chars, pooling.max_tokens) == (5 * 512, 512), name


def broken(kind: str, tmp_path: Path, tokenizer: Path) -> Path:
    folder = tmp_path / "broken"
    vocab, table = len(TINY_VOCAB), np.ones((len(TINY_VOCAB), 4), dtype=np.float32)
    if kind == "no family":
        return write_model2vec(folder, tokenizer, {"vectors": table}, {})
    if kind == "model2vec extra key":
        return write_model2vec(folder, tokenizer, {"embeddings": table, "foo": table}, {})
    if kind == "static extra key":
        return write_model2vec(folder, tokenizer, {"embedding.weight": table, "other": table}, {})
    if kind == "no config":
        return write_model2vec(folder, tokenizer, {"embeddings": table}, None)
    if kind == "bad config":
        return write_model2vec(folder, tokenizer, {"embeddings": table}, {"normalize": "yes"})
    if kind == "vectors for another vocabulary":
        return write_model2vec(folder, tokenizer, {"embeddings": table[:30]}, {})
    if kind == "mapping shape":
        mapping = np.zeros(5, dtype=np.int64)
        return write_model2vec(folder, tokenizer, {"embeddings": table, "mapping": mapping}, {})
    if kind == "mapping range":
        mapping = np.full(vocab, 99, dtype=np.int64)
        return write_model2vec(folder, tokenizer, {"embeddings": table, "mapping": mapping}, {})
    if kind == "dense module":
        return write_static_embedding(folder, tokenizer, table, extra_modules=["models.Dense"])
    truncation = {"direction": "Left", "max_length": 5, "strategy": "LongestFirst", "stride": 0}
    return write_static_embedding(folder, tokenizer, table, truncation=truncation)


BROKEN = [
    ("no family", r"keys \['vectors'\], which fit no supported family: SSE"),
    ("model2vec extra key", r"unexpected keys \['foo'\]; the model.safetensors of a Model2Vec"),
    ("static extra key", r"\['other'\]; the model.safetensors of a sentence-transformers Static"),
    ("no config", r"config.json is missing: a Model2Vec model reads normalize and max_length"),
    ("bad config", r"normalize='yes', max_length=512; expected a bool"),
    ("vectors for another vocabulary", r"has 32 tokens but .* has 30 table rows"),
    ("mapping shape", r"mapping has shape \[5\] but the tokenizer has 32 tokens"),
    ("mapping range", r"mapping must hold integer rows of embeddings \(0 to 31\)"),
    ("dense module", r"only StaticEmbedding, optionally followed by Normalize, .*\['Dense'\]"),
    ("left truncation", r"truncates from the Left; only right-side truncation"),
]


@pytest.mark.parametrize(("kind", "match"), BROKEN)
def test_bad_family_checkpoints(
    kind: str,
    match: str,
    tmp_path: Path,
    tiny_tokenizer: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = broken(kind, tmp_path, tiny_tokenizer)
    with pytest.raises(CheckpointError, match=match):
        load_checkpoint(folder)
    assert main(["--model", str(folder), "--output", str(tmp_path / "out"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("sse-export: error: ") and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("card", "warns"),
    [
        (None, True),
        ("A static embedding model.", True),
        ("tags:\n- loss:MatryoshkaLoss\n", False),
        ("# static-retrieval-mrl-en-v1", False),
    ],
)
def test_dim_warns_unless_the_card_says_matryoshka(
    card: str | None,
    warns: bool,
    tmp_path: Path,
    cases: dict[str, Case],
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = shutil.copytree(cases["st-root-truncating"].folder, tmp_path / "st")
    if card is not None:
        (folder / "README.md").write_text(card, encoding="utf-8")
    common = ["--model", str(folder), "--no-validate", "--no-report", "--quiet"]
    with caplog.at_level(logging.WARNING):
        assert main([*common, "--output", str(tmp_path / "full")]) == 0
        assert "Matryoshka" not in caplog.text
        assert main([*common, "--output", str(tmp_path / "cut"), "--dim", "8"]) == 0
    assert ("do not say it is Matryoshka-trained" in caplog.text) == warns


def test_schema_1_manifests_read_as_sse(
    tmp_path: Path, tiny_checkpoint: Path, exported: Callable[..., Path]
) -> None:
    folder = shutil.copytree(exported(tiny_checkpoint), tmp_path / "v1")
    data = json.loads((folder / MANIFEST_FILE).read_text())
    assert data["schema_version"] == 2 and data["pooling"]["head"] == "dyt"
    expected = Encoder(folder).encode(TEXTS)
    del data["pooling"]
    (folder / MANIFEST_FILE).write_text(json.dumps({**data, "schema_version": 1}))
    assert read_manifest(folder).pooling == Pooling()
    np.testing.assert_array_equal(Encoder(folder).encode(TEXTS), expected)


@pytest.mark.parametrize(
    ("pooling", "match"),
    [
        ({"head": "relu"}, r"unknown head \(known: \('dyt', 'identity'\)\)"),
        ({"max_tokens": -1}, "value of the wrong type"),
        ({"normalize": "yes"}, "value of the wrong type"),
        ({"stride": 2}, "is malformed"),
        (None, "is malformed"),
    ],
)
def test_bad_pooling_in_a_manifest(
    pooling: dict[str, Any] | None,
    match: str,
    tmp_path: Path,
    tiny_checkpoint: Path,
    exported: Callable[..., Path],
) -> None:
    folder = shutil.copytree(exported(tiny_checkpoint), tmp_path / "bad")
    data = json.loads((folder / MANIFEST_FILE).read_text())
    data["pooling"] = pooling
    (folder / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelFormatError, match=match):
        Encoder(folder)
    del data["pooling"]
    (folder / MANIFEST_FILE).write_text(json.dumps(data))
    with pytest.raises(ModelFormatError, match=r"incomplete or malformed \('pooling'\)"):
        Encoder(folder)


# The libraries themselves, where installed (they are not dependencies of the project or CI).


@pytest.fixture(scope="module")
def bert_model2vec(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A vocabulary-quantized Model2Vec folder on the real bert-base-uncased tokenizer."""
    rng = np.random.default_rng(11)
    tensors = {
        "embeddings": rng.normal(0, 1, (300, 24)).astype(np.float32),
        "mapping": rng.integers(0, 300, 30522),
        "weights": rng.uniform(0.2, 2.0, 30522).astype(np.float32),
    }
    folder = tmp_path_factory.mktemp("bert-m2v")
    return write_model2vec(folder, BERT_TOKENIZER, tensors, {"normalize": True})


@pytest.mark.parametrize("name", ["m2v-defaults", "m2v-quantized-normalize", "bert"])
def test_matches_the_model2vec_library(
    name: str, cases: dict[str, Case], bert_model2vec: Path, exported: Callable[..., Path]
) -> None:
    static_model = pytest.importorskip("model2vec").StaticModel
    folder = bert_model2vec if name == "bert" else cases[name].folder
    expected = static_model.from_pretrained(folder).encode(TEXTS)
    got = Encoder(exported(folder)).encode(TEXTS, normalize_embeddings=False)
    # model2vec averages in float32, so its own rounding grows with the length of a text too.
    assert_close(l2(got), l2(expected), "model2vec")
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["st-nested-normalize", "st-root-truncating"])
def test_matches_sentence_transformers(
    name: str, cases: dict[str, Case], exported: Callable[..., Path]
) -> None:
    library = pytest.importorskip("sentence_transformers")
    model = library.SentenceTransformer(str(cases[name].folder), device="cpu")
    expected = model.encode(TEXTS, convert_to_numpy=True, truncate_dim=24)
    got = Encoder(exported(cases[name].folder)).encode(
        TEXTS, normalize_embeddings=False, truncate_dim=24
    )
    assert_close(got, expected, "sentence-transformers")
