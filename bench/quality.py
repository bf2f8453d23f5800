"""Quality of every variant at every Matryoshka width of a checkpoint: table and plot.

Exports the checkpoint (default: the bundled default model) at each ``--dims`` width with every
``--variants`` variant, lets the exporter validate each one and measure its loss against fp32
(:mod:`sse_export.report`), then writes ``quality.json``, ``quality.md`` and ``quality.png``
(nDCG@10 against file size) to ``--out``.

Example::

    python bench/quality.py                      # default model, 256/128/64/32, every variant
    python bench/quality.py --dims 256 --variants fp32 int8
"""

from __future__ import annotations

import importlib
import logging
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from sse_export import export
from sse_export.evaluate import default_data_dir
from sse_export.report import RETRIEVAL_SETS, QualityRow, format_markdown
from sse_onnx.folder import VARIANT_FILES

# bench/ is on sys.path as `python bench/quality.py`; `python -m bench.quality` runs from the root.
harness = importlib.import_module("bench.harness" if __package__ else "harness")

HERE = Path(__file__).resolve().parent


def measure(
    checkpoint: str | None, dims: Sequence[int], variants: Sequence[str], data: Path
) -> list[QualityRow]:
    """Export at each width and return the exporter's quality rows, widths in order."""
    rows: list[QualityRow] = []
    with tempfile.TemporaryDirectory(prefix="sse-quality-") as work:
        for dim in dims:
            logging.info("exporting %s dims: %s", dim, ", ".join(variants))
            result = export(
                checkpoint, output=Path(work) / str(dim), dim=dim, variants=variants, eval_data=data
            )
            rows.extend(result.quality)
    return rows


def plot(rows: Sequence[QualityRow], path: Path) -> None:
    """nDCG@10 (mean of the retrieval sets) against file size, one marker per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    markers = dict(zip(VARIANT_FILES, "os^vD<>", strict=False))
    for variant in dict.fromkeys(row.variant for row in rows):
        points = sorted(
            (row.bytes / 1e6, sum(row.ndcg.values()) / len(row.ndcg), row.dim)
            for row in rows
            if row.variant == variant and row.ndcg
        )
        if not points:
            continue
        axes.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker=markers.get(variant, "o"),
            label=variant,
        )
        for size, score, dim in points:
            axes.annotate(str(dim), (size, score), textcoords="offset points", xytext=(4, -10))
    axes.set_xscale("log")
    axes.set_xlabel("model file size (MB, log scale)")
    axes.set_ylabel("mean nDCG@10 (" + ", ".join(RETRIEVAL_SETS) + ")")
    axes.set_title("SSE variants: quality against size (labels: dims)")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main(argv: Sequence[str] | None = None) -> int:
    parser = harness.parser(__doc__, out=harness.RESULTS)
    parser.add_argument("--checkpoint", help="SSE checkpoint folder (default: bundled default)")
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 128, 64, 32])
    parser.add_argument(
        "--variants", nargs="+", default=list(VARIANT_FILES), choices=sorted(VARIANT_FILES)
    )
    parser.add_argument("--eval-data", type=Path, default=default_data_dir())
    args = parser.parse_args(argv)
    harness.setup_logging("%(message)s")
    if not (args.eval_data / "retrieval").is_dir():
        print(f"No evaluation data under {args.eval_data}; set SSE_DATA.", file=sys.stderr)
        return 1
    rows = measure(args.checkpoint, args.dims, args.variants, args.eval_data)
    data = [{**asdict(row), "ndcg_delta": row.ndcg_delta} for row in rows]
    table = format_markdown(rows)
    harness.write_results(args.out, "quality", data, table + "\n")
    plot(rows, args.out / "quality.png")
    print(table)
    print(f"\nWritten to {args.out}: quality.json, quality.md, quality.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
