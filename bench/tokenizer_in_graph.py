"""A string-in, embedding-out graph with onnxruntime-extensions: how often its token ids differ.

The candidate graph takes one raw text (a string tensor of shape ``[1]``), tokenizes it with
onnxruntime-extensions' ``BertTokenizer`` custom op (the op its ``gen_processing_models`` emits
for a BERT tokenizer), drops the ``[CLS]``/``[SEP]`` that op always adds (``Slice [1:-1]``) and
feeds the exported SSE graph, returning ``sentence_embedding`` and the ids it used. It could be
shipped only if those ids equal HF ``tokenizer.encode(text, add_special_tokens=False)`` on every
text; this script measures how often they do not, on the adversarial set, the SciFact queries
and the SciFact corpus, for two settings of the op:

- ``strip_accents=0``: what ``gen_processing_models`` writes for bert-base-uncased (its
  converter reads ``strip_accents`` from the tokenizer's init kwargs, which do not set it);
- ``strip_accents=1``: what HF's ``BertNormalizer`` does with ``lowercase=True`` and
  ``strip_accents=None`` (accents follow lowercasing), i.e. the closest setting.

For each mismatching text it names the characters that tokenize differently on their own or
between two letters, and gives the cosine of the graph's embedding with ``Encoder``'s (exact)
one. Needs ``pip install onnxruntime-extensions`` (in the ``bench`` extra).

Example::

    python bench/tokenizer_in_graph.py --out bench/results
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import unicodedata
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import harness
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper
from tokenizers import Tokenizer

from sse_export.adversarial import adversarial_texts
from sse_onnx import Encoder
from sse_onnx import folder as fmt
from sse_onnx.encoder import DEFAULT_MODEL

logger = logging.getLogger("tokenizer_in_graph")

CONTRIB = "ai.onnx.contrib"
TEXT, IDS = "text", "token_ids"
#: Prefix of the tokenizer front's other names, apart from every name of the SSE graph.
PREFIX = "tokenizer/"
EXAMPLES = 3


def string_in_graph(folder: Path, variant: str, strip_accents: int) -> onnx.ModelProto:
    """The exported SSE graph behind onnxruntime-extensions' BertTokenizer.

    Inputs: ``text`` string ``[1]``. Outputs: ``sentence_embedding`` ``[1, dim]`` (before
    normalisation) and ``token_ids`` ``[n]`` (the ids fed to the SSE graph).
    """
    config = json.loads((folder / fmt.TOKENIZER_FILE).read_text(encoding="utf-8"))
    vocab = sorted(config["model"]["vocab"].items(), key=lambda item: item[1])
    sse = onnx.load(str(folder / fmt.VARIANT_FILES[variant]))
    ids_2d, mask_2d = PREFIX + fmt.INPUT_IDS, PREFIX + fmt.ATTENTION_MASK
    nodes = [
        helper.make_node(
            "BertTokenizer",
            [TEXT],
            [PREFIX + "with_special", PREFIX + "type_ids", PREFIX + "mask"],
            domain=CONTRIB,
            vocab_file="\n".join(token for token, _ in vocab),
            do_lower_case=1,
            strip_accents=strip_accents,
        ),
        # The op always wraps the text in [CLS] ... [SEP]; SSE embeds neither.
        helper.make_node("Slice", [PREFIX + "with_special", PREFIX + "1", PREFIX + "-1"], [IDS]),
        helper.make_node("Unsqueeze", [IDS, PREFIX + "0"], [ids_2d]),
        helper.make_node("Shape", [ids_2d], [PREFIX + "shape"]),
        helper.make_node(
            "ConstantOfShape",
            [PREFIX + "shape"],
            [mask_2d],
            value=helper.make_tensor(PREFIX + "value", TensorProto.INT64, [1], [1]),
        ),
    ]
    front = helper.make_graph(
        nodes,
        "bert_tokenizer_front",
        [helper.make_tensor_value_info(TEXT, TensorProto.STRING, [1])],
        [
            helper.make_tensor_value_info(ids_2d, TensorProto.INT64, [1, None]),
            helper.make_tensor_value_info(mask_2d, TensorProto.INT64, [1, None]),
            helper.make_tensor_value_info(IDS, TensorProto.INT64, [None]),
        ],
        initializer=[
            helper.make_tensor(PREFIX + str(v), TensorProto.INT64, [1], [v]) for v in (1, -1, 0)
        ],
    )
    opsets = [*sse.opset_import, helper.make_opsetid(CONTRIB, 1)]
    front_model = helper.make_model(front, opset_imports=opsets, ir_version=sse.ir_version)
    sse.opset_import.append(helper.make_opsetid(CONTRIB, 1))
    return onnx.compose.merge_models(
        front_model,
        sse,
        io_map=[(ids_2d, fmt.INPUT_IDS), (mask_2d, fmt.ATTENTION_MASK)],
        outputs=[fmt.SENTENCE_EMBEDDING, IDS],
    )


class StringInGraph:
    """One onnxruntime session of :func:`string_in_graph`."""

    def __init__(self, model: onnx.ModelProto) -> None:
        from onnxruntime_extensions import get_library_path

        options = ort.SessionOptions()
        options.register_custom_ops_library(get_library_path())
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(model.SerializeToString(), options)

    def run(self, text: str) -> tuple[list[int], np.ndarray]:
        embedding, ids = self.session.run(
            [fmt.SENTENCE_EMBEDDING, IDS], {TEXT: np.array([text], dtype=object)}
        )
        return ids.tolist(), embedding[0]


def differing_characters(
    text: str, hf: Tokenizer, graph: StringInGraph, cache: dict[str, bool]
) -> list[str]:
    """Characters of ``text`` tokenized differently alone or between two letters."""
    found = []
    for char in dict.fromkeys(text):
        if char not in cache:
            probes = (char, f"a{char}b")
            cache[char] = any(
                hf.encode(p, add_special_tokens=False).ids != graph.run(p)[0] for p in probes
            )
        if cache[char]:
            found.append(char)
    return found


def char_label(char: str) -> str:
    name = unicodedata.name(char, f"U+{ord(char):04X}")
    return f"{char!r} {name} ({unicodedata.category(char)})"


def example(
    text: str, chars: Sequence[str], expected: list[int], ids: list[int], hf: Tokenizer
) -> dict[str, Any]:
    """An excerpt around the first differing character and the tokens around the first
    differing id."""
    at = text.find(chars[0]) if chars else 0
    first = next((i for i, (a, b) in enumerate(zip(expected, ids, strict=False)) if a != b), None)
    first = min(len(expected), len(ids)) if first is None else first
    window = slice(max(0, first - 2), first + 4)
    return {
        "excerpt": text[max(0, at - 30) : at + 30],
        "hf": [hf.id_to_token(i) for i in expected[window]],
        "graph": [hf.id_to_token(i) for i in ids[window]],
    }


def measure(
    texts: Sequence[str], hf: Tokenizer, graph: StringInGraph, encoder: Encoder
) -> dict[str, Any]:
    """Mismatch count, embedding cosines and character causes over ``texts``."""
    exact = encoder.encode(list(texts))
    mismatching, cosines = 0, []
    causes: Counter[str] = Counter()
    examples: dict[str, list[dict[str, Any]]] = {}
    cache: dict[str, bool] = {}
    special = {hf.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]", "[MASK]")}
    for text, reference in zip(texts, exact, strict=True):
        expected = hf.encode(text, add_special_tokens=False).ids
        ids, embedding = graph.run(text)
        if ids == expected:
            continue
        mismatching += 1
        cosines.append(float(embedding @ reference / max(np.linalg.norm(embedding), 1e-12)))
        chars = differing_characters(text, hf, graph, cache)
        labels = [char_label(c) for c in chars]
        if special & set(expected):
            labels.append("a special-token string ([CLS], [SEP], ...) in the text")
        if not labels:
            labels = ["(no single character: context)"]
        for label in labels:
            causes[label] += 1
            if len(examples.setdefault(label, [])) < EXAMPLES:
                examples[label].append(example(text, chars, expected, ids, hf))
    return {
        "texts": len(texts),
        "mismatching": mismatching,
        "rate": mismatching / len(texts),
        "min_cosine": min(cosines, default=1.0),
        "median_cosine": float(np.median(cosines)) if cosines else 1.0,
        "causes": causes.most_common(),
        "examples": examples,
    }


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    data = harness.scifact(args.data)
    folder = Path(args.model) if args.model else DEFAULT_MODEL
    manifest = fmt.read_manifest(folder)
    encoder = Encoder(folder, variant=manifest.default_variant, threads=1)
    hf = Tokenizer.from_file(str(folder / fmt.TOKENIZER_FILE))
    hf.no_padding()
    hf.no_truncation()
    sets = {
        "adversarial set": [text for _, text in adversarial_texts()],
        "SciFact queries": data.query_texts,
        "SciFact corpus": data.doc_texts,
    }
    rows = []
    for strip_accents in (0, 1):
        graph = StringInGraph(string_in_graph(folder, manifest.default_variant, strip_accents))
        for name, texts in sets.items():
            row = measure(texts, hf, graph, encoder)
            row.update(setting=f"strip_accents={strip_accents}", texts_name=name)
            logger.info(
                "strip_accents=%d %s: %d of %d differ",
                strip_accents,
                name,
                row["mismatching"],
                row["texts"],
            )
            rows.append(row)
    import onnxruntime_extensions

    return {
        "model": manifest.model_name,
        "variant": manifest.default_variant,
        "versions": {
            "python": platform.python_version(),
            "onnxruntime": ort.__version__,
            "onnxruntime_extensions": onnxruntime_extensions.__version__,
        },
        "rows": rows,
    }


def markdown(results: dict[str, Any]) -> str:
    versions = results["versions"]
    lines = [
        f"onnxruntime-extensions {versions['onnxruntime_extensions']} BertTokenizer + "
        f"{results['model']} ({results['variant']}) on onnxruntime {versions['onnxruntime']}; "
        "ids compared with HF `encode(text, add_special_tokens=False)`.",
        "",
        "| op setting | texts | count | ids differ | rate | min / median cosine of those |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["rows"]:
        lines.append(
            f"| {r['setting']} | {r['texts_name']} | {r['texts']:,} | {r['mismatching']:,} | "
            f"{r['rate']:.2%} | {r['min_cosine']:.4f} / {r['median_cosine']:.4f} |"
        )
    for r in results["rows"]:
        if not r["causes"]:
            continue
        lines += ["", f"Causes, {r['setting']}, {r['texts_name']} (texts affected):", ""]
        for label, count in r["causes"]:
            example = r["examples"][label][0]
            lines.append(
                f"- {label}: {count}; e.g. {example['excerpt']!r}: HF {example['hf']} vs "
                f"graph {example['graph']}"
            )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    harness.setup_logging()
    parser = harness.parser(__doc__, data=True)
    parser.add_argument("--model", help="exported folder (default: the bundled default model)")
    args = parser.parse_args(argv)
    results = run_all(args)
    harness.write_results(
        args.out, "tokenizer_in_graph", results, markdown(results), ensure_ascii=False
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
