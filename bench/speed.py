"""Speed of sse-onnx against the PyTorch reference and other static-embedding runtimes.

One command exports a checkpoint (the bundled default unless ``--model``) at each ``--dims``
with each ``--variants`` into a temporary folder, then measures on the SciFact corpus
(``title + " " + text``) and queries, read from ``$SSE_DATA`` or ``../shared/data``:

- sse-onnx per variant, dim and thread count (and ``Encoder()``'s default thread count on
  the target variant): end-to-end docs/s and queries/s (``encode(texts, batch_size=32)``),
  the docs/s scaling from 1 to 2 threads, single-query latency p50/p99 (one ``encode(str)``
  per query, cold chunk cache and warm), the time spent in the graph calls (the ONNX stage)
  and its share of the end-to-end time, and, in fresh processes that import only sse_onnx:
  import time, ``Encoder()`` construction time and peak RSS growth, beside the model file
  size;
- competitors on the same stored table: (a) the PyTorch reference (HF ``encode_batch`` +
  ``EmbeddingBag(mode="mean")`` + DyT, batches of 32), (b) ``static-embed-runner`` (numpy
  only; its single-text call for latency, cold on a fresh tokenizer and warm) and (c)
  model2vec's ``StaticModel`` plus the DyT head in numpy, each skipped when not installed.
  Every runtime's outputs are checked against the PyTorch reference (min cosine
  :data:`MIN_COSINE`); a mismatch stops the run.

Timings are medians of ``--repeats`` runs after a warm-up; the machine's load average is
recorded before and after. Results go to ``OUT/speed.json``, ``OUT/speed.md`` and
``OUT/speed.png`` (throughput against SciFact nDCG@10, from the export's quality report).

The code is split by concern: ``speed_measure.py`` (timing, the reference check, one
encoder's figures, fresh processes), ``speed_competitors.py`` (the other runtimes),
``speed_duel.py`` (the alternating runs of the targets) and ``speed_report.py`` (targets,
tables, plot); this file holds the options and the order of the run.

Example::

    python bench/speed.py --out bench/results             # full run (about 20 minutes)
    python bench/speed.py --out speed-quick --quick   # the targets only, under 3 minutes
    python bench/speed.py --out speed-smoke --smoke   # seconds: tiny subset
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import harness
import numpy as np
from speed_competitors import (
    Competitor,
    fixed_batch,
    measure_competitor,
    model2vec_static,
    static_embed_runner,
    static_embed_runner_q4,
    torch_reference,
)
from speed_duel import latency_duel, throughput_duel
from speed_measure import BATCH, Embed, FloatArray, Texts, measure_process, measure_sse_onnx
from speed_report import TARGET_DIM, TARGET_VARIANT, markdown, plot, target_verdicts

from sse_export import export
from sse_export.checkpoint import Checkpoint, load_checkpoint
from sse_export.quantize import decoded_table

logger = logging.getLogger("speed")

#: Packages whose versions the environment record names.
PACKAGES = ("numpy", "onnxruntime", "tokenizers", "torch", "static-embed-runner", "model2vec")


@dataclass
class Run:
    """What every step of a run reads, and the rows it collects."""

    args: argparse.Namespace
    texts: Texts
    checkpoint: Checkpoint
    data_dir: Path
    work: Path
    results: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    competitors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def texts_file(self) -> Path:
        """The documents as a JSON list, for the fresh processes."""
        return self.work / "docs.json"


def load_texts(data_dir: Path, smoke: bool) -> Texts:
    data = harness.scifact(data_dir)
    if smoke:
        return Texts(data.doc_texts[:100], data.query_texts[:20])
    return Texts(data.doc_texts, data.query_texts)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Export each dim, measure each variant and its competitors, and judge the targets."""
    data_dir = harness.data_dir(args.data)
    texts = load_texts(data_dir, args.smoke)
    checkpoint = load_checkpoint(args.model)
    results: dict[str, Any] = {
        "environment": harness.environment(PACKAGES),
        "smoke": args.smoke,
        "quick": args.quick,
    }
    with tempfile.TemporaryDirectory(prefix="sse-speed-") as tmp:
        state = Run(args, texts, checkpoint, data_dir, Path(tmp), results)
        state.texts_file.write_text(json.dumps(texts.docs), encoding="utf-8")
        for dim in args.dims:
            folder, ndcg = export_dim(state, dim)
            for variant in args.variants:
                measure_variant(state, folder, dim, variant, ndcg.get(variant, {}))
    results["environment"]["load_average_after"] = os.getloadavg()
    results["sse_onnx"] = state.rows
    results["competitors"] = state.competitors
    results["targets"] = target_verdicts(
        state.rows, state.competitors, results.get("throughput"), results.get("latency")
    )
    results["texts"] = {"docs": len(texts.docs), "queries": len(texts.queries)}
    return results


def export_dim(state: Run, dim: int) -> tuple[Path, dict[str, dict[str, float]]]:
    """The export at ``dim`` of every variant, and each variant's nDCG@10 per data set."""
    args = state.args
    folder = state.work / f"sse-{dim}"
    logger.info("exporting dim %d, variants %s", dim, args.variants)
    exported = export(
        args.model,
        output=folder,
        dim=dim,
        variants=args.variants,
        validate=not (args.smoke or args.quick),
        report=not (args.smoke or args.quick),
        eval_data=state.data_dir,
    )
    return folder, {row.variant: dict(row.ndcg) for row in exported.quality}


