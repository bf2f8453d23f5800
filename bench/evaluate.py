"""Retrieval (nDCG@10) and STS-B (Spearman) evaluation of SSE models at Matryoshka widths.

The data loading and scoring live in :mod:`sse_export.evaluate` (shared with the exporter's
quality report) and take any ``embed(texts) -> (n, dim) array`` callable. This script adds the
encoders and the CLI: an SSE checkpoint folder (through :class:`NumpySSE`, an independent
pure-numpy reference of the SSE forward pass), an exported folder (``sse_onnx.Encoder``) and the
teacher model. It needs the exporter installed (``pip install -e . -e ./export``).

Each dataset is embedded once at full width; a ``k``-dim result slices the first ``k`` columns
and L2-normalises again. For SSE this is exact: the head acts per dimension, so slicing before
or after it gives the same numbers, and slicing a normalised vector then renormalising equals
normalising the slice.

Data is read from ``../shared/data`` beside the repository, or from ``$SSE_DATA``; a dataset whose
folder is absent is skipped with a message.

Example::

    python -m bench.evaluate --checkpoint models/default --dims 384 256 128 64 32
    python -m bench.evaluate --checkpoint models/default --teacher --bm25 --json results.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from sse_export.evaluate import (
    DATA_ENV,
    DATASETS,
    DEFAULT_DATASETS,
    MATRYOSHKA_DIMS,
    NDCG_K,
    Embed,
    RetrievalData,
    RetrievalSpec,
    StsData,
    default_data_dir,
    evaluate,
    load_dataset,
    ndcg_at_k,
    truncate,
)
from sse_onnx import Encoder
from sse_onnx.embeddings import normalize

# `python -m bench.evaluate` runs from the root; bench/ is on sys.path as `python bench/...`.
harness = importlib.import_module("bench.harness" if __package__ else "harness")

__all__ = ["NumpySSE", "agreement", "main", "markdown_table", "onnx_embedder", "teacher_embedder"]

FloatArray = npt.NDArray[np.float32]


# --------------------------------------------------------------------------- encoders


class NumpySSE:
    """Pure-numpy reference of the SSE forward pass over a checkpoint folder.

    Tokenise without special tokens, padding or truncation; average the table rows of each text's
    ids ([UNK] included; an empty text gives a zero mean); apply ``beta * tanh(alpha * x + bias)``
    per dimension; L2-normalise.

    Args:
        table: Embedding table ``[vocab, dim]``.
        alpha: DyT ``alpha`` ``[dim]``.
        beta: DyT ``beta`` ``[dim]``.
        bias: DyT ``bias`` ``[dim]``.
        tokenizer: A ``tokenizers.Tokenizer``; its padding and truncation are switched off.
        batch_size: Texts per tokenisation and gather batch (bounds memory).
    """

    def __init__(
        self,
        table: FloatArray,
        alpha: FloatArray,
        beta: FloatArray,
        bias: FloatArray,
        tokenizer: Any,
        *,
        batch_size: int = 512,
    ) -> None:
        self.table = np.asarray(table, dtype=np.float32)
        self.alpha = np.asarray(alpha, dtype=np.float32)
        self.beta = np.asarray(beta, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)
        self.tokenizer = tokenizer
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.batch_size = batch_size

    @classmethod
    def from_checkpoint(cls, folder: str | os.PathLike[str]) -> NumpySSE:
        """Load ``model.safetensors`` and ``tokenizer.json`` from an SSE checkpoint folder.

        Raises:
            FileNotFoundError: If either file is missing.
            KeyError: If a tensor of the SSE layout is missing.
        """
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        path = Path(folder)
        for name in ("model.safetensors", "tokenizer.json"):
            if not (path / name).is_file():
                raise FileNotFoundError(f"{path / name} not found: is {path} an SSE checkpoint?")
        tensors = load_file(str(path / "model.safetensors"))
        missing = {"embedding.weight", "dyt.alpha", "dyt.beta", "dyt.bias"} - set(tensors)
        if missing:
            raise KeyError(f"{path / 'model.safetensors'} lacks {sorted(missing)}")
        return cls(
            tensors["embedding.weight"],
            tensors["dyt.alpha"],
            tensors["dyt.beta"],
            tensors["dyt.bias"],
            Tokenizer.from_file(str(path / "tokenizer.json")),
        )

    @property
    def dim(self) -> int:
        """Output width."""
        return int(self.table.shape[1])

    def bag_means(self, texts: list[str]) -> FloatArray:
        """Return the mean table row of each text's token ids (zero for an empty text)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            encodings = self.tokenizer.encode_batch(
                texts[start : start + self.batch_size], add_special_tokens=False
            )
            lengths = np.array([len(encoding.ids) for encoding in encodings], dtype=np.int64)
            if not lengths.any():
                continue
            flat = np.concatenate(
                [np.asarray(encoding.ids, dtype=np.int64) for encoding in encodings]
            )
            offsets = np.r_[0, np.cumsum(lengths)[:-1]]
            nonempty = lengths > 0
            # Empty bags hold no ids, so dropping their offsets leaves every other segment intact.
            sums = np.add.reduceat(self.table[flat], offsets[nonempty], axis=0)
            rows = start + np.flatnonzero(nonempty)
            out[rows] = sums / lengths[nonempty, None].astype(np.float32)
        return out

    def __call__(self, texts: list[str]) -> FloatArray:
        """Return L2-normalised SSE embeddings ``[len(texts), dim]``."""
        means = self.bag_means(texts)
        return normalize(self.beta * np.tanh(self.alpha * means + self.bias))


