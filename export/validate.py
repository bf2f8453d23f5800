"""Validation of an export: the runtime on the exported folder against the PyTorch reference.

The reference tokenizes with the *source* checkpoint's tokenizer and pools with
:class:`sse_export.reference.SSE` at full width, then keeps the first ``dim`` values, so one
comparison checks the graph, the ``--dim`` slicing, the exported tokenizer and the runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

from sse_export.adversarial import adversarial_texts
from sse_export.checkpoint import Checkpoint
from sse_export.reference import SSE
from sse_onnx import Encoder
from sse_onnx.embeddings import normalize

__all__ = ["LONG_TOKENS", "TOLERANCES", "VariantReport", "format_reports", "validate_export"]

#: Texts with at least this many tokens are "long": float32 summation error grows with length.
LONG_TOKENS = 1_000

#: Largest allowed max abs diff of normalised outputs: (texts under LONG_TOKENS, long texts).
TOLERANCES: dict[str, tuple[float, float]] = {
    "fp32": (1e-5, 1e-4),
    "fp16": (1e-3, 1e-3),
}


@dataclass(frozen=True)
class VariantReport:
    """How one exported variant compares with the reference.

    Attributes:
        variant: The variant name.
        dim: The exported width.
        texts: How many texts were compared.
        max_abs_diff: Max abs diff of normalised outputs, texts under LONG_TOKENS tokens.
        max_abs_diff_long: The same for texts of LONG_TOKENS tokens or more.
        max_abs_diff_raw: Max abs diff before normalisation, all texts.
        min_cosine: Lowest cosine between runtime and reference embeddings.
        tolerance: The bounds on ``max_abs_diff`` and ``max_abs_diff_long``.
    """

    variant: str
    dim: int
    texts: int
    max_abs_diff: float
    max_abs_diff_long: float
    max_abs_diff_raw: float
    min_cosine: float
    tolerance: tuple[float, float]

    @property
    def passed(self) -> bool:
        """Whether both diffs are within tolerance."""
        short, long = self.tolerance
        return self.max_abs_diff <= short and self.max_abs_diff_long <= long

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict, with ``passed``."""
        return {**asdict(self), "passed": self.passed}


def validate_export(
    folder: Path,
    checkpoint: Checkpoint,
    variants: Sequence[str],
    texts: Sequence[str] | None = None,
) -> list[VariantReport]:
    """Compare each variant in ``folder`` with the reference on ``texts``.

    Args:
        folder: An exported model folder.
        checkpoint: The checkpoint it was exported from.
        variants: Which variants of the folder to check.
        texts: Texts to compare on; ``None`` uses the built-in adversarial set.

    Returns:
        One report per variant, in order; see :attr:`VariantReport.passed`.
    """
    texts = [text for _, text in adversarial_texts()] if texts is None else list(texts)
    tokenizer = Tokenizer.from_file(str(checkpoint.tokenizer_path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    ids = [enc.ids for enc in tokenizer.encode_batch(texts, add_special_tokens=False)]
    long = np.array([len(seq) >= LONG_TOKENS for seq in ids])
    full_reference = SSE.from_checkpoint(checkpoint).embed(ids)
    reports = []
    for variant in variants:
        encoder = Encoder(folder, variant=variant)
        reference = full_reference[:, : encoder.dim]
        raw = encoder.encode(texts, normalize_embeddings=False, show_progress_bar=False)
        diff = np.abs(normalize(raw) - normalize(reference)).max(axis=1)
        reports.append(
            VariantReport(
                variant=variant,
                dim=encoder.dim,
                texts=len(texts),
                max_abs_diff=float(diff[~long].max(initial=0.0)),
                max_abs_diff_long=float(diff[long].max(initial=0.0)),
                max_abs_diff_raw=float(np.abs(raw - reference).max(initial=0.0)),
                min_cosine=float(_cosines(raw, reference).min(initial=1.0)),
                tolerance=TOLERANCES[variant],
            )
        )
    return reports


def _cosines(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Row-wise cosine; two zero rows count as equal (1), one zero row as unrelated (0)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    both_zero = (np.linalg.norm(a64, axis=1) == 0) & (np.linalg.norm(b64, axis=1) == 0)
    cos = np.einsum("ij,ij->i", a64, b64) / np.where(norms == 0, 1.0, norms)
    return np.where(both_zero, 1.0, cos)


def format_reports(reports: Sequence[VariantReport]) -> str:
    """A plain-text table of reports, one row per variant."""
    header = (
        f"{'variant':<8} {'dim':>5} {'texts':>5} {'max|d| <1k tok':>15} {'max|d| long':>12} "
        f"{'max|d| raw':>11} {'min cos':>10}  result"
    )
    rows = [header]
    for r in reports:
        rows.append(
            f"{r.variant:<8} {r.dim:>5} {r.texts:>5} {r.max_abs_diff:>15.2e} "
            f"{r.max_abs_diff_long:>12.2e} {r.max_abs_diff_raw:>11.2e} {r.min_cosine:>10.7f}  "
            + ("ok" if r.passed else f"FAILED (bounds {r.tolerance[0]:.0e}/{r.tolerance[1]:.0e})")
        )
    return "\n".join(rows)
