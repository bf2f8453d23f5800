"""The PyTorch reference of SSE, used to validate every export.

It restates the published module: an ``EmbeddingBag(mode="mean")`` over flat token ids and
offsets (an empty bag gives a zero vector), then ``SeparableDyT``:
``y = beta * tanh(alpha * x + bias)`` with one value per dimension.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from sse_export.checkpoint import Checkpoint

__all__ = ["SSE", "SeparableDyT"]

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
    """Stable Static Embedding: mean of token rows, then SeparableDyT (state-dict keys match)."""

    def __init__(self, vocab_size: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(vocab_size, dim, mode="mean")
        self.dyt = SeparableDyT(dim)

    def forward(self, input_ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.dyt(self.embedding(input_ids, offsets))
        return y

    @classmethod
    def from_arrays(cls, table: Array, alpha: Array, beta: Array, bias: Array) -> SSE:
        """Build the module from a ``[vocab, dim]`` table and three ``[dim]`` DyT vectors."""
        module = cls(table.shape[0], table.shape[1])
        state = {"embedding.weight": table, "dyt.alpha": alpha, "dyt.beta": beta, "dyt.bias": bias}
        module.load_state_dict({key: torch.from_numpy(value) for key, value in state.items()})
        return module.eval()

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, dim: int | None = None) -> SSE:
        """Build the module with a checkpoint's tensors, optionally truncated to ``dim``."""
        k = checkpoint.dim if dim is None else dim
        return cls.from_arrays(
            checkpoint.table[:, :k], checkpoint.alpha[:k], checkpoint.beta[:k], checkpoint.bias[:k]
        )

    @torch.inference_mode()
    def embed(self, ids: Sequence[Sequence[int]]) -> npt.NDArray[np.float32]:
        """Unnormalised embeddings of token-id sequences, one bag per sequence."""
        lengths = torch.tensor([len(seq) for seq in ids], dtype=torch.long)
        offsets = torch.cumsum(lengths, 0) - lengths
        flat = torch.tensor([token for seq in ids for token in seq], dtype=torch.long)
        result: npt.NDArray[np.float32] = self(flat, offsets).numpy()
        return result
