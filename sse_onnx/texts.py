"""What every text the runtime takes must be: valid Unicode (one rule for the encoder and the
index)."""

from __future__ import annotations

import re

__all__ = ["check_unicode"]

#: A lone UTF-16 surrogate: a str Python accepts but that no tokenizer or UTF-8 file can hold.
_SURROGATE = re.compile("[\ud800-\udfff]")


def check_unicode(text: str, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` if ``text`` holds a lone surrogate."""
    found = _SURROGATE.search(text)
    if found:
        raise ValueError(
            f"{name} is not valid Unicode: it holds the lone surrogate U+{ord(found.group()):04X} "
            f"at character {found.start()}. Decode the source with errors='replace', or clean "
            "the text with text.encode('utf-8', 'replace').decode('utf-8')."
        )