def onnx_embedder(folder: str, batch_size: int = 256) -> Embed:
    """Return ``sse_onnx.Encoder(folder)`` as an :data:`Embed` (L2-normalised output)."""
    encoder = Encoder(folder)

    def embed(texts: list[str]) -> FloatArray:
        vectors = encoder.encode(
            texts, batch_size=batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)

    return embed


def teacher_embedder() -> Embed:
    """Return the all-MiniLM-L6-v2 teacher as the recipe runs it (``models/teacher.py``).

    The recipe is the package ``models`` of the repository root, which ``python -m
    bench.evaluate`` run from the root can import.
    """
    try:
        from models import teacher
    except ModuleNotFoundError as exc:
        if exc.name != "models":
            raise
        raise SystemExit(
            "--teacher runs the recipe's models/teacher.py: run this script from the repository "
            "root as `python -m bench.evaluate ...`."
        ) from exc
    return teacher.encode


def bm25_ndcg(data: RetrievalData, k1: float = 0.9, b: float = 0.4) -> float:
    """nDCG@10 of BM25 (Lucene's formula, Pyserini's k1 and b) over lower-cased word tokens.

    No stemming and no stop words; it reproduces the BM25 figures of the data README (SciFact
    0.659, Vaswani 0.374, Cranfield 0.311).
    """
    from collections import Counter

    def words(text: str) -> list[str]:
        return re.findall(r"[a-z0-9]+", text.lower())

    postings: dict[str, list[tuple[int, int]]] = {}
    lengths = np.zeros(len(data.doc_texts))
    for doc, text in enumerate(data.doc_texts):
        counts = Counter(words(text))
        lengths[doc] = sum(counts.values())
        for term, count in counts.items():
            postings.setdefault(term, []).append((doc, count))
    norm = k1 * (1 - b + b * lengths / lengths.mean())
    scores = []
    for query_id, query in zip(data.query_ids, data.query_texts, strict=True):
        total = np.zeros(len(data.doc_texts))
        for term in set(words(query)):
            if term not in postings:
                continue
            docs, tf = (np.array(column) for column in zip(*postings[term], strict=True))
            idf = np.log(1 + (len(lengths) - len(docs) + 0.5) / (len(docs) + 0.5))
            total[docs] += idf * tf * (k1 + 1) / (tf + norm[docs])
        ranked = np.lexsort((np.arange(len(total)), -total))[:NDCG_K]
        scores.append(ndcg_at_k([data.doc_ids[i] for i in ranked], data.qrels[query_id]))
    return float(np.mean(scores))


def agreement(first: Embed, second: Embed, texts: list[str]) -> float:
    """Return the smallest cosine between two encoders' embeddings of the same texts.

    Compared over the narrower of the two widths, so that a ``--dim`` export of a checkpoint
    can be checked against the full checkpoint.
    """
    a, b = first(texts), second(texts)
    width = min(a.shape[1], b.shape[1])
    return float(np.min(np.sum(truncate(a, width) * truncate(b, width), axis=1)))


# --------------------------------------------------------------------------- reporting


