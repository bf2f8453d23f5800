"""``export()``: checkpoint in, validated exported folder out. The CLI is a thin layer on it."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx

import sse_onnx
from sse_export.checkpoint import Checkpoint, load_checkpoint
from sse_export.dynamic import PRESETS, dequantized_table, quantize_with_preset
from sse_export.families import is_matryoshka
from sse_export.graph import build_graph
from sse_export.mobile import check_mobile_variants, write_bundle
from sse_export.quantize import decoded_table
from sse_export.report import REPORT_JSON, REPORT_MD, QualityRow, quality_report, write_report
from sse_export.validate import VariantReport, format_reports, validate_export
from sse_export.web import MODULE_FILE, WEB_TOKENIZER_FILE, write_web
from sse_onnx import folder as fmt
from sse_onnx.errors import CheckpointError, ParityError

__all__ = ["TARGETS", "ExportResult", "export"]

#: What :func:`export` writes: an ONNX model folder, or a mobile bundle (:mod:`sse_export.mobile`).
TARGETS = ("onnx", "mobile", "web")
#: Every file name an export of either target can write. ``overwrite=True`` removes only these
#: from the output folder; a folder holding anything else is refused, never cleaned.
EXPORT_FILES = frozenset(
    {
        fmt.MANIFEST_FILE,
        fmt.TOKENIZER_FILE,
        *fmt.VARIANT_FILES.values(),
        *fmt.ORT_VARIANT_FILES.values(),
        fmt.TOKENIZER_CONFIG_FILE,
        fmt.VOCAB_FILE,
        fmt.REQUIRED_OPERATORS_FILE,
        fmt.PARITY_FILE,
        fmt.INTEGRATION_FILE,
        REPORT_JSON,
        REPORT_MD,
        MODULE_FILE,
        WEB_TOKENIZER_FILE,
    }
)

logger = logging.getLogger(__name__)

Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote and how it validated.

    Attributes:
        folder: The exported folder.
        manifest: Its manifest.
        reports: One parity report per variant (empty with ``validate=False``).
        quality: One quality row per variant (empty with ``report=False``).
    """

    folder: Path
    manifest: fmt.Manifest
    reports: list[VariantReport]
    quality: list[QualityRow]


