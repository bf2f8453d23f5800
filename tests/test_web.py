"""The web folder (``sse-export --target web``) and its JavaScript module, checked under Node.

The Python side exports the default model as the README's "Web and Node" section does, writes
HF's ids and the Python Encoder's vectors, and runs ``node --test tests/web/web.test.mjs``:
the JavaScript tokenizer must give HF's ids on the adversarial set, every SciFact document and
query (when the data is present), ``SSE_WEB_FUZZ`` generated strings (100,000 by default, the
generator of tests/test_fast_tokenizer.py) and every Unicode scalar value, and the JavaScript
Encoder on onnxruntime-node and onnxruntime-web (WebAssembly) the Python Encoder's vectors
within 1e-5 (1e-4 above 1,000 tokens, the exporter's bounds), also on web folders of the other
families. The npm packages are installed by ``npm ci --ignore-scripts`` in tests/web (CI does
it); without them or without ``node`` the Node tests skip, saying so, as the browser test does
without ``chromium``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_fast_tokenizer import random_texts
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

from conftest import BERT_TOKENIZER, EVAL_DATA, ROOT, TINY_VOCAB, write_tiny_tokenizer
from sse_export import web
from sse_export.adversarial import adversarial_texts
from sse_export.cli import main
from sse_export.web_guide import TESTED_PACKAGES
from sse_onnx import Encoder
from sse_onnx import folder as fmt
from sse_onnx.tokenizer import TextTokenizer

WEB_TESTS = Path(__file__).resolve().parent / "web"
FUZZ = int(os.environ.get("SSE_WEB_FUZZ", "100000"))
SCIFACT = EVAL_DATA / "retrieval" / "scifact"


def node_missing() -> str | None:
    """Why the Node tests cannot run here, or None."""
    if shutil.which("node") is None:
        return "node is not installed (CI installs Node 20)"
    for package in TESTED_PACKAGES:
        if not (WEB_TESTS / "node_modules" / package / "package.json").is_file():
            return f"{package} is missing: run `npm ci --ignore-scripts` in tests/web"
    return None


@pytest.fixture(scope="module")
def web_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's command: the default model's first 256 dims, int8, as a web folder."""
    folder = tmp_path_factory.mktemp("web") / "sse-web"
    args = ["--dim", "256", "--variants", "int8", "--target", "web", "--output", str(folder)]
    assert main([*args, "--quiet"]) == 0
    return folder


def test_the_folder_holds_the_module_the_tables_and_the_guide(web_folder: Path) -> None:
    names = {path.name for path in web_folder.iterdir()}
    assert names == {
        fmt.MANIFEST_FILE,
        fmt.TOKENIZER_FILE,
        "model_int8.onnx",
        web.MODULE_FILE,
        web.WEB_TOKENIZER_FILE,
        fmt.PARITY_FILE,
        fmt.INTEGRATION_FILE,
    }
    assert (web_folder / web.MODULE_FILE).read_bytes() == (
        Path(web.__file__).parent / "js" / web.MODULE_FILE
    ).read_bytes()
    spec = json.loads((web_folder / web.WEB_TOKENIZER_FILE).read_text(encoding="utf-8"))
    assert (spec["format"], spec["version"]) == web.WEB_TOKENIZER_FORMAT
    assert len(spec["vocab"]) == fmt.read_manifest(web_folder).vocab_size
    guide = (web_folder / fmt.INTEGRATION_FILE).read_text(encoding="utf-8")
    for package, version in TESTED_PACKAGES.items():
        assert f"{package}@{version}" in guide
    # Python loads the folder too, and it equals an export of the default target.
    assert Encoder(web_folder).encode("hello").shape == (256,)


def test_the_guides_worker_is_the_one_checked_in_chromium(web_folder: Path) -> None:
    guide = (web_folder / fmt.INTEGRATION_FILE).read_text(encoding="utf-8")
    worker = (ROOT / "bench" / "web" / "embed-worker.mjs").read_text(encoding="utf-8")
    code = [line for line in worker.splitlines() if not line.startswith("//")]
    assert "\n".join(code) in guide


def test_the_module_batches_as_the_python_encoder_does() -> None:
    import re

    from sse_onnx import encoder

    module = (Path(web.__file__).parent / "js" / web.MODULE_FILE).read_text(encoding="utf-8")
    for name in ("TOKEN_BUDGET", "CHUNK_TOKENS", "BLOCK_TEXTS"):
        found = re.search(rf"^const {name} = 1 << (\d+);$", module, re.MULTILINE)
        assert found, name
        assert 1 << int(found.group(1)) == getattr(encoder, name), name


