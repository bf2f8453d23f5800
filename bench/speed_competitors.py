"""The runtimes ``bench/speed.py`` measures sse-onnx against, on the same stored tables."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from speed_measure import (
    BATCH,
    Embed,
    FloatArray,
    Texts,
    batched,
    latencies_us,
    measure_throughput,
)

from sse_export.checkpoint import Checkpoint
from sse_export.quantize import encode_sseq
from sse_onnx.embeddings import normalize


def torch_reference(table: FloatArray, head: Sequence[FloatArray], tokenizer: Path) -> Embed:
    """HF ``encode_batch`` + ``EmbeddingBag(mode="mean")`` + DyT, as export/reference.py."""
    import torch
    from tokenizers import Tokenizer

    from sse_export.reference import SSE

    # One thread: idle OpenMP workers would otherwise spin beside the runtimes measured next.
    torch.set_num_threads(1)
    module = SSE.from_arrays(table, *head)
    hf = Tokenizer.from_file(str(tokenizer))
    hf.no_padding()
    hf.no_truncation()

    def embed(texts: list[str]) -> FloatArray:
        ids = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
        return normalize(module.embed(ids))

    return batched(embed)


@dataclass(frozen=True)
class Competitor:
    """A runtime measured against sse-onnx.

    Attributes:
        factory: ``batch size -> embed(texts)``.
        sizes: The batch sizes it is measured with (the best is reported, so that each runs
            as well as its own API allows).
        one: Its call on one text, ``(dim,)`` out.
        fresh_one: Builds a new instance (empty caches) and returns its ``one``; ``None``
            when the runtime keeps no cache.
    """

    factory: Callable[[int], Embed]
    sizes: tuple[int, ...]
    one: Callable[[str], FloatArray]
    fresh_one: Callable[[], Callable[[str], FloatArray]] | None = None


def fixed_batch(embed: Embed) -> Competitor:
    """A competitor that batches by itself whatever the size asked, in calls of 32."""
    return Competitor(lambda _size: embed, (BATCH,), one_text(embed))


def one_text(embed: Embed) -> Callable[[str], FloatArray]:
    """``embed`` called on a single text, as a query would be."""
    return lambda text: embed([text])[0]


def static_embed_runner(
    table: FloatArray, head: Sequence[FloatArray], tokenizer: Path
) -> Competitor | None:
    """static-embed-runner on the same dense table and head (its own pure-Python tokenizer).

    Its loader reads a head only with a 4-bit table, so the dense runner is built with its
    constructor and table class. Its list path pools through a count matrix, its single-text
    path through a gather: calls of 1, 32 and 512 texts are measured.
    """
    try:
        from static_embed_runner import StaticEmbedRunner
        from static_embed_runner.hf_tokenizer_lite import LiteTokenizer
        from static_embed_runner.runner import _DenseTable
    except ImportError:
        return None
    dense = _DenseTable(table)

    def fresh() -> Any:
        lite = LiteTokenizer.from_file(str(tokenizer))
        return StaticEmbedRunner(dense, tuple(head), lite, "lite")

    runner = fresh()
    return Competitor(
        lambda size: batched(runner.encode, size),
        (1, 32, 512),
        runner.encode,  # a str in, (dim,) out: its single-text path
        lambda: fresh().encode,
    )


def static_embed_runner_q4(
    checkpoint: Checkpoint, dim: int, tokenizer: Path, work: Path
) -> Competitor | None:
    """static-embed-runner loading SSE's own 4-bit files (the bytes of our int4 variant)."""
    try:
        from safetensors.numpy import save_file
        from static_embed_runner import StaticEmbedRunner
    except ImportError:
        return None
    folder = work / f"sseq-{dim}"
    folder.mkdir(exist_ok=True)
    packed, scale = encode_sseq(checkpoint.table[:, :dim])
    with open(folder / "embedding.q4_k_m.bin", "wb") as handle:
        handle.write(np.ascontiguousarray(packed).tobytes())
        handle.write(np.ascontiguousarray(scale, dtype=np.float32).tobytes())
    rest = {
        f"dyt.{name}": np.ascontiguousarray(getattr(checkpoint, name)[:dim])
        for name in ("alpha", "beta", "bias")
    }
    save_file(rest, str(folder / "model_rest.safetensors"))
    (folder / "tokenizer.json").write_bytes(tokenizer.read_bytes())
    runner = StaticEmbedRunner.load(str(folder))
    return Competitor(lambda size: batched(runner.encode, size), (1, 32, 512), runner.encode)


def model2vec_static(
    table: FloatArray, head: Sequence[FloatArray], tokenizer: Path
) -> Competitor | None:
    """model2vec's ``StaticModel`` mean pooling on the same table, then DyT in numpy.

    model2vec drops [UNK] before pooling and truncates at 512 tokens by default; SSE does
    neither, so ``unk_token_id`` is cleared and ``max_length=None`` is passed. Its batch size
    32 and its default 1024 are measured.
    """
    try:
        from model2vec import StaticModel
    except ImportError:
        return None
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(str(tokenizer))
    model = StaticModel(vectors=table, tokenizer=hf, normalize=False)
    model.unk_token_id = None
    alpha, beta, bias = head

    def factory(size: int) -> Embed:
        def embed(texts: list[str]) -> FloatArray:
            mean = model.encode(texts, max_length=None, batch_size=size, use_multiprocessing=False)
            return normalize((beta * np.tanh(alpha * mean + bias)).astype(np.float32))

        return embed

    return Competitor(factory, (32, 1024), one_text(factory(32)))


def measure_competitor(
    name: str,
    competitor: Competitor,
    texts: Texts,
    reference: dict[str, FloatArray],
    repeats: int,
    passes: int,
    smoke: bool,
) -> dict[str, Any]:
    """The best docs/s and queries/s over the competitor's batch sizes, and its latency
    (warm, and cold on a fresh instance when it caches)."""
    sizes = competitor.sizes[:1] if smoke else competitor.sizes
    rows = []
    for size in sizes:
        embed = competitor.factory(size)
        rows.append(measure_throughput(name, embed, competitor.one, texts, reference, repeats, 0))
    best_docs = max(range(len(sizes)), key=lambda i: rows[i]["docs_per_s"])
    best_queries = max(range(len(sizes)), key=lambda i: rows[i]["queries_per_s"])
    cold = (
        latencies_us(competitor.fresh_one(), texts.queries, 1)
        if competitor.fresh_one is not None
        else None
    )
    latency = latencies_us(competitor.one, texts.queries, passes)
    return {
        "runtime": name,
        "docs_per_s": rows[best_docs]["docs_per_s"],
        "docs_batch": sizes[best_docs],
        "queries_per_s": rows[best_queries]["queries_per_s"],
        "queries_batch": sizes[best_queries],
        "per_batch": {
            size: (r["docs_per_s"], r["queries_per_s"]) for size, r in zip(sizes, rows, strict=True)
        },
        "p50_us": float(np.percentile(latency, 50)),
        "p99_us": float(np.percentile(latency, 99)),
        "p50_cold_us": None if cold is None else float(np.percentile(cold, 50)),
        "min_cosine": min(r["min_cosine"] for r in rows),
    }
