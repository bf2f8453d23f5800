"""Write tests/golden/default_model.jsonl: token ids and embeddings of the bundled default model.

Never edit the JSONL by hand; rerun this after the bundled model (``sse_onnx/default_model``) or
the text set below changes, and commit the result with the model:

    python tests/golden/regenerate.py

``tests/test_golden.py`` then checks, on every run, that HF ``tokenizers`` and the runtime's own
tokenizer give exactly these ids and that ``Encoder()`` gives these embeddings within 1e-6, so a
``tokenizers`` or onnxruntime release that moves an id or a vector fails by name. Needs only the
runtime (``pip install .``).

The first line describes what made the file (the model file's sha256, its variant and width, the
library versions); each further line is one text: ``name``, ``text``, ``ids`` (HF
``encode(text, add_special_tokens=False)``, SSE's rule) and ``embedding`` (float32, normalised).
"""

from __future__ import annotations

import argparse
import json
import unicodedata
from importlib.metadata import version
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from sse_onnx import Encoder

GOLDEN = Path(__file__).resolve().parent / "default_model.jsonl"

_ACCENTED = "Café naïve résumé Ångström São Paulo Zürich Œuvre façade"
#: Longer than the runtime's chunk of 4,096 ids, so the chunked sum of a long text is covered.
_LONG = " ".join(
    ["static", "embeddings", "map", "each", "token", "to", "a", "row", "and", "average", "them"]
    * 480
)

#: ``(name, text)``: the edge cases of tokenization and pooling, then ordinary sentences.
TEXTS: list[tuple[str, str]] = [
    ("empty", ""),
    ("spaces only", "   \t \n  "),
    ("unicode spaces only", "\u00a0\u2003\u3000\u2009"),
    ("accents composed", unicodedata.normalize("NFC", _ACCENTED)),
    ("accents decomposed", unicodedata.normalize("NFD", _ACCENTED)),
    ("emoji with zwj", "family 👨\u200d👩\u200d👧\u200d👦, flag 🏳\ufe0f\u200d🌈, thumbs 👍🏽"),
    ("cjk", "東京は日本の首都です。北京欢迎你！한국어 문장"),  # noqa: RUF001
    ("rtl", "مرحبا بالعالم — שלום עולם"),
    ("control characters", "bell\x07 nul\x00 esc\x1b[31mred\x1b[0m\r\nzero\u200bwidth\ufeffbom"),
    ("only unknown characters", "🧪🧫 🦠 ☄︎"),
    ("special token strings", "[CLS] [SEP] [PAD] [MASK] [UNK]"),
    ("overlong word", "pneumono" * 20),
    ("numbers", "3.14159 1,000,000 -42 1e-9 2026-11-23 0x1F 5% $12.50"),
    ("code", "def f(x):\n    return x ** 2  # square\nfoo_bar.baz(**kw) != {}"),
    ("url and email", "https://example.com/a/b?q=static+embeddings&lang=en#top user@example.org"),
    ("punctuation runs", "wait... what?!? (really) -- yes; 'quoted' \"double\" «guillemets»"),
    ("mixed case", "ONNX Runtime, onnxruntime and OnnxRuntime"),
    ("long", _LONG),
    ("sentence query", "how fast are static embeddings?"),
    ("sentence relevant", "Static embeddings are fast."),
    ("sentence unrelated", "The cat sat on the mat."),
    ("sentence scientific", "Vitamin D supplementation reduces the risk of fractures in adults."),
]


def records() -> list[dict[str, object]]:
    """The header and one record per text, as the JSONL holds them."""
    encoder = Encoder()
    hf = Tokenizer.from_file(str(encoder.folder / encoder.manifest.tokenizer.file))
    texts = [text for _, text in TEXTS]
    embeddings = encoder.encode(texts)
    entry = encoder.manifest.variants[encoder.variant]
    header: dict[str, object] = {
        "generated_by": "tests/golden/regenerate.py",
        "model_file": entry.file,
        "model_sha256": entry.sha256,
        "variant": encoder.variant,
        "dim": encoder.dim,
        "versions": {name: version(name) for name in ("tokenizers", "onnxruntime", "numpy")},
    }
    rows: list[dict[str, object]] = [header]
    for (name, text), vector in zip(TEXTS, embeddings, strict=True):
        ids = hf.encode(text, add_special_tokens=False).ids
        # The shortest decimal that reads back as the same float32.
        embedding = [float(np.format_float_positional(x, unique=True)) for x in vector]
        rows.append({"name": name, "text": text, "ids": ids, "embedding": embedding})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Write the JSONL (``--output``, default tests/golden/default_model.jsonl)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=GOLDEN, help="file to write")
    args = parser.parse_args(argv)
    lines = [json.dumps(row, ensure_ascii=False) for row in records()]
    args.output.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines) - 1} texts to {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