def test_tested_versions_are_the_pinned_ones() -> None:
    pinned = json.loads((WEB_TESTS / "package.json").read_text(encoding="utf-8"))
    assert pinned["devDependencies"] == TESTED_PACKAGES


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model": models.BPE()}, "model 'BPE'"),
        ({"normalizer": normalizers.Lowercase()}, "normalizer 'Lowercase'"),
        ({"pre_tokenizer": pre_tokenizers.Whitespace()}, "pre-tokenizer 'Whitespace'"),
        ({"decoder": decoders.WordPiece()}, None),  # a decoder does not change ids: accepted
    ],
)
def test_other_tokenizers_are_refused(
    tmp_path: Path, change: dict[str, object], message: str | None
) -> None:
    path = write_tiny_tokenizer(tmp_path / "tokenizer.json")
    tokenizer = Tokenizer.from_file(str(path))
    for attribute, value in change.items():
        setattr(tokenizer, attribute, value)
    tokenizer.save(str(path))
    if message is None:
        assert web.web_tokenizer(path)["vocab"] == TINY_VOCAB
    else:
        with pytest.raises(ValueError, match=f"restates BERT-style tokenizers only.*{message}"):
            web.web_tokenizer(path)


def test_added_tokens_with_strip_options_are_refused(tmp_path: Path) -> None:
    from tokenizers import AddedToken

    path = write_tiny_tokenizer(tmp_path / "tokenizer.json")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.add_tokens([AddedToken("[X]", lstrip=True, normalized=False)])
    tokenizer.save(str(path))
    with pytest.raises(ValueError, match=r"added tokens \['\[X\]'\]"):
        web.web_tokenizer(path)


def scifact_texts() -> tuple[list[tuple[str, str]], list[str]]:
    """SciFact's documents as (title, text) and its queries."""
    with (SCIFACT / "corpus.jsonl").open(encoding="utf-8") as handle:
        docs = [(d.get("title", ""), d.get("text", "")) for d in map(json.loads, handle)]
    with (SCIFACT / "queries.jsonl").open(encoding="utf-8") as handle:
        queries = [json.loads(line)["text"] for line in handle]
    return docs, queries


def write_ids(folder: Path, name: str, tokenizer_path: Path, texts: list[str]) -> None:
    """tokenizers/<name>.json (the web tokenizer) and <name>.jsonl (texts with HF's ids)."""
    (folder / f"{name}.json").write_text(
        json.dumps(web.web_tokenizer(tokenizer_path), ensure_ascii=False), encoding="utf-8"
    )
    ids = web.reference_ids(tokenizer_path, fmt.Pooling(), texts)
    with (folder / f"{name}.jsonl").open("w", encoding="utf-8") as handle:
        for text, row in zip(texts, ids, strict=True):
            handle.write(json.dumps({"text": text, "ids": row}, ensure_ascii=False) + "\n")


def write_embeddings(
    folder: Path,
    name: str,
    encoder: Encoder,
    texts: list[str],
    truncate_dim: int | None = None,
    normalize_embeddings: bool = True,
) -> None:
    """embed/<name>.json (texts, dim, the JavaScript options, the web folder unless it is the
    main one) and <name>.f32 (Python's rows)."""
    rows = encoder.encode(
        texts, truncate_dim=truncate_dim, normalize_embeddings=normalize_embeddings
    )
    js_options = {"truncateDim": truncate_dim, "normalizeEmbeddings": normalize_embeddings}
    spec = {"texts": texts, "dim": int(rows.shape[1]), "options": js_options}
    spec["folder"] = str(encoder.folder)
    tokenizer = TextTokenizer(encoder.folder / fmt.TOKENIZER_FILE)
    spec["tokens"] = [len(ids) for ids in tokenizer.encode(texts)]
    (folder / f"{name}.json").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    (folder / f"{name}.f32").write_bytes(np.ascontiguousarray(rows, dtype="<f4").tobytes())