def export(
    model: str | os.PathLike[str] | None = None,
    *,
    output: str | os.PathLike[str] | None = None,
    dim: int | None = None,
    variants: Sequence[str] = ("fp32",),
    default_variant: str | None = None,
    validate: bool = True,
    report: bool = True,
    eval_data: str | os.PathLike[str] | None = None,
    target: str = "onnx",
    overwrite: bool = False,
) -> ExportResult:
    """Export a checkpoint to an ONNX model folder and validate it against PyTorch.

    The checkpoint's family (SSE, sentence-transformers StaticEmbedding or Model2Vec) is
    detected from its files and its semantics recorded in the manifest
    (:mod:`sse_export.families`). The model files, tokenizer and manifest are a function of
    the arguments only: the same call gives byte-identical files on any machine, whatever
    lies around it (the optional quality report holds measurements).

    Args:
        model: Checkpoint folder (or hub id); ``None`` exports the bundled default model.
        output: Folder to write; ``None`` writes ``./<model name>-onnx`` (``-mobile``, ``-web``
            for the other targets).
        dim: Keep the first ``dim`` dimensions (Matryoshka); ``None`` keeps all. Exact,
            because the head acts per dimension: the table columns and DyT vectors are
            sliced (quantized variants quantize the kept columns). A warning is logged when
            the model card and config do not say the model is Matryoshka-trained
            (:func:`sse_export.families.is_matryoshka`): then the first dims need not be a
            good embedding.
        variants: Model files to write, from :data:`sse_onnx.folder.VARIANT_FILES`.
        default_variant: The variant ``Encoder`` loads by default; ``None`` means the first of
            ``variants``. Never chosen from measurements, so the manifest does not depend on
            whether a quality report ran (the report names the smallest variant within its
            bounds, :func:`sse_export.report.smallest_within_bounds`).
        validate: Check every variant against the PyTorch reference on the adversarial set.
        report: With ``eval_data``, measure each variant's loss against fp32 and write
            ``quality.json``/``.md``; ``False`` skips the report even then.
        eval_data: Evaluation data root (BEIR folders) for the quality report; the report runs
            only when it is given (no folder is searched for otherwise).
        target: ``"onnx"``, or ``"mobile"``: the validated export converted into a bundle for
            Android and iOS apps (``.ort`` models, operator config, tokenizer files,
            INTEGRATION.md; :func:`sse_export.mobile.write_bundle`), or ``"web"``: a folder for
            browser and Node apps (:func:`sse_export.web.write_web`). One of :data:`TARGETS`.
        overwrite: Replace an earlier export in ``output``: its files (:data:`EXPORT_FILES`) are
            removed before writing, so the folder ends with exactly the files of the new
            manifest (and the report, if asked). Without it a non-empty ``output`` is refused;
            a folder holding any other file is refused either way, naming the files.

    Returns:
        The folder, its manifest, the validation reports and the quality rows.

    Raises:
        CheckpointError: if the checkpoint cannot be read.
        ValueError: for a bad ``dim`` or variant, or an ``output`` that is not empty (see
            ``overwrite``).
        ParityError: if a variant does not reproduce the reference; the folder's manifest is
            removed so the runtime cannot load the failed export.

    Example:
        >>> result = export(output="sse-256", dim=256, variants=["fp32", "int8"])  # doctest: +SKIP
        >>> [r.passed for r in result.reports]  # doctest: +SKIP
        [True, True]
    """
    variants = _checked_variants(variants)
    if default_variant is not None and default_variant not in variants:
        raise ValueError(f"default_variant={default_variant!r} is not among variants {variants}.")
    if target not in TARGETS:
        raise ValueError(f"target={target!r} is not one of {list(TARGETS)}.")
    data_dir = _data_dir(eval_data) if report else None
    if target in ("mobile", "web"):
        if target == "mobile":
            check_mobile_variants(variants)
        if output is not None:
            _stale_files(Path(output), overwrite)  # refuse before the export, not after it
        with tempfile.TemporaryDirectory(prefix="sse-export-") as onnx_folder:
            result = export(
                model,
                output=onnx_folder,
                dim=dim,
                variants=variants,
                default_variant=default_variant,
                validate=validate,
                report=report,
                eval_data=eval_data,
            )
            return _bundle(result, output, overwrite, target)
    checkpoint = load_checkpoint(model)
    dim = _checked_dim(dim, checkpoint.dim)
    if "fp16" in variants:
        _check_fp16_range(checkpoint, dim)
    if dim < checkpoint.dim and not is_matryoshka(checkpoint.folder):
        logger.warning(
            "Keeping %d of %d dimensions, but the model card and config of %s do not say it is "
            "Matryoshka-trained, so its first dimensions may embed poorly; the export is exact, "
            "check its quality (e.g. quality.md's nDCG@10 columns) before relying on it.",
            dim,
            checkpoint.dim,
            checkpoint.name,
        )
    folder = _output_folder(output, f"{checkpoint.name}-onnx", overwrite)
    manifest, stored = _write_folder(folder, checkpoint, dim, variants, default_variant)
    reports = validate_export(folder, checkpoint, stored) if validate else []
    failed = [r.variant for r in reports if not r.passed]
    if failed:
        (folder / fmt.MANIFEST_FILE).unlink()
        raise ParityError(
            f"Variant(s) {failed} of {checkpoint.name} differ from the PyTorch reference beyond "
            f"tolerance:\n{format_reports(reports)}\n{folder / fmt.MANIFEST_FILE} was removed so "
            "the failed export cannot be loaded; please report this with the table above."
        )
    quality = quality_report(folder, checkpoint, variants, data_dir) if data_dir else []
    if quality:
        write_report(folder, quality)
    return ExportResult(folder=folder, manifest=manifest, reports=reports, quality=quality)


def _write_folder(
    folder: Path,
    checkpoint: Checkpoint,
    dim: int,
    variants: Sequence[str],
    default_variant: str | None,
) -> tuple[fmt.Manifest, dict[str, Array]]:
    """Write the tokenizer, each variant's model and the manifest.

    Returns:
        The manifest, and each variant's table as stored, decoded to float32.
    """
    _write_tokenizer(checkpoint.tokenizer_path, folder / fmt.TOKENIZER_FILE)
    entries, stored = {}, {}
    for variant in variants:
        model, stored[variant] = _build_variant(checkpoint, dim, variant)
        onnx.save_model(model, folder / fmt.VARIANT_FILES[variant])
        entries[variant] = fmt.FileEntry.of(folder, fmt.VARIANT_FILES[variant])
    manifest = fmt.Manifest(
        model_name=checkpoint.name,
        family=checkpoint.family,
        dim=dim,
        source_dim=checkpoint.dim,
        vocab_size=checkpoint.vocab_size,
        pad_token_id=_pad_token_id(folder / fmt.TOKENIZER_FILE),
        source_sha256=checkpoint.source_sha256,
        tokenizer=fmt.FileEntry.of(folder, fmt.TOKENIZER_FILE),
        variants=entries,
        default_variant=default_variant or variants[0],
        package_version=sse_onnx.__version__,
        pooling=checkpoint.pooling,
    )
    fmt.write_manifest(folder, manifest)
    return manifest, stored


def _build_variant(checkpoint: Checkpoint, dim: int, variant: str) -> tuple[onnx.ModelProto, Array]:
    """The variant's graph, and its table as stored (decoded to float32)."""
    table = checkpoint.table[:, :dim]
    head = checkpoint.dyt(dim) or ()
    options = {
        "skip_token_ids": checkpoint.pooling.skip_token_ids,
        "name": checkpoint.name,
        "producer_version": sse_onnx.__version__,
    }
    if variant in PRESETS:
        try:
            model = quantize_with_preset(build_graph(table, *head, **options), PRESETS[variant])
        except ImportError as exc:
            raise ValueError(
                f"variant {variant!r} is made with optimum's quantizer, which is not installed "
                f"({exc}); install the exporter with its dependencies: `pip install ./export` "
                "from the sse-onnx source folder."
            ) from exc
        return model, dequantized_table(model)
    return build_graph(table, *head, variant=variant, **options), decoded_table(table, variant)


