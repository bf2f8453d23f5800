"""The mobile bundle (``sse-export --target mobile``): an export turned into a folder apps ship.

:func:`write_bundle` converts a validated export folder for Android and iOS apps:

- each variant in onnxruntime's ORT format, made by onnxruntime's own converter
  (``onnxruntime.tools.convert_onnx_models_to_ort``, "Fixed" optimization style), and checked
  against the ``.onnx`` file it came from on the adversarial set's token ids (the converter
  saves the graph onnxruntime runs for the ``.onnx``, so they agree exactly);
- ``required_operators.config``, the converter's list of the operators of every ``.ort`` file,
  for a reduced onnxruntime build (``--include_ops_by_config``); every one must be a standard
  ONNX operator, checked here;
- the tokenizer as ``tokenizer.json``, ``tokenizer_config.json`` (the class name
  swift-transformers' ``AutoTokenizer`` needs) and ``vocab.txt``;
- ``parity.jsonl``: the adversarial texts with their reference token ids and the default
  variant's normalised embedding, for an app's own tests of its tokenizer and runtime;
- the manifest, whose variants are the ``.ort`` files (:class:`sse_onnx.Encoder` loads the
  bundle too), and ``INTEGRATION.md`` (:mod:`sse_export.integration`).

Only variants made of standard ONNX operators are bundled (:data:`MOBILE_VARIANTS`):
``int4_block`` reads its table with the contrib operator ``com.microsoft.GatherBlockQuantized``,
which an onnxruntime built without contrib operators lacks, and missing custom operators are
what breaks on-device runtimes most often; ``int4`` is the 4-bit variant made of standard ops.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Tokenizer

from sse_export.adversarial import adversarial_texts
from sse_export.integration import integration_guide
from sse_onnx import folder as fmt
from sse_onnx.embeddings import normalize
from sse_onnx.errors import ParityError, SSEError
from sse_onnx.tokenizer import bert_wordpiece_mismatches

__all__ = [
    "MOBILE_VARIANTS",
    "ORT_TOLERANCE",
    "check_mobile_variants",
    "convert_to_ort",
    "write_bundle",
]

logger = logging.getLogger(__name__)

#: Variants a mobile bundle may hold: those made of standard ONNX operators only.
MOBILE_VARIANTS = tuple(variant for variant in fmt.VARIANT_FILES if variant != "int4_block")
#: Largest allowed max abs diff between the outputs of an ``.ort`` file and of its ``.onnx``
#: (measured: 0.0 for every variant).
ORT_TOLERANCE = 1e-6
#: The operator domain of standard ONNX operators, as the operator config names it.
STANDARD_DOMAIN = "ai.onnx"

Ids = npt.NDArray[np.int64]


def check_mobile_variants(variants: Iterable[str]) -> None:
    """Raise ``ValueError`` naming any variant a mobile bundle cannot hold."""
    refused = [variant for variant in variants if variant not in MOBILE_VARIANTS]
    if refused:
        raise ValueError(
            f"variant(s) {refused} cannot go into a mobile bundle: int4_block reads its table "
            "with the contrib operator com.microsoft.GatherBlockQuantized, which onnxruntime "
            "builds without contrib operators lack. A bundle holds only variants of standard "
            f"ONNX operators, {list(MOBILE_VARIANTS)}; for 4 bits choose int4."
        )


def write_bundle(source: str | Path, bundle: str | Path) -> fmt.Manifest:
    """Convert the export folder ``source`` into a mobile bundle in ``bundle``.

    Args:
        source: A folder written by :func:`sse_export.export` (``.onnx`` variants).
        bundle: The folder to write; files of the same names are replaced.

    Returns:
        The bundle's manifest (its variants are the ``.ort`` files).

    Raises:
        ValueError: for a variant outside :data:`MOBILE_VARIANTS` or a tokenizer other than
            BERT-style WordPiece (:func:`sse_onnx.tokenizer.bert_wordpiece_mismatches`).
        SSEError: if onnxruntime's converter put a non-standard operator into a model.
        ParityError: if an ``.ort`` file's outputs differ from its ``.onnx``'s; the bundle is
            left without a manifest, so it cannot be loaded.
    """
    source, bundle = Path(source), Path(bundle)
    if bundle.resolve() == source.resolve():
        raise ValueError(f"write the bundle to another folder than the export {source}.")
    manifest = fmt.read_manifest(source)
    check_mobile_variants(manifest.variants)
    vocab = _vocabulary(source / fmt.TOKENIZER_FILE)
    bundle.mkdir(parents=True, exist_ok=True)
    (bundle / fmt.MANIFEST_FILE).unlink(missing_ok=True)
    _convert(source, bundle, manifest.variants)
    texts, ids = _reference_ids(source / fmt.TOKENIZER_FILE, manifest.pooling)
    for variant in manifest.variants:
        _check_parity(
            source / fmt.VARIANT_FILES[variant],
            bundle / fmt.ORT_VARIANT_FILES[variant],
            ids,
            manifest.pad_token_id,
        )
    shutil.copyfile(source / fmt.TOKENIZER_FILE, bundle / fmt.TOKENIZER_FILE)
    _write_tokenizer_config(bundle)
    (bundle / fmt.VOCAB_FILE).write_text("".join(f"{t}\n" for t in vocab), encoding="utf-8")
    default = bundle / fmt.ORT_VARIANT_FILES[manifest.default_variant]
    _write_parity(bundle / fmt.PARITY_FILE, texts, ids, default, manifest.pad_token_id)
    bundled = replace(
        manifest,
        tokenizer=fmt.FileEntry.of(bundle, fmt.TOKENIZER_FILE),
        variants={v: fmt.FileEntry.of(bundle, fmt.ORT_VARIANT_FILES[v]) for v in manifest.variants},
    )
    guide = integration_guide(bundled, onnxruntime_version=ort.__version__)
    (bundle / fmt.INTEGRATION_FILE).write_text(guide, encoding="utf-8")
    fmt.write_manifest(bundle, bundled)
    return bundled


def _vocabulary(tokenizer_path: Path) -> list[str]:
    """The tokens in id order, for vocab.txt; only WordPiece (BERT-style) tokenizers."""
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    mismatches = bert_wordpiece_mismatches(tokenizer)
    if mismatches:
        raise ValueError(
            f"{tokenizer_path} is a {type(tokenizer.model).__name__} tokenizer; a mobile bundle "
            "is made for WordPiece (BERT-style) tokenizers, whose app-side tokenizers "
            f"INTEGRATION.md names, and this one has {'; '.join(mismatches)}. Export with the "
            "default target and tokenize with a binding of Hugging Face tokenizers."
        )
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.__getitem__)
    if [vocab[t] for t in tokens] != list(range(len(tokens))) or any("\n" in t for t in tokens):
        raise ValueError(
            f"{tokenizer_path}: token ids are not 0..{len(tokens) - 1} or a token holds a line "
            "break, so no vocab.txt can list the token of id i on line i + 1."
        )
    return tokens


def convert_to_ort(files: Sequence[Path], folder: Path) -> list[Path]:
    """Convert ``.onnx`` files to ORT format with the running onnxruntime's own converter.

    The converter's "Fixed" optimization style saves the graph onnxruntime runs for the
    ``.onnx`` file, so both give the same outputs.

    Args:
        files: The ``.onnx`` files, of distinct names.
        folder: Where the ``.ort`` files and the converter's ``required_operators.config`` go.

    Returns:
        The ``.ort`` file of each of ``files``, in order (``model_int8.onnx`` ->
        ``folder / "model_int8.ort"``).
    """
    from onnxruntime.tools.convert_onnx_models_to_ort import (
        OptimizationStyle,
        convert_onnx_models_to_ort,
    )

    with tempfile.TemporaryDirectory(prefix="sse-ort-") as staging:
        # The converter takes every .onnx file of a folder: give it exactly these.
        for file in files:
            shutil.copyfile(file, Path(staging, file.name))
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            convert_onnx_models_to_ort(
                Path(staging), output_dir=folder, optimization_styles=[OptimizationStyle.Fixed]
            )
        logger.debug("onnxruntime's converter: %s", printed.getvalue())
    return [folder / (file.stem + ".ort") for file in files]


def _convert(source: Path, bundle: Path, variants: Iterable[str]) -> None:
    """Run onnxruntime's converter on the variants; rewrite the config's header."""
    convert_to_ort([source / fmt.VARIANT_FILES[variant] for variant in variants], bundle)
    config = bundle / fmt.REQUIRED_OPERATORS_FILE
    operators = [
        line for line in config.read_text(encoding="utf-8").splitlines() if line[:1] != "#"
    ]
    foreign = [line for line in operators if line.split(";")[0] != STANDARD_DOMAIN]
    if foreign:
        raise SSEError(
            f"onnxruntime {ort.__version__}'s converter produced non-standard operators "
            f"{foreign}, which reduced mobile builds may lack; please report this."
        )
    files = sorted(fmt.ORT_VARIANT_FILES[v] for v in variants)
    header = [
        f"# Operators of {', '.join(files)}, for onnxruntime's reduced build",
        "# (--include_ops_by_config). Written by the converter of onnxruntime "
        f"{ort.__version__}: build the same release.",
    ]
    config.write_text("\n".join([*header, *operators]) + "\n", encoding="utf-8")


def _reference_ids(tokenizer_path: Path, pooling: fmt.Pooling) -> tuple[list[str], list[Ids]]:
    """The adversarial texts and their ids under the manifest's rules (HF, no special tokens)."""
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    texts = [text for _, text in adversarial_texts()]
    ids = []
    for text in texts:
        encoding = tokenizer.encode(pooling.cut_text(text), add_special_tokens=False)
        ids.append(np.array(pooling.cut_ids(encoding.ids), dtype=np.int64))
    return texts, ids