def family_folders(root: Path) -> dict[str, Path]:
    """Web folders of the other families' rules: character and token cuts, a skipped [UNK]
    (also in a long text embedded in chunks), an identity head, the family's normalisation."""
    from test_families import write_model2vec, write_static_embedding

    from sse_export import export

    root.mkdir()
    tiny = write_tiny_tokenizer(root / "tokenizer.json")
    rng = np.random.default_rng(18)
    table = rng.normal(0, 1, (len(TINY_VOCAB), 24)).astype(np.float32)
    truncation = {"direction": "Right", "max_length": 5, "strategy": "LongestFirst", "stride": 0}
    checkpoints = {
        "st-normalize-truncating": write_static_embedding(
            root / "st", tiny, table, normalize=True, truncation=truncation
        ),
        "m2v-cut-normalize": write_model2vec(
            root / "m2v-cut",
            tiny,
            {
                "embeddings": rng.normal(0, 1, (7, 24)).astype(np.float32),
                "mapping": rng.integers(0, 7, len(TINY_VOCAB)),
                "weights": rng.uniform(0.2, 2.0, len(TINY_VOCAB)).astype(np.float32),
            },
            {"normalize": True, "max_length": 6},
        ),
        "m2v-uncut": write_model2vec(
            root / "m2v-uncut", tiny, {"embeddings": table}, {"max_length": None}
        ),
    }
    folders = {}
    for name, checkpoint in checkpoints.items():
        folders[name] = root / f"{name}-web"
        export(checkpoint, output=folders[name], variants=["fp32"], report=False, target="web")
    return folders


#: Texts for the families: cuts inside surrogate pairs' neighbourhood, [UNK] (zebra), and a
#: 9,000-token text (the graph is fed 4,096 tokens at a time; [UNK] left out of each count).
FAMILY_TEXTS = [
    "cat dog " * 10,
    "zebra",
    "zebra cat",
    "\U0001f431 cat" * 5,
    "caf\u00e9 " * 3 + "\U0001f600dog cat",
    "the\U0001f600\U0001f600\U0001f600\U0001f600\U0001f600 cat sat on the mat dog",
    "cat zebra dog " * 3000,
    "",
]


def every_code_point() -> list[str]:
    """Every Unicode scalar value, in runs of 64 consecutive ones: joined by spaces, joined by
    nothing (marks then combine and reorder with their neighbours) and between letters."""
    codes = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    texts = []
    for start in range(0, len(codes), 64):
        run = [chr(c) for c in codes[start : start + 64]]
        texts += [" ".join(run), "".join(run), "A" + "b".join(run) + "C"]
    return texts


def tiny_variant(path: Path, normalizer: normalizers.Normalizer | None) -> Path:
    """The tiny tokenizer with another normalizer (and the added tokens HF matches raw)."""
    write_tiny_tokenizer(path)
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.normalizer = normalizer
    tokenizer.add_special_tokens(["[CLS]", "[SEP]"])
    tokenizer.save(str(path))
    return path


