"""ARM parity: the runtime on aarch64 against x86, on models exported on x86.

``tests/arm/run.sh`` runs the three steps; each can be run alone:

- ``prepare`` (x86, with the ``export`` extra): writes ``texts.json``, the exporter's
  adversarial set, the judged SciFact queries and the SciFact corpus (``title + " " + text``),
  read from ``$SSE_DATA`` or ``../shared/data``. Without SciFact it stops, or with
  ``--scifact-optional`` says so in one line and writes the adversarial set alone.
- ``embed`` (on each architecture, runtime only: numpy, onnxruntime, tokenizers): writes the
  token ids of every text, from the runtime's tokenizer and from plain Hugging Face
  ``tokenizers``, the raw outputs of every variant of a model folder on the adversarial set and
  the queries, and the top-10 documents of every query for each ``--rank`` variant (none
  without a corpus).
- ``compare`` (x86, with the ``export`` extra): checks two ``embed`` outputs against each
  other, prints a report, writes it as JSON and exits with 1 if a check fails. Token ids must be
  identical; normalised outputs of every variant must agree within the exporter's parity
  tolerance (``sse_export.validate.TOLERANCE``: 1e-5 under 1,000 tokens, 1e-4 above), fp32
  outputs (raw and normalised) within 1e-5; top-10 rankings must be identical.

The project is imported inside each step: ``embed`` runs on an aarch64 Python that has only the
runtime, while ``prepare`` and ``compare`` use the exporter's texts and tolerances.

Example::

    python tests/arm/parity.py prepare --out texts.json
    python tests/arm/parity.py embed --model sse-256 --texts texts.json --rank int8 --out x86.npz
    python tests/arm/parity.py compare x86.npz arm.npz --report report.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

#: fp32 outputs (raw and normalised) of the two machines differ by at most this much.
FP32_TOLERANCE = 1e-5
#: How many documents per query the ranking check compares.
TOP_K = 10


def prepare(out: Path, scifact_optional: bool = False) -> None:
    """Write the texts every architecture embeds: adversarial set, SciFact queries and corpus.

    Without SciFact: exit, or with ``scifact_optional`` print one line and write the adversarial
    set alone (no queries, no corpus).
    """
    from sse_export.adversarial import adversarial_texts
    from sse_export.evaluate import default_data_dir, load_retrieval

    texts: dict[str, list[str]] = {
        "adversarial": [text for _, text in adversarial_texts()],
        "queries": [],
        "corpus": [],
    }
    folder = default_data_dir() / "retrieval" / "scifact"
    if (folder / "corpus.jsonl").is_file():
        scifact = load_retrieval(folder, "test")
        texts.update(queries=scifact.query_texts, corpus=scifact.doc_texts)
    else:
        absent = (
            f"no corpus.jsonl in {folder}. Put the evaluation data in ../shared/data beside the "
            "repository or point $SSE_DATA at it (python bench/get_data.py DATA_DIR builds it)"
        )
        if not scifact_optional:
            sys.exit(f"SciFact is absent: {absent}.")
        print(f"prepare: SciFact SKIPPED, adversarial set only: {absent}.")
    out.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
    counts = ", ".join(f"{len(v)} {k}" for k, v in texts.items())
    print(f"prepare: {counts} -> {out}")


def embed(model: Path, texts_path: Path, rank: Sequence[str], out: Path) -> None:
    """Token ids, raw outputs of every variant and top-k rankings on this machine."""
    from tokenizers import Tokenizer

    from sse_onnx import Encoder
    from sse_onnx.embeddings import normalize
    from sse_onnx.folder import read_manifest
    from sse_onnx.tokenizer import TextTokenizer

    raw_json = texts_path.read_bytes()
    texts: dict[str, list[str]] = json.loads(raw_json)
    probe = texts["adversarial"] + texts["queries"]
    manifest = read_manifest(model)
    unknown = sorted(set(rank) - set(manifest.variants))
    if unknown:
        sys.exit(f"--rank {unknown} not in {model}, which holds {sorted(manifest.variants)}.")
    tokenizer_path = model / manifest.tokenizer.file
    started = time.perf_counter()
    arrays: dict[str, npt.NDArray[Any]] = {}

    runtime = TextTokenizer(tokenizer_path)
    if not runtime.fast:
        sys.exit(f"{tokenizer_path} does not take the runtime's fast tokenizer path.")
    hf = Tokenizer.from_file(str(tokenizer_path))
    hf.no_padding()
    hf.no_truncation()
    everything = probe + texts["corpus"]
    arrays["ids_runtime"], arrays["lengths_runtime"] = _flat(runtime.encode(everything))
    arrays["ids_hf"], arrays["lengths_hf"] = _flat(
        [np.array(e.ids, dtype=np.int64) for e in hf.encode_batch(everything, False)]
    )
    timings = {"tokenize": time.perf_counter() - started}

    for variant in manifest.variants:
        clock = time.perf_counter()
        encoder = Encoder(model, variant=variant)
        arrays[f"raw_{variant}"] = encoder.encode(probe, normalize_embeddings=False)
        if variant in rank and texts["corpus"]:
            queries = normalize(arrays[f"raw_{variant}"][len(texts["adversarial"]) :])
            docs = encoder.encode(texts["corpus"])
            scores = queries @ docs.T
            top = np.argsort(-scores, axis=1, kind="stable")[:, :TOP_K]
            arrays[f"top_{variant}"] = top
            arrays[f"topscores_{variant}"] = np.take_along_axis(scores, top, axis=1)
        timings[variant] = time.perf_counter() - clock

    meta = {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "versions": {p: version(p) for p in ("numpy", "onnxruntime", "tokenizers")},
        "texts_sha256": hashlib.sha256(raw_json).hexdigest(),
        "model_sha256": {v: e.sha256 for v, e in manifest.variants.items()},
        "counts": {k: len(v) for k, v in texts.items()},
        "seconds": {k: round(v, 1) for k, v in timings.items()},
    }
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(out, **arrays)  # type: ignore[arg-type]  # the splat could fill allow_pickle
    print(f"embed on {meta['machine']}: {json.dumps(meta['versions'])}, {meta['seconds']} s")


def _flat(
    ids: Sequence[npt.NDArray[np.int64]],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """All ids end to end, and the number of ids of each text."""
    lengths = np.array([len(seq) for seq in ids], dtype=np.int64)
    return np.concatenate([np.asarray(seq, dtype=np.int64) for seq in ids]), lengths


def compare(reference_path: Path, candidate_path: Path, report_path: Path | None) -> bool:
    """Check ``candidate`` against ``reference``; print a report. Returns whether all passed."""
    ref, cand = np.load(reference_path), np.load(candidate_path)
    ref_meta, cand_meta = json.loads(str(ref["meta"])), json.loads(str(cand["meta"]))
    for what in ("texts", "model"):
        if ref_meta[f"{what}_sha256"] != cand_meta[f"{what}_sha256"]:
            sys.exit(f"{reference_path} and {candidate_path} come from different {what}.")
    checks = [
        *_id_checks(ref, cand),
        *_output_checks(ref, cand, ref_meta["counts"]),
        *_ranking_checks(ref, cand),
    ]
    _print_report(ref_meta, cand_meta, checks)
    passed = all(c["passed"] for c in checks)
    if report_path is not None:
        report = {"reference": ref_meta, "candidate": cand_meta, "checks": checks}
        report_path.write_text(json.dumps({**report, "passed": passed}, indent=2), "utf-8")
    return passed


def _check(name: str, value: float, bound: float | None, detail: str = "") -> dict[str, Any]:
    """One line of the report; a check without a bound is reported and always passes."""
    passed = bool(bound is None or value <= bound)
    check = {"check": name, "value": float(value), "bound": bound, "passed": passed}
    return {**check, "detail": detail} if detail else check


def _id_checks(ref: Any, cand: Any) -> list[dict[str, Any]]:
    """Each side's token ids (the runtime's; the candidate's HF ones too) against the
    reference's HF ids."""
    base = ref["ids_hf"], ref["lengths_hf"]
    checks = []
    for side, data, kinds in (
        ("reference", ref, ["runtime"]),
        ("candidate", cand, ["runtime", "hf"]),
    ):
        for kind in kinds:
            differing = _differing_texts((data[f"ids_{kind}"], data[f"lengths_{kind}"]), base)
            name = f"token ids, {side} {kind} vs reference hf: texts that differ"
            checks.append(_check(name, differing, 0, f"{len(base[1])} texts"))
    return checks