def markdown_table(
    results: Mapping[int | None, Mapping[str, float]], columns: Sequence[str], label: str = "dim"
) -> str:
    """Format ``{width: {column: score}}`` as a markdown table with 4-decimal scores."""
    lines = [
        "| " + " | ".join([label, *columns]) + " |",
        "|" + "---|" * (len(columns) + 1),
    ]
    for dim, row in results.items():
        cells = [f"{row[column]:.4f}" if column in row else "n/a" for column in columns]
        lines.append("| " + " | ".join([str(dim if dim is not None else "full"), *cells]) + " |")
    return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="SSE checkpoint folder (model.safetensors)")
    parser.add_argument("--onnx", help="exported sse-onnx folder, run with sse_onnx.Encoder")
    parser.add_argument("--teacher", action="store_true", help="also score all-MiniLM-L6-v2")
    parser.add_argument("--bm25", action="store_true", help="also score BM25 on the retrieval sets")
    parser.add_argument("--dims", type=int, nargs="+", default=list(MATRYOSHKA_DIMS))
    parser.add_argument(
        "--datasets", nargs="+", default=list(DEFAULT_DATASETS), choices=sorted(DATASETS)
    )
    parser.add_argument(
        "--data", type=Path, help=f"data root (default: ${DATA_ENV} or ../shared/data)"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if not (args.checkpoint or args.onnx or args.teacher or args.bm25):
        parser.error("give at least one of --checkpoint, --onnx, --teacher, --bm25")
    return args


def _load_datasets(names: Sequence[str], data_dir: Path) -> dict[str, RetrievalData | StsData]:
    loaded: dict[str, RetrievalData | StsData] = {}
    for name in names:
        spec = DATASETS[name]
        data = load_dataset(spec, data_dir)
        if data is None:
            where = spec.folder if isinstance(spec, RetrievalSpec) else spec.file
            print(f"skipping {spec.title}: {data_dir / where} not found", file=sys.stderr)
            continue
        loaded[spec.title] = data
    return loaded


def _sample_texts(datasets: Mapping[str, RetrievalData | StsData], size: int = 500) -> list[str]:
    """Return up to ``size`` texts taken evenly from the loaded datasets, for parity checks."""
    texts: list[str] = []
    for data in datasets.values():
        pool = (
            data.query_texts + data.doc_texts
            if isinstance(data, RetrievalData)
            else data.sentences1
        )
        texts.extend(pool[: size // len(datasets)])
    return texts


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data_dir = args.data or default_data_dir()
    datasets = _load_datasets(args.datasets, data_dir)
    if not datasets:
        print(f"no dataset found under {data_dir}; set ${DATA_ENV}", file=sys.stderr)
        return 1

    encoders: list[tuple[str, Embed, list[int | None]]] = []
    if args.checkpoint:
        encoders.append(
            (f"checkpoint {args.checkpoint}", NumpySSE.from_checkpoint(args.checkpoint), args.dims)
        )
    if args.onnx:
        onnx = onnx_embedder(args.onnx)
        if encoders:
            sample = _sample_texts(datasets)
            min_cosine = agreement(encoders[0][1], onnx, sample)
            print(f"checkpoint vs onnx on {len(sample)} texts: min cosine {min_cosine:.6f}")
        encoders.append((f"onnx {args.onnx}", onnx, args.dims))
    if args.teacher:
        # The teacher is not Matryoshka-trained: report its native width only.
        encoders.append(("teacher all-MiniLM-L6-v2", teacher_embedder(), [None]))

    report: dict[str, Any] = {
        "environment": harness.environment(("numpy", "tokenizers")),
        "ndcg_k": NDCG_K,
        "models": {},
    }
    columns = list(datasets)
    for name, embed, dims in encoders:
        started = time.perf_counter()
        results = evaluate(embed, datasets, dims)
        seconds = time.perf_counter() - started
        print(f"\n{name} ({seconds:.1f} s; nDCG@{NDCG_K} / Spearman)\n")
        print(markdown_table(results, columns))
        report["models"][name] = {
            "seconds": round(seconds, 2),
            "results": {str(dim or "full"): row for dim, row in results.items()},
        }
    if args.bm25:
        started = time.perf_counter()
        row = {t: bm25_ndcg(d) for t, d in datasets.items() if isinstance(d, RetrievalData)}
        seconds = time.perf_counter() - started
        print(f"\nBM25 k1=0.9 b=0.4, no stemming ({seconds:.1f} s; nDCG@{NDCG_K})\n")
        print(markdown_table({None: row}, columns))
        report["models"]["bm25"] = {"seconds": round(seconds, 2), "results": {"full": row}}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