@pytest.fixture(scope="module")
def cases(web_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The expected data the Node test compares with (see tests/web/web.test.mjs)."""
    root = tmp_path_factory.mktemp("web-cases")
    ids, embed = root / "tokenizers", root / "embed"
    ids.mkdir()
    embed.mkdir()
    adversarial = [text for _, text in adversarial_texts()]
    fuzz = list(random_texts(np.random.default_rng(2026), FUZZ))
    write_ids(ids, "adversarial", BERT_TOKENIZER, adversarial)
    write_ids(ids, "fuzz", BERT_TOKENIZER, fuzz)
    write_ids(ids, "every-code-point", BERT_TOKENIZER, every_code_point())
    small = list(random_texts(np.random.default_rng(7), 2000))
    for name, normalizer in {
        "tiny-cased": normalizers.BertNormalizer(lowercase=False),
        "tiny-accents-kept": normalizers.BertNormalizer(strip_accents=False),
        "tiny-accents-stripped-cased": normalizers.BertNormalizer(
            lowercase=False, strip_accents=True
        ),
        "tiny-no-chinese-no-clean": normalizers.BertNormalizer(
            handle_chinese_chars=False, clean_text=False
        ),
        "tiny-no-normalizer": None,
    }.items():
        path = tiny_variant(root / f"{name}-tokenizer.json", normalizer)
        write_ids(ids, name, path, [*adversarial, *small])
    encoder = Encoder(web_folder)
    write_embeddings(embed, "adversarial", encoder, adversarial)
    write_embeddings(embed, "adversarial-64-raw", encoder, adversarial, truncate_dim=64,
                     normalize_embeddings=False)  # fmt: skip
    write_embeddings(embed, "fuzz", encoder, fuzz)
    for name, folder in family_folders(root / "families").items():
        texts = [*adversarial, *FAMILY_TEXTS]
        write_embeddings(embed, f"family-{name}", Encoder(folder), texts)
        write_embeddings(embed, f"family-{name}-raw-8", Encoder(folder), texts, 8, False)
    if SCIFACT.is_dir():
        docs, queries = scifact_texts()
        joined = [f"{title} {text}".strip() for title, text in docs]
        texts = [text for doc in docs for text in doc] + joined + queries
        write_ids(ids, "scifact", BERT_TOKENIZER, texts)
        write_embeddings(embed, "scifact", encoder, joined + queries)
    damaged = root / "damaged"
    shutil.copytree(web_folder, damaged)
    model = damaged / fmt.read_manifest(web_folder).variants["int8"].file
    data = bytearray(model.read_bytes())
    data[-1] ^= 1
    model.write_bytes(bytes(data))
    return root


def test_javascript_tokenizer_and_encoder_under_node(web_folder: Path, cases: Path) -> None:
    reason = node_missing()
    if reason:
        pytest.skip(reason)
    if not SCIFACT.is_dir():
        print(f"SciFact not found at {SCIFACT}: its texts are left out")
    environment = {**os.environ, "SSE_WEB_FOLDER": str(web_folder), "SSE_WEB_CASES": str(cases)}
    run = subprocess.run(
        ["node", "--test", "--test-reporter=spec", str(WEB_TESTS / "web.test.mjs")],
        cwd=WEB_TESTS,
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(run.stdout[-6000:])
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]


def test_chromium_gives_nodes_results(web_folder: Path, tmp_path: Path) -> None:
    """bench/web.py in smoke mode: a page on 127.0.0.1 in headless Chromium embeds the
    adversarial set and the SciFact queries with onnxruntime-web; ids and vectors must equal
    Node's (and HF's ids, the Python vectors within 1e-5, which the script checks itself)."""
    reason = node_missing() or (None if shutil.which("chromium") else "chromium is missing")
    if reason:
        pytest.skip(reason)
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "web.py"), "--smoke", "--folder", str(web_folder),
         "--out", str(tmp_path), "--data", str(EVAL_DATA)],
        capture_output=True,
        text=True,
        timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads((tmp_path / "web.json").read_text(encoding="utf-8"))
    assert summary["chromium"].startswith(("Chrome/", "HeadlessChrome/"))
    assert summary["browser_ids_equal_node_ids"]
    assert summary["worker_equals_page"]
    assert summary["browser_vs_node_web_max_abs_diff"] <= 1e-6
    assert summary["texts"] == len(adversarial_texts()) + summary["queries"]
    if SCIFACT.is_dir():
        assert summary["queries"] == 50
    for name, result in summary["runs"].items():
        assert result["max_abs_diff_vs_python"] <= 1e-5, name


def test_export_refuses_another_tokenizer_for_the_web_target(tmp_path: Path) -> None:
    from conftest import sse_arrays, write_checkpoint
    from sse_export import export

    vocab = {"[UNK]": 0, "[PAD]": 1, "hello": 2, "world": 3}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    checkpoint = write_checkpoint(
        tmp_path / "ckpt", tmp_path / "tokenizer.json", sse_arrays(len(vocab), 8, seed=3)
    )
    with pytest.raises(ValueError, match=r"model 'WordLevel' \(needs WordPiece\); pre-tokenizer"):
        export(checkpoint, output=tmp_path / "web", report=False, target="web")
    assert not (tmp_path / "web" / fmt.MANIFEST_FILE).exists()


def test_the_readmes_node_commands(web_folder: Path, tmp_path: Path) -> None:
    """The README's "Web and Node" block, run as a user would (npm's folder linked in)."""
    reason = node_missing()
    if reason:
        pytest.skip(reason)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Web and Node", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if not line.startswith("npm install")]
    assert commands[0].startswith("node "), block
    shutil.copytree(web_folder, tmp_path / "sse-web")
    (tmp_path / "node_modules").symlink_to(WEB_TESTS / "node_modules")
    run = subprocess.run(
        ["bash", "-c", "\n".join(commands)], cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    dim, cosine = run.stdout.split()
    expected = Encoder(web_folder).encode(
        ["Static embeddings are fast.", "how fast are static embeddings?"]
    )
    assert int(dim) == 256
    assert abs(float(cosine) - float(expected[0] @ expected[1])) < 1e-5