def _bundle(
    result: ExportResult, output: str | os.PathLike[str] | None, overwrite: bool, target: str
) -> ExportResult:
    """Convert an ONNX export into a mobile bundle or a web folder (:mod:`sse_export.web`) at
    ``output``, with its quality report."""
    bundle = _output_folder(output, f"{result.manifest.model_name}-{target}", overwrite)
    write = write_bundle if target == "mobile" else write_web
    manifest = write(result.folder, bundle)
    for name in (REPORT_JSON, REPORT_MD):
        if (result.folder / name).is_file():
            shutil.copyfile(result.folder / name, bundle / name)
    return replace(result, folder=bundle, manifest=manifest)


def _output_folder(output: str | os.PathLike[str] | None, default: str, overwrite: bool) -> Path:
    """The folder to write (``default`` when ``output`` is ``None``), created if needed and
    emptied of an earlier export's files if ``overwrite`` (see :func:`_stale_files`)."""
    folder = Path(output) if output is not None else Path(default)
    for path in _stale_files(folder, overwrite):
        path.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _stale_files(folder: Path, overwrite: bool) -> list[Path]:
    """The files of an earlier export in ``folder``, which ``overwrite`` allows to remove.

    Raises:
        ValueError: if ``folder`` is a file, holds anything an export does not write (named,
            whatever ``overwrite`` says), or holds an earlier export and ``overwrite`` is off.
    """
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"output {folder} is a file; pass a folder to write the export into.")
    if not folder.is_dir():
        return []
    present = sorted(folder.iterdir())
    unrelated = [p.name for p in present if p.name not in EXPORT_FILES or not p.is_file()]
    if unrelated:
        shown = ", ".join(unrelated[:5]) + (
            f" and {len(unrelated) - 5} more" if unrelated[5:] else ""
        )
        raise ValueError(
            f"output {folder} holds files an sse-onnx export does not write ({shown}); nothing "
            "was changed. Export into a new or empty folder, or move those files away."
        )
    if present and not overwrite:
        raise ValueError(
            f"output {folder} already holds an export ({', '.join(p.name for p in present)}); "
            "pass --overwrite (overwrite=True) to replace it, or choose another folder."
        )
    return present


def _data_dir(eval_data: str | os.PathLike[str] | None) -> Path | None:
    """The evaluation data root ``eval_data`` (which must be a folder), or ``None``."""
    if eval_data is None:
        return None
    if not Path(eval_data).is_dir():
        raise ValueError(
            f"eval_data {eval_data} is not a folder; pass the evaluation data root (the folder "
            "holding the retrieval and STS sets) or leave it unset."
        )
    return Path(eval_data)


def _write_tokenizer(source: Path, target: Path) -> None:
    """Copy tokenizer.json with padding, truncation and the post-processor switched off."""
    config = json.loads(source.read_text(encoding="utf-8"))
    config.update(padding=None, truncation=None, post_processor=None)
    target.write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")


def _pad_token_id(tokenizer_path: Path) -> int:
    """Id of the tokenizer's [PAD] token, or 0 (pads are masked, so any valid id works)."""
    from tokenizers import Tokenizer

    pad = Tokenizer.from_file(str(tokenizer_path)).token_to_id("[PAD]")
    return 0 if pad is None else int(pad)


def _checked_variants(variants: Sequence[str]) -> list[str]:
    if isinstance(variants, str):
        variants = [variants]
    if not isinstance(variants, Sequence):
        raise TypeError(f"variants must be a list of variant names, not {type(variants).__name__}.")
    unknown = [v for v in variants if v not in fmt.VARIANT_FILES]
    if unknown or not variants:
        raise ValueError(
            f"variants {list(variants)} must be a non-empty list of {sorted(fmt.VARIANT_FILES)}."
        )
    return list(dict.fromkeys(variants))


def _check_fp16_range(checkpoint: Checkpoint, dim: int) -> None:
    largest = float(np.abs(checkpoint.table[:, :dim]).max(initial=0.0))
    if largest > float(np.finfo(np.float16).max):
        raise CheckpointError(
            f"{checkpoint.name}'s table holds values up to {largest:.4g}, beyond float16's "
            "largest (65504), so the fp16 variant would store inf; export fp32 or int8 instead."
        )


def _checked_dim(dim: int | None, source_dim: int) -> int:
    if dim is None:
        return source_dim
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"dim must be an int, not {type(dim).__name__}.")
    if not 1 <= dim <= source_dim:
        raise ValueError(
            f"dim={dim} is out of range: the model has {source_dim} dimensions; choose 1 to "
            f"{source_dim}."
        )
    return int(dim)
