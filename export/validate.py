"""Validation of an export: the runtime on the exported folder against the PyTorch reference.

The reference tokenizes with the *source* checkpoint's tokenizer under its family's rules
(:func:`sse_export.reference.reference_ids`) and pools with :class:`sse_export.reference.SSE`.
Each variant is checked twice:

- **parity** with the reference run on the table *as the variant stores it* (decoded to
  float32): this must hold to float32 rounding for every variant, and fails the export
  otherwise — it catches a wrong graph, tokenizer or runtime;
- **loss** against the fp32 reference: what the storage costs (zero for fp32), reported.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from sse_export.adversarial import adversarial_texts
from sse_export.checkpoint import Checkpoint
from sse_export.reference import SSE, reference_ids
from sse_onnx import Encoder
from sse_onnx.embeddings import normalize

__all__ = ["LONG_TOKENS", "TOLERANCE", "VariantReport", "format_reports", "validate_export"]

#: Texts with at least this many tokens are "long": float32 summation error grows with length.
LONG_TOKENS = 1_000

#: Largest allowed parity error (max abs diff of normalised outputs): (short texts, long texts).
TOLERANCE = (1e-5, 1e-4)


@dataclass(frozen=True)
class VariantReport:
    """How one exported variant compares with the reference.

    Attributes:
        variant: The variant name.
        dim: The exported width.
        texts: How many texts were compared.
        max_abs_diff: Parity: max abs diff of normalised outputs from the reference on the
            variant's stored table, texts under LONG_TOKENS tokens.
        max_abs_diff_long: The same for texts of LONG_TOKENS tokens or more.
        max_abs_diff_raw: The same before normalisation, all texts.
        loss_max_abs_diff: Loss: max abs diff of normalised outputs from the fp32 reference.
        loss_min_cosine: Loss: lowest cosine with the fp32 reference.
        tolerance: The bounds on ``max_abs_diff`` and ``max_abs_diff_long``.
    """

    variant: str
    dim: int
    texts: int
    max_abs_diff: float
    max_abs_diff_long: float
    max_abs_diff_raw: float
    loss_max_abs_diff: float
    loss_min_cosine: float
    tolerance: tuple[float, float] = TOLERANCE

    @property
    def passed(self) -> bool:
        """Whether both parity diffs are within tolerance."""
        short, long = self.tolerance
        return self.max_abs_diff <= short and self.max_abs_diff_long <= long


def validate_export(
    folder: Path,
    checkpoint: Checkpoint,
    stored: Mapping[str, npt.NDArray[np.float32]],
    texts: Sequence[str] | None = None,
) -> list[VariantReport]:
    """Compare each variant in ``folder`` with the reference on ``texts``.

    Args:
        folder: An exported model folder.
        checkpoint: The checkpoint it was exported from.
        stored: Variant -> its table as stored, decoded to float32 ``[vocab, dim]``.
        texts: Texts to compare on; ``None`` uses the built-in adversarial set.

    Returns:
        One report per variant, in order; see :attr:`VariantReport.passed`.
    """
    texts = [text for _, text in adversarial_texts()] if texts is None else list(texts)
    ids = reference_ids(checkpoint, texts)
    long = np.array([len(seq) >= LONG_TOKENS for seq in ids], dtype=bool)
    reports = []
    for variant, table in stored.items():
        encoder = Encoder(folder, variant=variant)
        dim = encoder.dim
        exact = normalize(SSE.from_checkpoint(checkpoint, dim).embed(ids))
        expected = SSE.from_checkpoint(checkpoint, dim, table).embed(ids)
        raw = encoder.encode(texts, normalize_embeddings=False, show_progress_bar=False)
        diff = np.abs(normalize(raw) - normalize(expected)).max(axis=1)
        loss = normalize(raw) - exact
        reports.append(
            VariantReport(
                variant=variant,
                dim=dim,
                texts=len(texts),
                max_abs_diff=float(diff[~long].max(initial=0.0)),
                max_abs_diff_long=float(diff[long].max(initial=0.0)),
                max_abs_diff_raw=float(np.abs(raw - expected).max(initial=0.0)),
                loss_max_abs_diff=float(np.abs(loss).max(initial=0.0)),
                loss_min_cosine=float(_cosines(raw, exact).min(initial=1.0)),
            )
        )
    return reports


def _cosines(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Row-wise cosine; two zero rows count as equal (1), one zero row as unrelated (0)."""
    a_norm = np.linalg.norm(a.astype(np.float64), axis=1)
    b_norm = np.linalg.norm(b.astype(np.float64), axis=1)
    dots = np.einsum("ij,ij->i", a.astype(np.float64), b.astype(np.float64))
    cos = dots / np.where(a_norm * b_norm == 0, 1.0, a_norm * b_norm)
    return np.where((a_norm == 0) & (b_norm == 0), 1.0, cos)


def format_reports(reports: Sequence[VariantReport]) -> str:
    """A plain-text table of reports, one row per variant."""
    rows = [
        f"{'variant':<12} {'dim':>5} {'texts':>5} | parity: {'max|d| <1k tok':>14} "
        f"{'long':>9} {'raw':>9} | loss vs fp32: {'max|d|':>9} {'min cos':>9} | result"
    ]
    for r in reports:
        verdict = "ok" if r.passed else f"FAILED (bounds {r.tolerance[0]:.0e}/{r.tolerance[1]:.0e})"
        rows.append(
            f"{r.variant:<12} {r.dim:>5} {r.texts:>5} | {r.max_abs_diff:>22.2e} "
            f"{r.max_abs_diff_long:>9.2e} {r.max_abs_diff_raw:>9.2e} | "
            f"{r.loss_max_abs_diff:>23.2e} {r.loss_min_cosine:>9.6f} | {verdict}"
        )
    return "\n".join(rows)