def measure_variant(
    state: Run, folder: Path, dim: int, variant: str, ndcg: dict[str, float]
) -> None:
    """sse-onnx at each thread count, its fresh-process figures, the competitors, and the
    alternating runs on the target configuration."""
    args, texts, checkpoint = state.args, state.texts, state.checkpoint
    head = [
        np.ascontiguousarray(v[:dim]) for v in (checkpoint.alpha, checkpoint.beta, checkpoint.bias)
    ]
    stored = np.ascontiguousarray(decoded_table(checkpoint.table[:, :dim], variant))
    reference_embed = torch_reference(stored, head, checkpoint.tokenizer_path)
    reference = {"docs": reference_embed(texts.docs), "queries": reference_embed(texts.queries)}
    target = (variant, dim) == (TARGET_VARIANT, TARGET_DIM)
    counts: list[int | None] = list(args.threads)
    if target and not args.smoke:
        counts.append(None)  # Encoder()'s default, against threads=1
    for threads in counts:
        logger.info("sse-onnx %s@%d, threads=%s", variant, dim, threads)
        row = measure_sse_onnx(
            folder, variant, threads, texts, reference, args.repeats, args.passes
        )
        state.rows.append({"dim": dim, **row})
    state.rows[-len(counts)] |= measure_process(
        folder, variant, state.texts_file, args.process_runs
    )
    state.rows[-len(counts)] |= {"ndcg": ndcg}
    candidates = competitors(state, stored, head, reference_embed, variant, dim)
    for name, competitor in candidates.items():
        if competitor is None:
            logger.warning("%s is not installed: skipped", name)
            continue
        logger.info("%s on %s@%d", name, variant, dim)
        found = measure_competitor(
            name,
            competitor,
            texts,
            reference,
            args.competitor_repeats,
            args.passes,
            args.smoke,
        )
        state.competitors.append({"dim": dim, "variant": variant, **found})
    rival = candidates.get("static-embed-runner")
    if target and rival is not None and not args.smoke:
        duels(state, folder, variant, rival)


def competitors(
    state: Run,
    stored: FloatArray,
    head: Sequence[FloatArray],
    reference_embed: Embed,
    variant: str,
    dim: int,
) -> dict[str, Competitor | None]:
    """The runtimes to measure on this table (``None``: not installed)."""
    tokenizer = state.checkpoint.tokenizer_path
    candidates: dict[str, Competitor | None] = {
        "PyTorch reference": fixed_batch(reference_embed),
        "static-embed-runner": static_embed_runner(stored, head, tokenizer),
        "model2vec StaticModel + DyT": model2vec_static(stored, head, tokenizer),
    }
    if state.args.quick:  # the targets name static-embed-runner only
        candidates = {"static-embed-runner": candidates["static-embed-runner"]}
    if variant == "int4":
        candidates["static-embed-runner (its q4 loader)"] = static_embed_runner_q4(
            state.checkpoint, dim, tokenizer, state.work
        )
    return candidates


def duels(state: Run, folder: Path, variant: str, rival: Competitor) -> None:
    """The alternating runs against static-embed-runner that the targets are judged on."""
    args, texts = state.args, state.texts
    logger.info("throughput against static-embed-runner, alternating")
    sizes = [size for size in rival.sizes if size != BATCH]  # 32: its slowest
    state.results["throughput"] = throughput_duel(
        folder, variant, rival, sizes, texts, 2 * args.repeats
    )
    logger.info("single-query latency against static-embed-runner, alternating")
    state.results["latency"] = latency_duel(folder, variant, rival, texts.queries, args.passes)


def write_outputs(results: dict[str, Any], out: Path) -> None:
    """``speed.json``, ``speed.md`` and ``speed.png`` in ``out``."""
    harness.write_results(out, "speed", results, markdown(results))
    plot(results, out / "speed.png")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = harness.parser(__doc__, model=True, data=True)
    parser.add_argument("--dims", type=int, nargs="+", default=[256, 64])
    parser.add_argument("--variants", nargs="+", default=["fp32", "int8", "int4"])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--competitor-repeats", type=int, default=3)
    parser.add_argument("--passes", type=int, default=5, help="passes over the queries for latency")
    parser.add_argument("--process-runs", type=int, default=5, help="fresh processes per variant")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="under 3 minutes: int8 at 256d, 1 and 2 threads, static-embed-runner only",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="seconds: 100 docs, int8 at 64d, 1 thread"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.dims, args.variants, args.threads = [TARGET_DIM], [TARGET_VARIANT], [1, 2]
        args.repeats, args.competitor_repeats, args.passes, args.process_runs = 3, 3, 3, 3
    if args.smoke:
        args.dims, args.variants, args.threads = [64], ["int8"], [1]
        args.repeats, args.competitor_repeats, args.passes, args.process_runs = 1, 1, 1, 1
    return args


def main(argv: Sequence[str] | None = None) -> int:
    harness.setup_logging()
    args = parse_args(argv)
    results = run(args)
    write_outputs(results, args.out)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
