"""The built-in adversarial text set every export is validated on.

Each text stresses one rule of SSE tokenization or pooling: the empty bag, text that normalises
to nothing, Unicode normalisation, characters the vocabulary lacks ([UNK] must stay in the mean),
and a text far longer than any truncating tokenizer would keep.
"""

from __future__ import annotations

import unicodedata

__all__ = ["LONG_TEXT_TOKENS", "adversarial_texts"]

#: Word count of the long text; each word below is a single bert-base-uncased token.
LONG_TEXT_TOKENS = 20_000

_ACCENTED = "Café naïve résumé Ångström São Paulo Zürich Œuvre façade"
_LONG_WORDS = [
    "the",
    "model",
    "maps",
    "every",
    "token",
    "to",
    "a",
    "row",
    "and",
    "the",
    "text",
    "to",
    "the",
    "mean",
    "of",
    "its",
    "rows",
    "then",
    "a",
    "per",
    "dimension",
    "curve",
    "keeps",
    "the",
    "scale",
    "stable",
    "while",
    "retrieval",
    "stays",
    "fast",
    "on",
    "small",
    "devices",
]


def adversarial_texts() -> list[tuple[str, str]]:
    """Return ``(name, text)`` pairs, names unique, in a fixed order."""
    long_text = " ".join(_LONG_WORDS[i % len(_LONG_WORDS)] for i in range(LONG_TEXT_TOKENS))
    return [
        ("empty", ""),
        ("spaces only", "   \t \n  "),
        ("unicode spaces only", "\u00a0\u2003\u3000\u2009"),
        ("plain", "Static embeddings are fast."),
        ("accents composed", unicodedata.normalize("NFC", _ACCENTED)),
        ("accents decomposed", unicodedata.normalize("NFD", _ACCENTED)),
        ("emoji with zwj", "family 👨\u200d👩\u200d👧\u200d👦, flag 🏳\ufe0f\u200d🌈, thumbs 👍🏽"),
        ("cjk", "東京は日本の首都です。北京欢迎你！한국어 문장"),  # noqa: RUF001
        ("rtl", "مرحبا بالعالم — שלום עולם"),
        (
            "control characters",
            "bell\x07 nul\x00 esc\x1b[31mred\x1b[0m\r\nzero\u200bwidth\ufeffbom",
        ),
        ("only unknown characters", "🧪🧫 🦠 ☄︎"),
        ("special token strings", "[CLS] [SEP] [PAD] [MASK] [UNK]"),
        ("overlong word", "pneumono" * 20),
        ("numbers", "3.14159 1,000,000 -42 1e-9 2026-11-23 0x1F 5% $12.50"),
        ("code", "def f(x):\n    return x ** 2  # square\nfoo_bar.baz(**kw) != {}"),
        (
            "url and email",
            "https://example.com/a/b?q=static+embeddings&lang=en#top user@example.org",
        ),
        ("mixed case and punctuation", "WHY?!... Don't-stop; e.g. U.S.A. (see §2.1) «quotes»"),
        ("unicode spaces between words", "word\u00a0word\u2003word\u3000word\u2009word"),
        ("long text", long_text),
    ]
