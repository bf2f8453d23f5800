"""The chunk-cache path of TextTokenizer gives exactly the Hugging Face tokenizer's ids.

Every expected id comes from HF itself (``encode(text, add_special_tokens=False)``), for the
real bert-base-uncased tokenizer and the tiny one of conftest. The fuzz sizes are small in CI;
``SSE_FUZZ_EXAMPLES=100000`` runs the full size (see bench/README.md). The parity over every
text of the evaluation data runs with ``SSE_DATA_PARITY=1`` and skips where the data is absent.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, normalizers, pre_tokenizers

from conftest import BERT_TOKENIZER, EVAL_DATA, run_in_threads, write_tiny_tokenizer
from sse_onnx import tokenizer as tokenizer_module
from sse_onnx.tokenizer import PYTHON_WHITESPACE, TextTokenizer

FUZZ_EXAMPLES = int(os.environ.get("SSE_FUZZ_EXAMPLES", "800"))
DATA_PARITY = os.environ.get("SSE_DATA_PARITY") == "1"

#: Pieces that stress normalization, pre-tokenization, added tokens and WordPiece.
PIECES = [
    # added tokens, literally and not quite
    "[UNK]", "[SEP]", "[CLS]", "[PAD]", "[MASK]", "[unk]", "[ SEP]", "[SEP", "##", "##ing", "#",
    # accents, composed and decomposed; marks of different combining classes (NFD reorders)
    "\u00e9", "e\u0301", "\u00c5", "A\u030a", "a\u0308\u0301", "\u0301", "o\u0323\u0302",
    "q\u0307\u0323", "\u1e69", "\u0345", "\U0001d165\U0001d16d", "\u0e31\u0e48",
    # case mappings without a single-character lowercase
    "\u0130", "\u00df", "\u03a3\u0391\u03a3", "\u03c2", "\ufb01", "\u01c4", "\u01c5", "\u1e9e",
    # CJK and other scripts
    "\u6771\u4eac", "\u4e2d\u6587", "\ud55c\uad6d\uc5b4", "\u3042\u3044",
    "\u0645\u0631\u062d\u0628\u0627", "\u05e9\u05dc\u05d5\u05dd",
    "\u0939\u093f\u0928\u094d\u0926\u0940", "\u0e44\u0e17\u0e22",
    "\U00020000", "\u3400", "\uf900", "\U0002f800",
    # emoji, modifiers, ZWJ sequences, keycaps, flags, tags
    "\U0001f44d\U0001f3fd", "\U0001f469\u200d\U0001f469\u200d\U0001f467",
    "\U0001f3f3\ufe0f\u200d\U0001f308",
    "1\ufe0f\u20e3", "\U0001f1eb\U0001f1f7", "\U0001f9a0", "\U0001f6dc", "\U000e0067\U000e007f",
    # punctuation (ASCII and Unicode P*), symbols
    "_", "a_b", "--", "\u2026", "\u201cq\u201d", "\u00ab\u00bb", "\u00bf", "\u00a1", "\u00a7",
    "\u00a9", "\u20ac", "$", "\u2260", "\u037e", "`", "~", "^", "\u00b4", "\u02dc", "\u2e3a",
    # controls, format characters, replacement, private use, noncharacters
    "\x00", "\x07", "\x7f", "\x9f", "\u00ad", "\u200b", "\u200c", "\u200d", "\u200e", "\u200f",
    "\u2060", "\ufeff", "\u180e", "\ufffd", "\ue000", "\U000f0000", "\ufdd0", "\uffff",
    # every kind of whitespace
    *PYTHON_WHITESPACE, "  ",
    # ordinary text
    "3.14", "1,000", "https://example.com/a?b=c&d=%20", "f(x)=x**2;", "CamelCase", "UPPER",
    "na\u00efve caf\u00e9", "don't", "e-mail", "state-of-the-art",
]  # fmt: skip

CATEGORIES = (
    "Lu", "Ll", "Lt", "Lm", "Lo", "Mn", "Mc", "Me", "Nd", "Nl", "No", "Pc", "Pd", "Ps", "Pe",
    "Pi", "Pf", "Po", "Sm", "Sc", "Sk", "So", "Zs", "Zl", "Zp", "Cc", "Cf", "Co", "Cn",
)  # fmt: skip

TEXTS = st.lists(
    st.one_of(
        st.sampled_from(PIECES),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC", min_size=1, max_size=12),
        # around max_input_chars_per_word (100), counted after normalization
        st.text(alphabet="ab\u00e9\u0301", min_size=95, max_size=140),
        st.characters(categories=CATEGORIES),
    ),
    max_size=24,
).map("".join)


def hf_tokenizer(path: Path) -> Tokenizer:
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def hf_ids(tokenizer: Tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False).ids)


@pytest.fixture(
    scope="module",
    params=["bert", "tiny", "bert-small-cache", "bert-table", "tiny-table", "bert-small-table"],
)
def pair(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[TextTokenizer, Tokenizer]:
    """The fast tokenizer under test and HF's, on the same tokenizer.json.

    The ``-table`` ones send every list to the chunk table (whatever its length), the others
    only lists of 20,000 characters or more. A tokenizer reads these settings
    when it is made, so the patches end with the construction.
    """
    if request.param.startswith("tiny"):
        path = write_tiny_tokenizer(tmp_path_factory.mktemp("tiny") / "tokenizer.json")
    else:
        path = BERT_TOKENIZER
    with pytest.MonkeyPatch.context() as patch:
        if "small" in request.param:  # emptied every few chunks
            patch.setattr(tokenizer_module, "CACHE_CHUNKS", 5)
        if request.param.endswith("-table"):
            patch.setattr(tokenizer_module, "TABLE_CHARS", 0)  # every list to the table
        fast = TextTokenizer(path)
    assert fast.fast, "the chunk path must be in use, or this compares HF with itself"
    return fast, hf_tokenizer(path)


def random_texts(rng: np.random.Generator, count: int) -> Iterator[str]:
    """Texts of random pieces, words and code points (all planes but surrogates)."""
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    for _ in range(count):
        parts = []
        for _ in range(rng.integers(0, 20)):
            kind = rng.integers(0, 4)
            if kind == 0:
                parts.append(PIECES[rng.integers(len(PIECES))])
            elif kind == 1:
                parts.append("".join(rng.choice(letters, rng.integers(1, 12))))
            elif kind == 2:
                parts.append(" ")
            else:
                code = int(rng.choice([rng.integers(0x80, 0x3000), rng.integers(0, 0x30000)]))
                parts.append(chr(code if not 0xD800 <= code < 0xE000 else 0x20))
        yield "".join(parts)


def test_python_whitespace_is_every_isspace_character() -> None:
    found = "".join(chr(code) for code in range(sys.maxunicode + 1) if chr(code).isspace())
    assert found == PYTHON_WHITESPACE


@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(text=TEXTS)
def test_fuzzed_texts_give_hf_ids(pair: tuple[TextTokenizer, Tokenizer], text: str) -> None:
    fast, hf = pair
    assert fast.encode_one(text).tolist() == hf_ids(hf, text)


def mismatches(fast: TextTokenizer, hf: Tokenizer, texts: list[str], batch: int) -> list[str]:
    """The texts whose ids differ between the fast path and HF, compared in batches.

    Each batch is encoded twice: first with chunks new to the cache (the per-text path that
    fills it), then with every chunk cached (the whole-batch lookup).
    """
    found = []
    for start in range(0, len(texts), batch):
        chunk = texts[start : start + batch]
        expected = hf.encode_batch(chunk, add_special_tokens=False)
        for got in (fast.encode(chunk), fast.encode(chunk)):
            found += [
                t for t, g, e in zip(chunk, got, expected, strict=True) if g.tolist() != e.ids
            ]
    return found


def test_random_texts_in_batches_give_hf_ids(
    pair: tuple[TextTokenizer, Tokenizer], request: pytest.FixtureRequest
) -> None:
    fast, hf = pair
    texts = list(random_texts(np.random.default_rng(FUZZ_EXAMPLES), FUZZ_EXAMPLES))
    mismatched = mismatches(fast, hf, texts, 1000)
    assert not mismatched, f"{len(mismatched)} of {len(texts)} differ, e.g. {mismatched[:3]!r}"
    # the -table tokenizers looked these short texts up in the chunk table, the others not
    name = request.node.callspec.params["pair"]
    if "small" not in name:  # a small table may just have been emptied
        assert (len(fast._table) > 0) == name.endswith("-table")


def test_literal_added_tokens_are_matched_as_hf_does(pair: tuple[TextTokenizer, Tokenizer]) -> None:
    fast, hf = pair
    texts = ["hello [SEP] world", "x[UNK]y", "[CLS][SEP]", "[sep] [Sep]", "##[MASK]##"]
    assert [ids.tolist() for ids in fast.encode(texts)] == [hf_ids(hf, t) for t in texts]


def test_long_words_and_long_texts(
    pair: tuple[TextTokenizer, Tokenizer], monkeypatch: pytest.MonkeyPatch
) -> None:
    fast, hf = pair
    monkeypatch.setattr(tokenizer_module, "SEGMENT_CHARS", 50)
    texts = [
        "a" * 100,
        "a" * 101,
        "e\u0301" * 100,  # 200 characters, 100 after stripping accents
        "word " * 40 + "x" * 300 + " end",
        ("caf\u00e9 \u6771\u4eac [SEP] " * 20).strip(),
    ]
    assert [ids.tolist() for ids in fast.encode(texts)] == [hf_ids(hf, t) for t in texts]


@pytest.mark.parametrize(
    ("normalizer", "fast"),
    [
        (normalizers.BertNormalizer(lowercase=False), True),
        (normalizers.BertNormalizer(strip_accents=False), True),
        (normalizers.BertNormalizer(handle_chinese_chars=False), True),
        (None, False),  # \x1c is not whitespace for Rust: str.split would cut where HF does not
        (normalizers.BertNormalizer(clean_text=False), False),
        (normalizers.Lowercase(), False),
    ],
)
def test_other_configurations_choose_their_path_and_keep_hf_ids(
    tmp_path: Path, normalizer: normalizers.Normalizer | None, fast: bool
) -> None:
    path = write_tiny_tokenizer(tmp_path / "tokenizer.json")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.save(str(path))
    ours = TextTokenizer(path)
    assert ours.fast is fast
    texts = [*random_texts(np.random.default_rng(7), 300), "a\x1cb \x0bCaf\u00c9 \u6771\u4eac"]
    hf = hf_tokenizer(path)
    assert [ids.tolist() for ids in ours.encode(texts)] == [hf_ids(hf, t) for t in texts]


def test_added_token_with_whitespace_sends_its_texts_to_hf(tmp_path: Path) -> None:
    from tokenizers import AddedToken

    path = write_tiny_tokenizer(tmp_path / "tokenizer.json")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.add_tokens(
        [AddedToken("b\tc", normalized=False), AddedToken("[X]", normalized=False)]
    )
    tokenizer.save(str(path))
    ours = TextTokenizer(path)
    assert ours.fast
    texts = ["a b\tc d", "b\tc", "xb\tcx [X]", "b c", "b\t c", "x[X]y"]
    hf = hf_tokenizer(path)
    assert [ids.tolist() for ids in ours.encode(texts)] == [hf_ids(hf, t) for t in texts]


def test_added_token_matched_after_normalization_disables_the_fast_path(tmp_path: Path) -> None:
    from tokenizers import AddedToken

    path = write_tiny_tokenizer(tmp_path / "tokenizer.json")
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.add_tokens([AddedToken("zz", normalized=True)])
    tokenizer.save(str(path))
    ours = TextTokenizer(path)
    assert not ours.fast
    texts = ["the CAT sat", "zzz ZZ", "a zz b", "ZzZ"]
    hf = hf_tokenizer(path)
    assert [ids.tolist() for ids in ours.encode(texts)] == [hf_ids(hf, t) for t in texts]


def test_concurrent_calls_give_sequential_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokenizer_module, "CACHE_CHUNKS", 64)  # fills and empties constantly
    shared = TextTokenizer(BERT_TOKENIZER)
    texts = list(random_texts(np.random.default_rng(3), 120))
    expected = [hf_ids(hf_tokenizer(BERT_TOKENIZER), t) for t in texts]
    results: list[list[list[int]]] = []
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        order = np.random.default_rng(seed).permutation(len(texts))
        try:
            got = [shared.encode([texts[i]])[0].tolist() for i in order]
            results.append([got[k] for k in np.argsort(order)])
        except BaseException as exc:  # surfaced below with the thread's traceback
            errors.append(exc)

    run_in_threads(work)
    assert not errors, errors
    assert len(results) == 8
    assert all(result == expected for result in results)


def test_concurrent_lists_through_the_table_give_hf_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Threads look lists up, add their new chunks and empty the full table, all at once."""
    monkeypatch.setattr(tokenizer_module, "CACHE_CHUNKS", 300)  # emptied every few lists
    monkeypatch.setattr(tokenizer_module, "TABLE_CHARS", 0)
    shared = TextTokenizer(BERT_TOKENIZER)
    texts = list(random_texts(np.random.default_rng(4), 400))
    hf = hf_tokenizer(BERT_TOKENIZER)
    expected = [hf_ids(hf, text) for text in texts]
    results: list[bool] = []
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        try:
            for _ in range(10):
                pick = rng.choice(len(texts), 40, replace=False)
                flat, lengths = shared.encode_flat([texts[i] for i in pick])
                got = np.split(flat, np.cumsum(lengths)[:-1])
                results.append(
                    all(g.tolist() == expected[i] for g, i in zip(got, pick, strict=True))
                )
        except BaseException as exc:  # surfaced below with the thread's traceback
            errors.append(exc)

    run_in_threads(work)
    assert not errors, errors
    assert len(results) == 80 and all(results)
    assert len(shared._table) > 0