def _output_checks(ref: Any, cand: Any, counts: dict[str, int]) -> list[dict[str, Any]]:
    """Each variant's raw and normalised outputs on the adversarial set and the queries."""
    from sse_export.validate import LONG_TOKENS, TOLERANCE
    from sse_onnx.embeddings import normalize

    probe = counts["adversarial"] + counts["queries"]
    long = ref["lengths_hf"][:probe] >= LONG_TOKENS
    checks = []
    for key in sorted(k for k in ref.files if k.startswith("raw_")):
        variant = key.removeprefix("raw_")
        raw = np.abs(ref[key].astype(np.float64) - cand[key]).max(axis=1)
        unit = np.abs(normalize(ref[key]).astype(np.float64) - normalize(cand[key])).max(axis=1)
        if variant == "fp32":
            checks.append(_check("fp32 raw outputs", raw.max(), FP32_TOLERANCE))
            checks.append(_check("fp32 normalised outputs", unit.max(), FP32_TOLERANCE))
            continue
        checks += [
            _check(f"{variant} raw outputs (reported)", raw.max(), None),
            _check(f"{variant} normalised, <{LONG_TOKENS} tokens", unit[~long].max(), TOLERANCE[0]),
            _check(f"{variant} normalised, longer", unit[long].max(initial=0.0), TOLERANCE[1]),
        ]
    return checks


