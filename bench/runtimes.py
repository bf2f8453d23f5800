"""Which onnxruntime releases run which model files: the compatibility matrix of INTEGRATION.md.

Every variant of a folder, as ``.onnx`` and as ``.ort`` (converted by the running
onnxruntime's own converter through ``sse_export.mobile.convert_to_ort``, as ``sse-export
--target mobile`` does), is loaded by each runtime asked for and run on the adversarial set's
ids (one text per call); a cell is the max abs diff of the normalised ``sentence_embedding``
from the running Python onnxruntime on the ``.onnx`` file (marked when beyond the exporter's
bounds: 1e-5 under 1,000 tokens, 1e-4 for the 20,000-token text), or the error the runtime
gave. Runtimes: Python interpreters given with ``--python`` (e.g. throwaway virtualenvs of
older onnxruntime wheels) and, with ``--packages``, onnxruntime-node and onnxruntime-web
(WebAssembly) in Node. Usage::

    sse-export --dim 256 --variants int8 fp32 fp16 int4 int4_block int8_dynamic \\
        uint8_dynamic --target web --output sse-all
    python3 -m venv ort120 && ort120/bin/pip install onnxruntime==1.20.1 'numpy<2.3'
    python bench/runtimes.py --folder sse-all --python ort120/bin/python \\
        --packages tests/web

Writes ``runtimes.json`` and ``runtimes.md`` into ``--out`` (default bench/results).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import harness
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
#: Largest max abs diff of normalised outputs counted as the same, for texts under 1,000
#: tokens and for longer ones (the exporter's parity bounds, export/validate.py).
TOLERANCE, LONG_TOLERANCE = 1e-5, 1e-4

#: Run in each Python: load every file, run every row, print {file: [rows] or error}.
CHILD = """
import json, sys, time
import numpy as np
import onnxruntime as ort
files, rows, pad = json.loads(sys.stdin.read())
out = {"version": ort.__version__, "results": {}, "load_ms": {}}
for path in files:
    try:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        times = []
        for _ in range(3):
            start = time.perf_counter()
            session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            times.append((time.perf_counter() - start) * 1e3)
        vectors = []
        for row in rows:
            ids = np.array([row or [pad]], dtype=np.int64)
            mask = np.array([[1] * len(row) or [0]], dtype=np.int64)
            result = session.run(["sentence_embedding"], {"input_ids": ids, "attention_mask": mask})
            vectors.append(result[0][0].tolist())
        out["results"][path] = vectors
        out["load_ms"][path] = sorted(times)[1]
    except Exception as exc:
        out["results"][path] = str(exc).splitlines()[0][:200]
