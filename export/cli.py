"""The ``sse-export`` command: a thin argparse layer over :func:`sse_export.export`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from sse_export.exporter import TARGETS, export
from sse_export.mobile import MOBILE_VARIANTS
from sse_export.report import REPORT_JSON, REPORT_MD, format_markdown, smallest_within_bounds
from sse_export.validate import format_reports
from sse_onnx import folder as fmt
from sse_onnx.errors import SSEError

__all__ = ["main"]

EXAMPLES = """\
examples:
  sse-export --dim 256 --output sse-256
      export the bundled default model, first 256 dimensions, and validate it
  sse-export --model path/to/sse-checkpoint --output sse-onnx --variants fp32 int8 int4
      export a local SSE checkpoint (model.safetensors + tokenizer.json, or the 4-bit SSEQ
      files) in three variants; fp32, the first, is the one Encoder loads by default
  sse-export --dim 256 --variants fp32 int8 --eval-data path/to/data --output sse-256 --overwrite
      replace an earlier export, with a quality report of each variant against fp32
  sse-export --model path/to/potion-base-8M --output potion-onnx --variants fp32 int8
      a Model2Vec (or sentence-transformers StaticEmbedding) folder: the family is detected
      and its own semantics kept (see docs/export.md, checkpoint families)
  sse-export --dim 256 --variants int8 --target mobile --output sse-mobile
      a folder for Android and iOS apps: .ort model, operator config for a reduced
      onnxruntime, tokenizer files and INTEGRATION.md (Kotlin and Swift examples)
  sse-export --dim 256 --variants int8 --target web --output sse-web
      a folder for browser and Node apps: model, sse-onnx.mjs (exact tokenizer and
      Encoder for onnxruntime-web/-node), vocabulary and INTEGRATION.md
  python -c "from sse_onnx import Encoder; print(Encoder('sse-256').encode('hello').shape)"
      embed with the export
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (flag names match :func:`sse_export.export`'s parameters)."""
    parser = argparse.ArgumentParser(
        prog="sse-export",
        description="Export an SSE (Stable Static Embedding), sentence-transformers "
        "StaticEmbedding or Model2Vec checkpoint to a validated ONNX model folder for "
        "sse_onnx.Encoder. Reads tensors only; never runs the checkpoint's code.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        metavar="PATH",
        help="checkpoint folder with model.safetensors and tokenizer.json, as SSE, "
        "sentence-transformers StaticEmbedding or Model2Vec save them (default: the bundled "
        "default model)",
    )
    parser.add_argument(
        "--output", metavar="DIR", help="folder to write (default: ./<model name>-onnx)"
    )
    parser.add_argument(
        "--dim",
        type=int,
        metavar="N",
        help="keep the first N dimensions (default: all); warns unless the model card or "
        "config says the model is Matryoshka-trained",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["fp32"],
        choices=sorted(fmt.VARIANT_FILES),
        metavar="VARIANT",
        help=f"model variants to write, one or more of {sorted(fmt.VARIANT_FILES)}; Encoder "
        "loads the first unless --default-variant names another (default: fp32)",
    )
    parser.add_argument(
        "--default-variant",
        choices=sorted(fmt.VARIANT_FILES),
        metavar="VARIANT",
        help="the variant Encoder loads by default (default: the first of --variants)",
    )
    parser.add_argument(
        "--target",
        choices=TARGETS,
        default="onnx",
        help="onnx: a model folder for sse_onnx.Encoder; mobile: the same, validated, then "
        f"converted for Android/iOS apps (variants {list(MOBILE_VARIANTS)}; "
        "see INTEGRATION.md in the output); web: the same for browser and Node apps, with a "
        "JavaScript tokenizer and Encoder (sse-onnx.mjs) (default: onnx)",
    )
    parser.add_argument(
        "--eval-data",
        metavar="DIR",
        help="evaluation data root (BEIR folders): write a quality report of each variant "
        "against fp32 (quality.json, quality.md; it names the smallest variant within its "
        "bounds); without it no report is made",
    )
    parser.add_argument(
        "--no-report",
        dest="report",
        action="store_false",
        help="skip the quality report even with --eval-data",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier export in --output: its files are removed first, so the "
        "folder ends with exactly the new export's files; a folder holding other files is "
        "refused either way",
    )
    parser.add_argument(
        "--no-validate",
        dest="validate",
        action="store_false",
        help="skip the comparison with the PyTorch reference",
    )
    parser.add_argument("--quiet", action="store_true", help="print errors only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit code (0 ok, 1 failed export or bad input)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    try:
        result = export(
            args.model,
            output=args.output,
            dim=args.dim,
            variants=args.variants,
            default_variant=args.default_variant,
            validate=args.validate,
            report=args.report,
            eval_data=args.eval_data,
            target=args.target,
            overwrite=args.overwrite,
        )
    except (SSEError, ValueError, TypeError) as exc:
        print(f"sse-export: error: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        manifest = result.manifest
        print(f"Exported {manifest.model_name} ({manifest.dim} of {manifest.source_dim} dims) to")
        print(f"  {result.folder}")
        for variant, entry in manifest.variants.items():
            print(f"  {entry.file:<20} {variant:<6} {entry.bytes / 1e6:8.1f} MB")
        print(f"  default variant: {manifest.default_variant}")
        if result.reports:
            print("Validation against the PyTorch reference (normalised outputs):")
            print(format_reports(result.reports))
        if result.quality:
            print(f"Quality against fp32 (also in {REPORT_MD} and {REPORT_JSON}):")
            print(format_markdown(result.quality))
            smallest = smallest_within_bounds(result.quality)
            if smallest is not None and smallest != manifest.default_variant:
                print(
                    f"{smallest} is the smallest variant within its bounds; export with "
                    f"--default-variant {smallest} to make Encoder load it by default."
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
