"""JavaScript tokenizers against Hugging Face tokenizers: how often their ids differ.

Compares, with HF ``encode(text, add_special_tokens=False)`` on the default model's
bert-base-uncased tokenizer,

- tokenizers.js (``@huggingface/tokenizers``, the tokenizer transformers.js runs), reading the
  same ``tokenizer.json``;
- ``sse-onnx.mjs``'s ``WordPieceTokenizer`` (the web target), reading ``tokenizer_web.json``;

on the adversarial set, the SciFact queries, the SciFact corpus ("title text") and every
Unicode scalar value (in runs of 64, spaced and joined, as the web test writes them). tokenizers.js
is installed apart from the tests' packages, e.g.::

    mkdir js && (cd js && npm install --ignore-scripts @huggingface/tokenizers@0.2.0)
    python bench/tokenizer_js.py --folder sse-web --packages js --out bench/results

Writes ``tokenizer_js.json`` and ``tokenizer_js.md``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import harness
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve().parent / "web" / "tokenizer_js.mjs"


def text_sets(data: Path) -> dict[str, list[str]]:
    """The texts compared, by set; the SciFact sets only where the data is present."""
    from sse_export.adversarial import adversarial_texts

    sets = {"adversarial set": [text for _, text in adversarial_texts()]}
    scifact = data / "retrieval" / "scifact"
    if scifact.is_dir():
        with (scifact / "queries.jsonl").open(encoding="utf-8") as handle:
            sets["SciFact queries"] = [json.loads(line)["text"] for line in handle]
        with (scifact / "corpus.jsonl").open(encoding="utf-8") as handle:
            docs = [json.loads(line) for line in handle]
        sets["SciFact corpus"] = [f"{d.get('title', '')} {d.get('text', '')}".strip() for d in docs]
    codes = [c for c in range(0x110000) if not 0xD800 <= c < 0xE000]
    runs = [list(map(chr, codes[start : start + 64])) for start in range(0, len(codes), 64)]
    sets["every code point, runs of 64 spaced"] = [" ".join(run) for run in runs]
    sets["every code point, runs of 64 joined"] = ["".join(run) for run in runs]
    return sets


def hf_ids(tokenizer: Tokenizer, texts: list[str]) -> list[list[int]]:
    return [e.ids for e in tokenizer.encode_batch(texts, add_special_tokens=False)]


def main(argv: list[str] | None = None) -> int:
    parser = harness.parser(__doc__, out=harness.RESULTS, data=True)
    parser.add_argument("--folder", type=Path, required=True, help="a web folder")
    parser.add_argument("--packages", type=Path, required=True, help="holds node_modules")
    args = parser.parse_args(argv)

    tokenizer_path = args.folder / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    sets = text_sets(harness.data_dir(args.data))
    job = {
        "tokenizer": json.loads(tokenizer_path.read_text(encoding="utf-8")),
        # What a BERT tokenizer_config.json says (the mobile bundle writes the same).
        "config": {"tokenizer_class": "BertTokenizer", "do_lower_case": True},
        "sets": {
            name: [[text, ids] for text, ids in zip(texts, hf_ids(tokenizer, texts), strict=True)]
            for name, texts in sets.items()
        },
    }
    with tempfile.TemporaryDirectory(prefix="sse-tokenizer-js-") as tmp:
        job_path, out_path = Path(tmp, "job.json"), Path(tmp, "out.json")
        job_path.write_text(json.dumps(job, ensure_ascii=False), encoding="utf-8")
        subprocess.run(
            ["node", str(SCRIPT), str(args.packages.resolve()), str(args.folder.resolve()),
             str(job_path), str(out_path)],
            check=True,
        )  # fmt: skip
        results = json.loads(out_path.read_text(encoding="utf-8"))
    harness.write_results(args.out, "tokenizer_js", results, markdown(results))
    print(markdown(results))
    return 0


def markdown(results: dict[str, dict[str, Any]]) -> str:
    """A row per tokenizer and set, then the first differing texts of each."""
    lines = [
        "Ids compared with Hugging Face tokenizers' `encode(text, add_special_tokens=False)`, "
        "bert-base-uncased (the default model's tokenizer).\n",
        "| tokenizer | texts | count | ids differ | rate | errors |",
        "|---|---|---|---|---|---|",
    ]
    for name, sets in results.items():
        for set_name, r in sets.items():
            rate = 100 * r["differ"] / max(r["texts"], 1)
            lines.append(
                f"| {name} | {set_name} | {r['texts']:,} | {r['differ']:,} | {rate:.2f}% | "
                f"{r['failed']} |"
            )
    lines.append("")
    for name, sets in results.items():
        for set_name, r in sets.items():
            for example in r["examples"]:
                lines.append(
                    f"- {name}, {set_name}: {example['text']!r} from id {example['at']}: "
                    f"HF {example['hf']} vs {example['got']}"
                )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