def _ranking_checks(ref: Any, cand: Any) -> list[dict[str, Any]]:
    """Each ranked variant's top-10 documents of every query."""
    checks = []
    for key in sorted(k for k in ref.files if k.startswith("top_")):
        variant = key.removeprefix("top_")
        differs = np.flatnonzero((ref[key] != cand[key]).any(axis=1))
        gap = np.abs(ref[f"topscores_{variant}"] - cand[f"topscores_{variant}"]).max()
        detail = f"{len(ref[key])} queries; max score diff {gap:.1e}"
        if len(differs):
            detail += f"; first differing query: index {int(differs[0])}"
        name = f"top-{TOP_K} documents, {variant}: queries that differ"
        checks.append(_check(name, len(differs), 0, detail))
    return checks


def _print_report(
    ref_meta: dict[str, Any], cand_meta: dict[str, Any], checks: list[dict[str, Any]]
) -> None:
    print(f"reference {ref_meta['machine']} {json.dumps(ref_meta['versions'])}")
    print(f"candidate {cand_meta['machine']} {json.dumps(cand_meta['versions'])}")
    width = max(len(c["check"]) for c in checks)
    for c in checks:
        verdict = "" if c["bound"] is None else (" ok" if c["passed"] else " FAILED")
        bound = "" if c["bound"] is None else f" (bound {c['bound']:.0e})"
        detail = f"  [{c['detail']}]" if "detail" in c else ""
        print(f"{c['check']:<{width}}  {c['value']:.2e}{bound}{verdict}{detail}")


def _differing_texts(
    ids: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]],
    base: tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]],
) -> int:
    """How many texts have other ids than in ``base`` (each given as flat ids and lengths)."""
    if len(ids[1]) != len(base[1]):
        return max(len(ids[1]), len(base[1]))
    split = np.split(ids[0], np.cumsum(ids[1])[:-1])
    expected = np.split(base[0], np.cumsum(base[1])[:-1])
    return sum(not np.array_equal(x, y) for x, y in zip(split, expected, strict=True))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    steps = parser.add_subparsers(dest="step", required=True)
    p = steps.add_parser("prepare", help="write texts.json (x86, export extra)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--scifact-optional",
        action="store_true",
        help="without SciFact, say so and write the adversarial set alone instead of failing",
    )
    e = steps.add_parser("embed", help="ids, outputs and rankings on this machine")
    e.add_argument("--model", type=Path, required=True, help="an exported model folder")
    e.add_argument("--texts", type=Path, required=True, help="the file `prepare` wrote")
    e.add_argument("--rank", nargs="*", default=["int8"], help="variants to rank SciFact with")
    e.add_argument("--out", type=Path, required=True)
    c = steps.add_parser("compare", help="check a candidate's outputs against a reference's")
    c.add_argument("reference", type=Path)
    c.add_argument("candidate", type=Path)
    c.add_argument("--report", type=Path, help="also write the checks as JSON")
    args = parser.parse_args(argv)
    if args.step == "prepare":
        prepare(args.out, args.scifact_optional)
    elif args.step == "embed":
        embed(args.model, args.texts, args.rank, args.out)
    else:
        return 0 if compare(args.reference, args.candidate, args.report) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