def _feeds(ids: Ids, pad_token_id: int) -> dict[str, Ids]:
    """One text's graph inputs; an empty text is one masked pad (every variant accepts it)."""
    if ids.size == 0:
        return {
            fmt.INPUT_IDS: np.full((1, 1), pad_token_id, dtype=np.int64),
            fmt.ATTENTION_MASK: np.zeros((1, 1), dtype=np.int64),
        }
    return {fmt.INPUT_IDS: ids[None, :], fmt.ATTENTION_MASK: np.ones((1, ids.size), np.int64)}


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _check_parity(onnx_path: Path, ort_path: Path, ids: Sequence[Ids], pad_token_id: int) -> None:
    """Raise ParityError if the .ort file's outputs differ from the .onnx file's."""
    reference, converted = _session(onnx_path), _session(ort_path)
    worst = 0.0
    for row in ids:
        feeds = _feeds(row, pad_token_id)
        for a, b in zip(reference.run(None, feeds), converted.run(None, feeds), strict=True):
            worst = max(worst, float(np.abs(a - b).max()))
    logger.info("%s: max abs diff from %s: %.1e", ort_path.name, onnx_path.name, worst)
    if worst > ORT_TOLERANCE:
        raise ParityError(
            f"{ort_path.name} differs from {onnx_path.name} by {worst:.2e} (allowed "
            f"{ORT_TOLERANCE:.0e}) on the adversarial set; the bundle was left without a "
            "manifest. Please report this with your onnxruntime version."
        )