print(json.dumps(out))
"""

#: The same in Node, with onnxruntime-node or onnxruntime-web (argv: packages folder, runtime).
NODE_CHILD = """
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
const [packages, runtime] = process.argv.slice(1);
const require = createRequire(join(packages, 'package.json'));
const loaded = await import(pathToFileURL(require.resolve(runtime)).href);
const ort = loaded.default ?? loaded;
if (runtime === 'onnxruntime-web') ort.env.wasm.numThreads = 1;
const [files, rows, pad] = JSON.parse(readFileSync(0, 'utf8'));
const manifest = join(packages, 'node_modules', runtime, 'package.json');
const version = JSON.parse(readFileSync(manifest, 'utf8')).version;
const out = { version, results: {}, load_ms: {} };
for (const path of files) {
  try {
    const bytes = readFileSync(path);
    const times = [];
    let session;
    for (let k = 0; k < 3; k++) {
      const start = performance.now();
      session = await ort.InferenceSession.create(bytes);
      times.push(performance.now() - start);
    }
    const vectors = [];
    for (const row of rows) {
      const ids = BigInt64Array.from(row.length ? row : [pad], BigInt);
      const mask = BigInt64Array.from(row.length ? row.map(() => 1) : [0], BigInt);
      const feeds = { input_ids: new ort.Tensor('int64', ids, [1, ids.length]),
                      attention_mask: new ort.Tensor('int64', mask, [1, mask.length]) };
      const result = await session.run(feeds, ['sentence_embedding']);
      vectors.push(Array.from(result.sentence_embedding.data));
    }
    out.results[path] = vectors;
    out.load_ms[path] = times.sort((a, b) => a - b)[1];
  } catch (error) {
    out.results[path] = String(error.message ?? error).split('\\n')[0].slice(0, 200);
  }
}
console.log(JSON.stringify(out));
"""


def unit(rows: Any) -> npt.NDArray[np.float64]:
    """Rows L2-normalised in float64 (a zero row stays zero)."""
    array = np.asarray(rows, dtype=np.float64)
    norms = np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12)
    out: npt.NDArray[np.float64] = array / norms
    return out


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__, out=harness.RESULTS)
    parser.add_argument("--folder", type=Path, required=True, help="an export with variants")
    parser.add_argument("--python", nargs="*", default=[], help="other Python interpreters")
    parser.add_argument("--packages", type=Path, help="folder whose node_modules holds them")
    args = parser.parse_args(argv)

    from sse_export.adversarial import adversarial_texts
    from sse_export.mobile import convert_to_ort
    from sse_onnx import folder as fmt

    manifest = fmt.read_manifest(args.folder)
    onnx_files = {v: args.folder / e.file for v, e in manifest.variants.items()}
    tokenizer = Tokenizer.from_file(str(args.folder / fmt.TOKENIZER_FILE))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    texts = [text for name, text in adversarial_texts()]
    rows = [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]
    long = np.array([len(row) >= 1000 for row in rows])
    with tempfile.TemporaryDirectory(prefix="sse-runtimes-") as tmp:
        ort_files = dict(
            zip(onnx_files, convert_to_ort(list(onnx_files.values()), Path(tmp)), strict=True)
        )
        files = [str(p) for p in [*onnx_files.values(), *ort_files.values()]]
        job = json.dumps([files, rows, manifest.pad_token_id])
        runtimes: dict[str, dict[str, Any]] = {}
        for python in [sys.executable, *args.python]:
            out = subprocess.run(
                [python, "-c", CHILD], input=job, capture_output=True, text=True, check=True
            )
            result = json.loads(out.stdout)
            runtimes[f"Python onnxruntime {result['version']}"] = result
        if args.packages:
            for runtime in ("onnxruntime-node", "onnxruntime-web"):
                out = subprocess.run(
                    ["node", "--input-type=module", "-e", NODE_CHILD, "--",
                     str(args.packages.resolve()), runtime],
                    input=job, capture_output=True, text=True, check=True,
                )  # fmt: skip
                result = json.loads(out.stdout)
                runtimes[f"{runtime} {result['version']}"] = result
        sizes = {v: (onnx_files[v].stat().st_size, ort_files[v].stat().st_size) for v in onnx_files}
        reference = runtimes[f"Python onnxruntime {ort.__version__}"]["results"]
        cells: dict[str, dict[str, str]] = {}
        loads: dict[str, dict[str, float]] = {}
        for name, result in runtimes.items():
            row = {}
            for variant in onnx_files:
                truth = unit(reference[str(onnx_files[variant])])
                for kind, path in ((".onnx", onnx_files[variant]), (".ort", ort_files[variant])):
                    got = result["results"][str(path)]
                    if isinstance(got, str):
                        # Name the file, not where this machine kept it.
                        row[f"{variant} {kind}"] = f"error: {got.replace(str(path), path.name)}"
                    else:
                        diffs = np.abs(unit(got) - truth).max(axis=1)
                        bounds = np.where(long, LONG_TOLERANCE, TOLERANCE)
                        within = bool((diffs <= bounds).all())
                        short_diff, long_diff = diffs[~long].max(), diffs[long].max()
                        row[f"{variant} {kind}"] = f"{short_diff:.0e} / {long_diff:.0e}" + (
                            "" if within else " (differs)"
                        )
            cells[name] = row
            loads[name] = {
                f"{variant} {kind}": result["load_ms"][str(path)]
                for variant in onnx_files
                for kind, path in ((".onnx", onnx_files[variant]), (".ort", ort_files[variant]))
                if str(path) in result["load_ms"]
            }
    summary = {
        "converted_by": ort.__version__,
        "sizes": {v: {"onnx": a, "ort": b} for v, (a, b) in sizes.items()},
        "cells": cells,
        "load_ms": loads,
    }
    harness.write_results(args.out, "runtimes", summary, markdown(summary))
    print(markdown(summary))
    return 0


def table(variants: list[str], rows: dict[str, dict[str, Any]], cell: Any) -> str:
    """A markdown table: a row per runtime, a column per variant and format."""
    head = "| runtime | " + " | ".join(f"{v} .onnx | {v} .ort" for v in variants) + " |"
    lines = [head, "|---" * (1 + 2 * len(variants)) + "|"]
    for name, row in rows.items():
        values = [cell(row.get(f"{v} {kind}")) for v in variants for kind in (".onnx", ".ort")]
        lines.append(f"| {name} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def markdown(summary: dict[str, Any]) -> str:
    """The matrix, the session creation times and the failures."""
    variants = list(summary["sizes"])
    sizes = ", ".join(
        f"{v} {s['onnx'] / 1e6:.2f} / {s['ort'] / 1e6:.2f} MB" for v, s in summary["sizes"].items()
    )
    errors = sorted(
        {
            f"- {name}, {cell}: {value.removeprefix('error: ')}"
            for name, row in summary["cells"].items()
            for cell, value in row.items()
            if value.startswith("error")
        }
    )
    return (
        "Max abs diff of the normalised `sentence_embedding` from Python onnxruntime "
        f"{summary['converted_by']} on the `.onnx` file, over the adversarial set (one text per "
        "call), texts under 1,000 tokens / the 20,000-token text (in one call); "
        '"differs": beyond 1e-5 / 1e-4; '
        f"`.ort` files converted by onnxruntime {summary['converted_by']}. Sizes "
        f"(.onnx / .ort): {sizes}.\n\n"
        + table(variants, summary["cells"], lambda v: "fails" if v.startswith("error") else v)
        + "\nSession creation, ms (the median of 3, from the file's bytes in memory for Node):"
        "\n\n"
        + table(variants, summary["load_ms"], lambda v: "" if v is None else f"{v:.0f}")
        + ("\nFailures:\n\n" + "\n".join(errors) + "\n" if errors else "")
    )


if __name__ == "__main__":
    sys.exit(main())
