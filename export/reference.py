"""The PyTorch reference of each checkpoint family, used to validate every export.

It restates the published modules: an ``EmbeddingBag(mode="mean")`` over flat token ids and
offsets (an empty bag gives a zero vector), then for SSE ``SeparableDyT``:
``y = beta * tanh(alpha * x + bias)`` with one value per dimension, and for families that
normalise (a sentence-transformers ``Normalize`` module, Model2Vec's ``normalize``)
``torch.nn.functional.normalize``. :func:`reference_ids` restates each family's token rules
with the Hugging Face tokenizer, as the family's library calls it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from tokenizers import Tokenizer
from torch import nn
from torch.nn import functional

from sse_export.checkpoint import Checkpoint

__all__ = ["SSE", "SeparableDyT", "reference_ids"]

Array = npt.NDArray[np.float32]


class SeparableDyT(nn.Module):
    """Dynamic tanh with per-dimension vectors: ``beta * tanh(alpha * x + bias)``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.full((dim,), 0.5))
        self.beta = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.beta * torch.tanh(self.alpha * x + self.bias)
        return y


class SSE(nn.Module):
    """Stable Static Embedding: mean of token rows, then SeparableDyT (state-dict keys match).

    With ``head=False`` it is sentence-transformers' ``StaticEmbedding`` (the mean alone);
    ``normalize=True`` L2-normalises the output.
    """

    def __init__(
        self, vocab_size: int, dim: int, *, head: bool = True, normalize: bool = False
    ) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, dim, mode="mean")
        self.dyt = SeparableDyT(dim) if head else nn.Identity()
        self.normalize = normalize

    def forward(self, input_ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.dyt(self.embedding(input_ids, offsets))
        return functional.normalize(y, dim=-1) if self.normalize else y

    @classmethod
    def from_arrays(
        cls,
        table: Array,
        alpha: Array | None = None,
        beta: Array | None = None,
        bias: Array | None = None,
        *,
        normalize: bool = False,
    ) -> SSE:
        """Build the module from a ``[vocab, dim]`` table and three ``[dim]`` DyT vectors.

        Without the DyT vectors, the module has no head.
        """
        head = {"dyt.alpha": alpha, "dyt.beta": beta, "dyt.bias": bias}
        vectors = {key: value for key, value in head.items() if value is not None}
        module = cls(table.shape[0], table.shape[1], head=bool(vectors), normalize=normalize)
        state = {"embedding.weight": table, **vectors}
        module.load_state_dict({key: torch.from_numpy(value) for key, value in state.items()})
        return module.eval()

    @classmethod
    def from_checkpoint(
        cls, checkpoint: Checkpoint, dim: int | None = None, table: Array | None = None
    ) -> SSE:
        """The family's module with a checkpoint's tensors, optionally truncated to ``dim``.

        It computes in float64 (on the float32 tensors), so that validation measures the
        export's rounding rather than the reference's: torch's float32 ``EmbeddingBag`` drifts
        by about 1e-4 over a 20,000-token text, which a ``tanh`` head hides but a bare mean
        does not.

        Args:
            checkpoint: The source checkpoint; its pooling decides head and normalisation.
            dim: Keep the first ``dim`` dimensions; ``None`` keeps all.
            table: A table to use instead of the checkpoint's (e.g. as a variant stores it),
                already ``dim`` wide.
        """
        k = checkpoint.dim if dim is None else dim
        module = cls.from_arrays(
            checkpoint.table[:, :k] if table is None else table,
            *(checkpoint.dyt(k) or ()),
            normalize=checkpoint.pooling.normalize,
        )
        return module.double()

    @torch.inference_mode()
    def embed(self, ids: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
        """The output of token-id sequences (one bag each), as float32 ``[len(ids), dim]``."""
        lengths = torch.tensor([len(seq) for seq in ids], dtype=torch.long)
        offsets = torch.cumsum(lengths, 0) - lengths
        flat = torch.tensor([token for seq in ids for token in seq], dtype=torch.long)
        result: npt.NDArray[np.float32] = self(flat, offsets).float().numpy()
        return result


def reference_ids(checkpoint: Checkpoint, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text under the checkpoint's family rules, from the HF tokenizer.

    As the families' libraries do it: each text cut to ``max_chars`` characters,
    ``encode_batch`` without special tokens and with the tokenizer's own truncation at
    ``max_tokens``, then the ``skip_token_ids`` removed.
    """
    pooling = checkpoint.pooling
    tokenizer = Tokenizer.from_file(str(checkpoint.tokenizer_path))
    tokenizer.no_padding()
    if pooling.max_tokens is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(pooling.max_tokens)
    cut = [text[: pooling.max_chars] for text in texts]
    skip = set(pooling.skip_token_ids)
    encodings = tokenizer.encode_batch(cut, add_special_tokens=False)
    return [[token for token in encoding.ids if token not in skip] for encoding in encodings]
