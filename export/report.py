"""The quality report of an export: what each variant costs against the exact fp32 model.

For each variant: file size (and its ratio to the fp32 file of the same dim), max abs diff and
min/mean cosine of normalised outputs against the fp32 reference on the adversarial set and on
real texts (the first 5,000 SciFact abstracts), and nDCG@10 on SciFact, Vaswani and Cranfield
beside the fp32 reference's. Real-data columns are left empty where the evaluation data is
absent. Written next to the models as ``quality.json`` and ``quality.md``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sse_export.adversarial import adversarial_texts
from sse_export.checkpoint import Checkpoint
from sse_export.evaluate import RetrievalData, load_named, retrieval_ndcg_from_embeddings
from sse_export.graph import build_graph
from sse_export.reference import SSE, reference_ids
from sse_onnx import Encoder
from sse_onnx.embeddings import normalize
from sse_onnx.folder import VARIANT_FILES

__all__ = [
    "BOUNDS",
    "REPORT_JSON",
    "REPORT_MD",
    "QualityRow",
    "quality_report",
    "smallest_within_bounds",
    "write_report",
]

REPORT_JSON = "quality.json"
REPORT_MD = "quality.md"
REAL_TEXTS = 5_000
RETRIEVAL_SETS = ("scifact", "vaswani", "cranfield")


@dataclass(frozen=True)
class Bound:
    """The loss a variant may have and still be chosen as a folder's default.

    Attributes:
        max_size_ratio: Largest file size relative to fp32.
        min_cosine: Lowest cosine with fp32 on the real texts.
        max_ndcg_drop: Largest |delta nDCG@10| on any retrieval set.
        max_raw_diff: Largest abs diff before normalisation (adversarial set).
    """

    max_size_ratio: float = 1.0
    min_cosine: float | None = None
    max_ndcg_drop: float | None = None
    max_raw_diff: float | None = None


#: Bounds per variant (int8_dynamic has none: it is reported, never chosen by default).
BOUNDS: dict[str, Bound] = {
    "fp32": Bound(),
    "fp16": Bound(max_raw_diff=1e-3),
    "int8": Bound(max_size_ratio=0.27, min_cosine=0.999, max_ndcg_drop=0.002),
    "int4": Bound(max_size_ratio=0.17, max_ndcg_drop=0.01),
    "int4_block": Bound(max_size_ratio=0.17, max_ndcg_drop=0.01),
}


@dataclass(frozen=True)
class Agreement:
    """Agreement of normalised outputs with the fp32 reference on a text set."""

    texts: int
    max_abs_diff: float
    min_cosine: float
    mean_cosine: float


@dataclass(frozen=True)
class QualityRow:
    """One variant of an export, measured against the fp32 reference."""

    variant: str
    dim: int
    bytes: int
    size_ratio: float
    max_raw_diff: float
    adversarial: Agreement
    real: Agreement | None
    ndcg: dict[str, float] = field(default_factory=dict)
    ndcg_fp32: dict[str, float] = field(default_factory=dict)
    within_bounds: bool | None = None

    @property
    def ndcg_delta(self) -> dict[str, float]:
        """nDCG@10 of the variant minus that of the fp32 reference, per set."""
        return {name: self.ndcg[name] - self.ndcg_fp32[name] for name in self.ndcg}


def quality_report(
    folder: Path,
    checkpoint: Checkpoint,
    variants: Sequence[str],
    data_dir: Path | None,
) -> list[QualityRow]:
    """Measure every variant of an exported folder against the fp32 reference.

    Args:
        folder: The exported folder.
        checkpoint: Its source checkpoint.
        variants: The variants to measure.
        data_dir: The evaluation data root (BEIR folders), or ``None`` to skip real data.
    """
    reference = _Reference(checkpoint, Encoder(folder, variant=variants[0]).dim)
    fp32_bytes = _fp32_bytes(folder, checkpoint, reference.dim, variants)
    adversarial = [text for _, text in adversarial_texts()]
    datasets = {name: load_named(name, data_dir) for name in RETRIEVAL_SETS} if data_dir else {}
    retrieval = {name: data for name, data in datasets.items() if isinstance(data, RetrievalData)}
    real = retrieval["scifact"].doc_texts[:REAL_TEXTS] if "scifact" in retrieval else []
    ndcg_fp32 = {name: reference.ndcg(data) for name, data in retrieval.items()}
    rows = []
    for variant in variants:
        encoder = Encoder(folder, variant=variant)
        raw = encoder.encode(adversarial, normalize_embeddings=False, show_progress_bar=False)
        size = (folder / VARIANT_FILES[variant]).stat().st_size
        row = QualityRow(
            variant=variant,
            dim=encoder.dim,
            bytes=size,
            size_ratio=size / fp32_bytes,
            max_raw_diff=float(np.abs(raw - reference.raw(adversarial)).max()),
            adversarial=_agreement(normalize(raw), reference.embed(adversarial)),
            real=(
                _agreement(encoder.encode(real, show_progress_bar=False), reference.embed(real))
                if real
                else None
            ),
            ndcg={name: _ndcg(encoder, data) for name, data in retrieval.items()},
            ndcg_fp32=ndcg_fp32,
        )
        rows.append(_with_verdict(row))
    return rows


class _Reference:
    """The fp32 PyTorch reference at the exported dim, tokenizing like the checkpoint."""

    def __init__(self, checkpoint: Checkpoint, dim: int) -> None:
        self.dim = dim
        self._checkpoint = checkpoint
        self._module = SSE.from_checkpoint(checkpoint, dim)

    def raw(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        out: npt.NDArray[np.float32] = self._module.embed(reference_ids(self._checkpoint, texts))
        return out

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        return normalize(self.raw(texts))

    def ndcg(self, data: RetrievalData) -> float:
        queries, docs = self.embed(data.query_texts), self.embed(data.doc_texts)
        return float(retrieval_ndcg_from_embeddings(data, queries, docs))


def _ndcg(encoder: Encoder, data: RetrievalData) -> float:
    queries = encoder.encode(data.query_texts, show_progress_bar=False)
    docs = encoder.encode(data.doc_texts, show_progress_bar=False)
    return float(retrieval_ndcg_from_embeddings(data, queries, docs))


def _agreement(got: npt.NDArray[np.float32], expected: npt.NDArray[np.float32]) -> Agreement:
    cosines = np.einsum("ij,ij->i", got.astype(np.float64), expected.astype(np.float64))
    # Texts with an all-zero reference (an empty bag with bias 0) have no direction to compare.
    nonzero = np.linalg.norm(expected, axis=1) > 0
    return Agreement(
        texts=len(got),
        max_abs_diff=float(np.abs(got - expected).max(initial=0.0)),
        min_cosine=float(cosines[nonzero].min(initial=1.0)),
        mean_cosine=float(cosines[nonzero].mean()) if nonzero.any() else 1.0,
    )


def _fp32_bytes(folder: Path, checkpoint: Checkpoint, dim: int, variants: Sequence[str]) -> int:
    """Size of the fp32 model of this dim: its file if exported, else built in memory."""
    if "fp32" in variants:
        return (folder / VARIANT_FILES["fp32"]).stat().st_size
    model = build_graph(
        checkpoint.table[:, :dim],
        *(checkpoint.dyt(dim) or ()),
        skip_token_ids=checkpoint.pooling.skip_token_ids,
    )
    return int(model.ByteSize())


def _with_verdict(row: QualityRow) -> QualityRow:
    """Set ``within_bounds``: None where the bound needs data that was not measured."""
    bound = BOUNDS.get(row.variant)
    if bound is None:
        return row
    checks = [row.size_ratio <= bound.max_size_ratio]
    if bound.max_raw_diff is not None:
        checks.append(row.max_raw_diff <= bound.max_raw_diff)
    if bound.min_cosine is not None:
        if row.real is None:
            return row
        checks.append(row.real.min_cosine >= bound.min_cosine)
    if bound.max_ndcg_drop is not None:
        if len(row.ndcg) < len(RETRIEVAL_SETS):
            return row
        checks.append(all(abs(d) <= bound.max_ndcg_drop for d in row.ndcg_delta.values()))
    return replace(row, within_bounds=all(checks))


def smallest_within_bounds(rows: Sequence[QualityRow]) -> str | None:
    """The smallest variant measured to be within its bounds, or ``None`` if none is."""
    fits = [row for row in rows if row.within_bounds]
    return min(fits, key=lambda row: row.bytes).variant if fits else None


def write_report(folder: Path, rows: Sequence[QualityRow]) -> tuple[Path, Path]:
    """Write ``quality.json`` and ``quality.md`` into ``folder``; return their paths."""
    data = [{**asdict(row), "ndcg_delta": row.ndcg_delta} for row in rows]
    json_path = folder / REPORT_JSON
    json_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    md_path = folder / REPORT_MD
    md_path.write_text(format_markdown(rows) + "\n", encoding="utf-8")
    return json_path, md_path


def format_markdown(rows: Sequence[QualityRow]) -> str:
    """A markdown table: one row per variant, losses against the fp32 reference."""
    sets = sorted({name for row in rows for name in row.ndcg}, key=RETRIEVAL_SETS.index)
    header = [
        "variant",
        "dim",
        "size MB",
        "x fp32",
        "adversarial min cos",
        "real min / mean cos",
        "real max abs diff",
        *(f"{name} nDCG@10 (Δ)" for name in sets),
        "within bounds",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        real = f"{row.real.min_cosine:.5f} / {row.real.mean_cosine:.6f}" if row.real else "no data"
        cells = [
            row.variant,
            str(row.dim),
            f"{row.bytes / 1e6:.2f}",
            f"{row.size_ratio:.3f}",
            f"{row.adversarial.min_cosine:.5f}",
            real,
            f"{row.real.max_abs_diff:.2e}" if row.real else "no data",
            *(f"{row.ndcg[name]:.4f} ({row.ndcg_delta[name]:+.4f})" for name in sets),
            {True: "yes", False: "no", None: "not measured"}[row.within_bounds],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
