"""The corpus job's progress bar: documents, and tokens per second when they are counted."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["Advance", "progress_bar"]

#: ``advance(docs, tokens_so_far)``: called as each batch or shard is written.
Advance = Callable[[int, int], None]


@contextmanager
def progress_bar(show: bool) -> Iterator[Advance]:
    """Yield ``advance(docs, tokens_so_far)`` that moves a tqdm bar with throughput on stderr.

    With ``show`` false, ``advance`` does nothing (and tqdm is not imported).
    """
    if not show:
        yield lambda _docs, _tokens: None
        return
    from tqdm.auto import tqdm

    started = time.perf_counter()
    with tqdm(unit="doc", unit_scale=True, desc="Embedding", file=sys.stderr) as bar:

        def advance(docs: int, tokens: int) -> None:
            if tokens:
                rate = tokens / max(time.perf_counter() - started, 1e-9)
                bar.set_postfix_str(f"{rate:,.0f} tokens/s", refresh=False)
            bar.update(docs)

        yield advance