def data_texts(root: Path) -> Iterator[str]:
    """Every text of the evaluation data: titles, texts, title + text, queries, STS sentences."""
    for corpus in sorted(root.glob("retrieval/*/corpus.jsonl")):
        with corpus.open(encoding="utf-8") as handle:
            for line in handle:
                doc = json.loads(line)
                title, text = doc.get("title", ""), doc.get("text", "")
                yield from (title, text, f"{title} {text}".strip())
    for queries in sorted(root.glob("retrieval/*/queries.jsonl")):
        with queries.open(encoding="utf-8") as handle:
            yield from (json.loads(line)["text"] for line in handle)
    for sts in sorted(root.glob("sts/*.csv")):
        with sts.open(encoding="utf-8") as handle:
            for line in handle:
                yield from line.rstrip("\n").split("\t")[5:7]


@pytest.mark.skipif(not DATA_PARITY, reason="opt-in: SSE_DATA_PARITY=1 (20-40 s)")
def test_every_text_of_the_evaluation_data_gives_hf_ids() -> None:
    if not (EVAL_DATA / "retrieval").is_dir():
        pytest.skip(f"evaluation data not found at {EVAL_DATA}")
    fast, hf = TextTokenizer(BERT_TOKENIZER), hf_tokenizer(BERT_TOKENIZER)
    texts = list(data_texts(EVAL_DATA))
    mismatched = mismatches(fast, hf, texts, 2000)
    assert len(texts) > 50_000
    assert not mismatched, f"{len(mismatched)} of {len(texts)} differ, e.g. {mismatched[:3]!r}"
