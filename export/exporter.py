"""``export()``: SSE checkpoint in, validated exported folder out. The CLI is a thin layer on it."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx

import sse_onnx
from sse_export.checkpoint import Checkpoint, load_checkpoint
from sse_export.graph import build_graph
from sse_export.validate import VariantReport, format_reports, validate_export
from sse_onnx import format as fmt
from sse_onnx.errors import ParityError

__all__ = ["ExportResult", "export"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote and how it validated.

    Attributes:
        folder: The exported folder.
        manifest: Its manifest.
        reports: One validation report per variant (empty with ``validate=False``).
    """

    folder: Path
    manifest: fmt.Manifest
    reports: list[VariantReport]


def export(
    model: str | os.PathLike[str] | None = None,
    *,
    output: str | os.PathLike[str] | None = None,
    dim: int | None = None,
    variants: Sequence[str] = ("fp32",),
    validate: bool = True,
) -> ExportResult:
    """Export an SSE checkpoint to an ONNX model folder and validate it against PyTorch.

    Args:
        model: Checkpoint folder (or hub id); ``None`` exports the bundled default model.
        output: Folder to write; ``None`` writes ``./<model name>-onnx``.
        dim: Keep the first ``dim`` dimensions (Matryoshka); ``None`` keeps all. Exact,
            because DyT acts per dimension: the table columns and DyT vectors are sliced.
        variants: Model files to write, from :data:`sse_onnx.format.VARIANT_FILES`; the first
            is the folder's default variant.
        validate: Compare every variant with the PyTorch reference on the adversarial set.

    Returns:
        The folder, its manifest and the validation reports.

    Raises:
        CheckpointError: if the checkpoint cannot be read.
        ValueError: for a bad ``dim`` or variant.
        ParityError: if a variant is outside its tolerance; the folder's manifest is removed
            so the runtime cannot load the failed export.

    Example:
        >>> result = export(output="sse-256", dim=256)  # doctest: +SKIP
        >>> result.reports[0].passed  # doctest: +SKIP
        True
    """
    variants = _checked_variants(variants)
    checkpoint = load_checkpoint(model)
    dim = _checked_dim(dim, checkpoint.dim)
    folder = Path(output) if output is not None else Path(f"{checkpoint.name}-onnx")
    folder.mkdir(parents=True, exist_ok=True)
    manifest = _write_folder(folder, checkpoint, dim, variants)
    reports = validate_export(folder, checkpoint, variants) if validate else []
    failed = [report.variant for report in reports if not report.passed]
    if failed:
        (folder / fmt.MANIFEST_FILE).unlink()
        raise ParityError(
            f"Variant(s) {failed} of {checkpoint.name} differ from the PyTorch reference beyond "
            f"tolerance:\n{format_reports(reports)}\n{folder / fmt.MANIFEST_FILE} was removed so "
            "the failed export cannot be loaded; please report this with the table above."
        )
    return ExportResult(folder=folder, manifest=manifest, reports=reports)


def _write_folder(
    folder: Path, checkpoint: Checkpoint, dim: int, variants: Sequence[str]
) -> fmt.Manifest:
    """Write the tokenizer, each variant's model and the manifest."""
    _write_tokenizer(checkpoint.tokenizer_path, folder / fmt.TOKENIZER_FILE)
    entries = {}
    for variant in variants:
        model = build_graph(
            checkpoint.table[:, :dim],
            checkpoint.alpha[:dim],
            checkpoint.beta[:dim],
            checkpoint.bias[:dim],
            variant=variant,
            name=checkpoint.name,
            producer_version=sse_onnx.__version__,
        )
        onnx.save_model(model, folder / fmt.VARIANT_FILES[variant])
        entries[variant] = fmt.FileEntry.of(folder, fmt.VARIANT_FILES[variant])
    manifest = fmt.Manifest(
        model_name=checkpoint.name,
        family="sse",
        dim=dim,
        source_dim=checkpoint.dim,
        vocab_size=checkpoint.vocab_size,
        pad_token_id=_pad_token_id(folder / fmt.TOKENIZER_FILE),
        source_sha256=checkpoint.source_sha256,
        tokenizer=fmt.FileEntry.of(folder, fmt.TOKENIZER_FILE),
        variants=entries,
        default_variant=variants[0],
        package_version=sse_onnx.__version__,
    )
    fmt.write_manifest(folder, manifest)
    return manifest


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
    unknown = [v for v in variants if v not in fmt.VARIANT_FILES]
    if unknown or not variants:
        raise ValueError(
            f"variants {list(variants)} must be a non-empty list of {sorted(fmt.VARIANT_FILES)}."
        )
    return list(dict.fromkeys(variants))


def _checked_dim(dim: int | None, source_dim: int) -> int:
    if dim is None:
        return source_dim
    if isinstance(dim, bool) or not isinstance(dim, int):
        raise TypeError(f"dim must be an int, not {type(dim).__name__}.")
    if not 1 <= dim <= source_dim:
        raise ValueError(
            f"dim={dim} is out of range: the model has {source_dim} dimensions; choose 1 to "
            f"{source_dim} (Matryoshka models are trained for 512/256/128/64/32)."
        )
    return dim