def _write_tokenizer_config(bundle: Path) -> None:
    """tokenizer_config.json: the class and settings swift-transformers reads."""
    config = json.loads((bundle / fmt.TOKENIZER_FILE).read_text(encoding="utf-8"))
    normalizer = config.get("normalizer") or {}
    settings = {
        "tokenizer_class": "BertTokenizer",
        "do_lower_case": bool(normalizer.get("lowercase", False)),
        "handle_chinese_chars": bool(normalizer.get("handle_chinese_chars", False)),
        "unk_token": config["model"].get("unk_token", "[UNK]"),
    }
    (bundle / fmt.TOKENIZER_CONFIG_FILE).write_text(
        json.dumps(settings, indent=2) + "\n", encoding="utf-8"
    )


def _write_parity(
    path: Path, texts: Sequence[str], ids: Sequence[Ids], model: Path, pad_token_id: int
) -> None:
    """One JSON line per text: the text, its reference ids, the normalised embedding."""
    session = _session(model)
    lines = []
    for text, row in zip(texts, ids, strict=True):
        (embedding,) = session.run([fmt.SENTENCE_EMBEDDING], _feeds(row, pad_token_id))
        record = {
            "text": text,
            fmt.INPUT_IDS: row.tolist(),
            fmt.SENTENCE_EMBEDDING: [round(float(x), 7) for x in normalize(embedding)[0]],
        }
        lines.append(json.dumps(record, ensure_ascii=False))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
