"""The web folder (``sse-export --target web``): an export made into a folder web apps ship.

:func:`write_web` copies a validated export folder and adds what a JavaScript app needs:

- ``sse-onnx.mjs``: one dependency-free ES module (the same file in browsers, web workers,
  Node, Electron and Tauri) with an exact tokenizer and an ``Encoder`` over an
  onnxruntime-web or onnxruntime-node session; it ships inside this package (``js/``);
- ``tokenizer_web.json`` (:data:`WEB_TOKENIZER_FILE`): the WordPiece vocabulary and the
  tokenizer's settings, plus the per-character tables of its normalizer and pre-tokenizer
  **asked of Hugging Face tokenizers itself** (:func:`character_tables`). HF's Rust code
  classifies characters with the Unicode tables of the crates it was built with, which are
  older than a JavaScript engine's: with tokenizers 0.22, some 100 characters Unicode 14
  calls punctuation (U+2E43-U+2E4F, U+061D, ...) are not split off, U+166D and U+111C9 are,
  and 13 format characters (U+0890, U+13430, ...) are kept rather than deleted; shipping HF's
  answers makes the JavaScript tokenizer give HF's ids in every engine;
- ``parity.jsonl``: the adversarial texts, their reference ids and the default variant's
  normalised embedding, for an app's own tests; ``INTEGRATION.md``
  (:func:`sse_export.web_guide.web_guide`).

The model files are the export's ``.onnx`` files unchanged. Their ORT-format conversions were
measured (bench/runtimes.py) to be 0.1-0.4% larger, and no faster to open in onnxruntime-node;
onnxruntime-web opens the int8 one 10-20 ms sooner, within a page load of about a second spent
mostly fetching and compiling onnxruntime's WebAssembly. An ``.ort`` also ties the file to the
converter's onnxruntime release, so none is added (``--target mobile`` makes them).

Only BERT-style tokenizers are accepted (``BertNormalizer`` or none, ``BertPreTokenizer``,
``WordPiece``, added tokens matched in the raw text without strip or word options): the
tokenizers whose rules the JavaScript restates. Others are refused.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import Tokenizer, normalizers, pre_tokenizers

from sse_export.adversarial import adversarial_texts
from sse_onnx import folder as fmt
from sse_onnx.tokenizer import bert_wordpiece_mismatches

__all__ = [
    "MODULE_FILE",
    "WEB_TOKENIZER_FILE",
    "WEB_TOKENIZER_FORMAT",
    "character_tables",
    "web_tokenizer",
    "write_web",
]

logger = logging.getLogger(__name__)

#: The JavaScript module of a web folder, shipped in this package's ``js/`` folder.
MODULE_FILE = "sse-onnx.mjs"
#: The tokenizer as the JavaScript module reads it.
WEB_TOKENIZER_FILE = "tokenizer_web.json"
#: Its format name and version (the module refuses other versions).
WEB_TOKENIZER_FORMAT = ("sse-onnx-wordpiece", 1)

#: Every Unicode scalar value (code points but the UTF-16 surrogates).
_SCALARS = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]
#: Marks of combining class 1 and 240 (in every Unicode version), to probe HF's classes.
_CCC_LOW, _CCC_HIGH = "\u0334", "\u0345"


def write_web(source: str | Path, folder: str | Path) -> fmt.Manifest:
    """Turn the export folder ``source`` into a web folder ``folder``.

    Args:
        source: A folder written by :func:`sse_export.export` (``.onnx`` variants).
        folder: The folder to write; files of the same names are replaced.

    Returns:
        The web folder's manifest (the same variants and tokenizer as the source's).

    Raises:
        ValueError: for a tokenizer the JavaScript tokenizer does not restate.
    """
    from sse_export.web_guide import web_guide

    source, folder = Path(source), Path(folder)
    if folder.resolve() == source.resolve():
        raise ValueError(f"write the web folder to another folder than the export {source}.")
    manifest = fmt.read_manifest(source)
    spec = web_tokenizer(source / fmt.TOKENIZER_FILE)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / fmt.MANIFEST_FILE).unlink(missing_ok=True)
    names = [fmt.TOKENIZER_FILE, *(entry.file for entry in manifest.variants.values())]
    for name in names:
        shutil.copyfile(source / name, folder / name)
    text = json.dumps(spec, ensure_ascii=False, separators=(",", ":"))
    (folder / WEB_TOKENIZER_FILE).write_text(text + "\n", encoding="utf-8")
    module = (resources.files("sse_export") / "js" / MODULE_FILE).read_bytes()
    (folder / MODULE_FILE).write_bytes(module)
    fmt.write_manifest(folder, manifest)
    _write_parity(folder, manifest)
    guide = web_guide(folder, manifest)
    (folder / fmt.INTEGRATION_FILE).write_text(guide, encoding="utf-8")
    return manifest


def web_tokenizer(tokenizer_path: str | Path) -> dict[str, Any]:
    """The tokenizer of ``tokenizer_path`` as the JavaScript module reads it.

    Raises:
        ValueError: naming the component the JavaScript tokenizer does not restate.
    """
    tokenizer_path = Path(tokenizer_path)
    config = json.loads(tokenizer_path.read_text(encoding="utf-8"))
    model = config.get("model") or {}
    normalizer = config.get("normalizer")
    problems = bert_wordpiece_mismatches(Tokenizer.from_file(str(tokenizer_path)))
    added = config.get("added_tokens") or []
    options = ("normalized", "lstrip", "rstrip", "single_word")
    odd = [t["content"] for t in added if any(t.get(option) for option in options)]
    if odd:
        problems.append(f"added tokens {odd} with one of {options} set (needs all false)")
    if problems:
        raise ValueError(
            f"{tokenizer_path}: the web target's JavaScript tokenizer restates BERT-style "
            f"tokenizers only, and this one has {'; '.join(problems)}. Export with the default "
            "target and tokenize with Hugging Face tokenizers (or transformers.js, checking its "
            "ids against parity.jsonl of a mobile bundle)."
        )
    vocab: dict[str, int] = model["vocab"]
    tokens = sorted(vocab, key=vocab.__getitem__)
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise ValueError(f"{tokenizer_path}: WordPiece ids are not 0..{len(tokens) - 1}.")
    flags = {
        "clean_text": bool(normalizer and normalizer.get("clean_text", True)),
        "handle_chinese_chars": bool(normalizer and normalizer.get("handle_chinese_chars", True)),
        "lowercase": bool(normalizer and normalizer.get("lowercase", True)),
    }
    strip = normalizer.get("strip_accents") if normalizer else False
    flags["strip_accents"] = flags["lowercase"] if strip is None else bool(strip)
    unk = model.get("unk_token", "[UNK]")
    if unk not in vocab:
        raise ValueError(f"{tokenizer_path}: the unknown token {unk!r} is not in the vocabulary.")
    return {
        "format": WEB_TOKENIZER_FORMAT[0],
        "version": WEB_TOKENIZER_FORMAT[1],
        "tokenizers_version": tokenizers.__version__,
        "normalizer": flags if normalizer is not None else None,
        "unk_token": unk,
        "continuing_subword_prefix": model.get("continuing_subword_prefix", "##"),
        "max_input_chars_per_word": int(model.get("max_input_chars_per_word", 100)),
        "added_tokens": [[t["content"], t["id"]] for t in added],
        "tables": character_tables(flags if normalizer is not None else None),
        "vocab": tokens,
    }


def character_tables(flags: dict[str, bool] | None) -> dict[str, Any]:
    """What HF's BertNormalizer (with ``flags``) and BertPreTokenizer do to each character.

    Every answer comes from the installed ``tokenizers`` itself, by normalizing and
    pre-tokenizing all Unicode scalar values at once (a few seconds). Sets are lists of
    inclusive ``[first, last]`` code point ranges, flattened; maps are flattened
    ``code point, count, code points...`` runs.

    Returns:
        ``delete`` and ``space`` (clean_text), ``chinese`` (padded with spaces), ``decompose``
        (NFD of one character), ``ccc`` (canonical combining classes, flattened pairs),
        ``nonspacing`` (marks strip_accents drops), ``lower`` (lowercase of one character),
        ``whitespace`` (the pre-tokenizer removes) and ``punctuation`` (it isolates). A table
        is empty when its flag is off.
    """
    flags = flags or dict.fromkeys(
        ("clean_text", "handle_chinese_chars", "strip_accents", "lowercase"), False
    )
    empty: dict[str, Any] = {"decompose": [], "hangul": False, "ccc": [], "nonspacing": []}
    return {
        **(_clean_tables() if flags["clean_text"] else {"delete": [], "space": []}),
        "chinese": _chinese_table() if flags["handle_chinese_chars"] else [],
        **(_strip_tables() if flags["strip_accents"] else empty),
        "lower": _lower_table() if flags["lowercase"] else [],
        **_pre_tokenizer_tables(),
    }


# Each table depends on the installed tokenizers only, so it is computed once per process.


@functools.cache
def _clean_tables() -> dict[str, list[int]]:
    clean = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=False, strip_accents=False, lowercase=False
    )
    delete, space = [], []
    for code, out in _each(clean.normalize_str, "a"):
        if out == "":
            delete.append(code)
        elif out == " " and code != 0x20:
            space.append(code)
        elif out != chr(code):
            raise ValueError(f"HF's clean_text maps U+{code:04X} to {out!r}; please report.")
    return {"delete": _ranges(delete), "space": _ranges(space)}


@functools.cache
def _chinese_table() -> list[int]:
    padder = normalizers.BertNormalizer(
        clean_text=False, handle_chinese_chars=True, strip_accents=False, lowercase=False
    )
    return _ranges(code for code, out in _each(padder.normalize_str, "a") if out != chr(code))


@functools.cache
def _strip_tables() -> dict[str, Any]:
    nfd = normalizers.NFD()
    decompose = {c: out for c, out in _each(nfd.normalize_str, "\x00") if out != chr(c)}
    _check_hangul(decompose)
    stripper = normalizers.BertNormalizer(
        clean_text=False, handle_chinese_chars=False, strip_accents=True, lowercase=False
    )
    nonspacing = [
        c for c, out in _each(stripper.normalize_str, "\x00") if out == "" and c not in decompose
    ]
    return {
        "decompose": _flat_map({c: d for c, d in decompose.items() if not _is_hangul(c)}),
        "hangul": True,
        "ccc": _combining_classes(nfd, decompose),
        "nonspacing": _ranges(nonspacing),
    }


@functools.cache
def _lower_table() -> list[int]:
    lowercase = normalizers.Lowercase()
    return _flat_map({c: out for c, out in _each(lowercase.normalize_str, "\x00") if out != chr(c)})


@functools.cache
def _pre_tokenizer_tables() -> dict[str, list[int]]:
    whitespace, punctuation = _pre_tokenizer_classes()
    return {"whitespace": _ranges(whitespace), "punctuation": _ranges(punctuation)}


def _each(function: Callable[[str], str], separator: str) -> Iterable[tuple[int, str]]:
    """``function`` of each scalar value alone, computed in one call over all of them.

    ``separator`` must be kept as it is and never be produced by ``function``; it is itself
    asked alone. Every function used here maps characters one by one (NFD only reorders
    marks, and the separators are starters), so the joined call gives each character's own
    result.
    """
    codes = [c for c in _SCALARS if c != ord(separator)]
    outputs = function(separator.join(map(chr, codes))).split(separator)
    if len(outputs) != len(codes):
        raise ValueError(f"probing HF with separator {separator!r} failed; please report.")
    yield from zip(codes, outputs, strict=True)
    yield ord(separator), function(separator)


#: Hangul syllables, which NFD decomposes by arithmetic (Unicode chapter 3.12); the module
#: computes them rather than reading 11,172 entries.
_HANGUL_FIRST, _HANGUL_COUNT = 0xAC00, 11172


def _is_hangul(code: int) -> bool:
    return _HANGUL_FIRST <= code < _HANGUL_FIRST + _HANGUL_COUNT


def _hangul(code: int) -> str:
    """A Hangul syllable's canonical decomposition, by Unicode's arithmetic."""
    index = code - _HANGUL_FIRST
    lead, vowel, tail = 0x1100 + index // 588, 0x1161 + index % 588 // 28, index % 28
    return chr(lead) + chr(vowel) + (chr(0x11A7 + tail) if tail else "")


def _check_hangul(decompose: dict[int, str]) -> None:
    """Check that HF decomposes every Hangul syllable as the module computes it."""
    for code in range(_HANGUL_FIRST, _HANGUL_FIRST + _HANGUL_COUNT):
        if decompose.get(code) != _hangul(code):
            raise ValueError(f"HF's NFD of U+{code:04X} is not Unicode's; please report.")


def _combining_classes(nfd: normalizers.Normalizer, decompose: dict[int, str]) -> list[int]:
    """The canonical combining classes HF's NFD reorders by, as flattened (code, class) pairs.

    HF's NFD (unicode-normalization-alignments) may know fewer characters than Python's
    ``unicodedata``; a character it gives a nonzero class is found by probing: its class is
    above 1 if it moves before ``_CCC_LOW`` (class 1) and below 240 if ``_CCC_HIGH`` (240)
    moves after it. Classes never change once assigned (Unicode's stability policy), so the
    value is Python's for every character HF moves, checked to be nonzero there.
    """
    codes = [c for c in _SCALARS if c != 0 and c not in decompose]
    above_one = nfd.normalize_str("\x00".join(chr(c) + _CCC_LOW for c in codes)).split("\x00")
    below_top = nfd.normalize_str("\x00".join(_CCC_HIGH + chr(c) for c in codes)).split("\x00")
    pairs = []
    for code, first, second in zip(codes, above_one, below_top, strict=True):
        moved = first == _CCC_LOW + chr(code) or second == chr(code) + _CCC_HIGH
        if moved or code in (ord(_CCC_LOW), ord(_CCC_HIGH)):
            value = unicodedata.combining(chr(code))
            if value == 0:
                raise ValueError(
                    f"HF's NFD reorders U+{code:04X}, which Python's unicodedata "
                    f"{unicodedata.unidata_version} gives class 0; please report."
                )
            pairs += [code, value]
    return pairs


def _pre_tokenizer_classes() -> tuple[list[int], list[int]]:
    """Characters BertPreTokenizer removes (whitespace) and isolates (punctuation)."""
    pre = pre_tokenizers.BertPreTokenizer()
    codes = [c for c in _SCALARS if c != 0]
    covered = bytearray(len(codes))
    punctuation = []
    # Character i sits at offset 2 i, between NULs (neither whitespace nor punctuation).
    for _, (start, end) in pre.pre_tokenize_str("\x00".join(map(chr, codes))):
        for offset in range(start + start % 2, end, 2):
            covered[offset // 2] = 1
        if end - start == 1 and start % 2 == 0:
            punctuation.append(codes[start // 2])
    whitespace = [code for code, seen in zip(codes, covered, strict=True) if not seen]
    if [w for w, _ in pre.pre_tokenize_str("a\x00b")] != ["a\x00b"]:
        raise ValueError("HF's BertPreTokenizer splits at NUL; please report.")
    return whitespace, punctuation


def _ranges(codes: Iterable[int]) -> list[int]:
    """Sorted code points as flattened inclusive ``[first, last]`` ranges."""
    flat: list[int] = []
    for code in sorted(codes):
        if flat and flat[-1] == code - 1:
            flat[-1] = code
        else:
            flat += [code, code]
    return flat


def _flat_map(mapping: dict[int, str]) -> list[int]:
    """``{code: text}`` as flattened ``code, len(text), *map(ord, text)`` runs."""
    flat: list[int] = []
    for code in sorted(mapping):
        flat += [code, len(mapping[code]), *map(ord, mapping[code])]
    return flat


def reference_ids(
    tokenizer_path: Path, pooling: fmt.Pooling, texts: Sequence[str]
) -> list[list[int]]:
    """HF's ids of ``texts`` under the family's cuts (no special tokens, no truncation)."""
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    cut = [pooling.cut_text(text) for text in texts]
    encodings = tokenizer.encode_batch(cut, add_special_tokens=False)
    return [pooling.cut_ids(list(e.ids)) for e in encodings]


def _write_parity(folder: Path, manifest: fmt.Manifest) -> None:
    """parity.jsonl: each adversarial text, its ids and the default variant's embedding."""
    from sse_onnx import Encoder

    texts = [text for _, text in adversarial_texts()]
    ids = reference_ids(folder / fmt.TOKENIZER_FILE, manifest.pooling, texts)
    embeddings = Encoder(folder, threads=1).encode(texts, show_progress_bar=False)
    lines = [
        json.dumps(
            {
                "text": text,
                fmt.INPUT_IDS: row,
                fmt.SENTENCE_EMBEDDING: [round(float(x), 7) for x in embedding],
            },
            ensure_ascii=False,
        )
        for text, row, embedding in zip(texts, ids, embeddings, strict=True)
    ]
    (folder / fmt.PARITY_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
