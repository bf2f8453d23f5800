"""Table quantization schemes, in numpy: encoders used by the exporter and their decoders.

- **int8 per row**: symmetric, one float scale per token row: ``w ≈ q * scale``,
  ``scale = max|row| / 127``. A row with an outlying norm keeps its own precision, unlike one
  scale for the whole table.
- **SSEQ 4-bit** (the format of SSE's quantized checkpoints, ``embedding.q4_k_m.bin``): one
  scale per row, ``scale = max|row| + 1e-8``, ``q = clip(round((w / scale + 1) * 7.5), 0, 15)``,
  decoded ``w = (q / 7.5 - 1) * scale``; two values per byte, the high nibble holding the even
  column.
- **4-bit blocks** (for onnxruntime's ``com.microsoft.GatherBlockQuantized``): one scale per
  block of :data:`BLOCK` columns, zero point 8, ``scale = v / -8`` where ``v`` is the block's
  value of largest magnitude (so the full range -8..7 is used, as onnxruntime's own MatMulNBits
  quantizer does); two values per byte, the *low* nibble holding the even column.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "decode_int8_rows",
    "decode_sseq",
    "decoded_table",
    "encode_int8_rows",
    "encode_sseq",
    "pack_nibbles",
    "unpack_nibbles",
]

Array = npt.NDArray[np.float32]
Bytes = npt.NDArray[np.uint8]

#: Columns per scale of the 4-bit block scheme: the largest block that keeps the bulk of the
#: 16-column gain in worst cosine (bench/results/constants.md).
BLOCK = 32


def encode_int8_rows(table: Array) -> tuple[npt.NDArray[np.int8], Array]:
    """Symmetric int8 per row: returns ``(q [V, D] int8, scale [V] float32)``."""
    peak = np.abs(table).max(axis=1)
    scale = (peak / 127).astype(np.float32)
    safe = np.where(scale > 0, scale, 1).astype(np.float32)
    q = np.clip(np.rint(table / safe[:, None]), -127, 127).astype(np.int8)
    return q, scale


def decode_int8_rows(q: npt.NDArray[np.int8], scale: Array) -> Array:
    """Inverse of :func:`encode_int8_rows` (up to rounding)."""
    out: Array = q.astype(np.float32) * scale[:, None]
    return out


def pack_nibbles(q: Bytes, *, even_high: bool = True) -> Bytes:
    """Pack ``[V, D]`` values 0..15 into ``[V, ceil(D / 2)]`` bytes.

    ``even_high`` puts the even column in the high nibble (SSEQ); otherwise in the low one
    (onnxruntime's packed 4-bit tensors).
    """
    if q.shape[1] % 2:
        q = np.concatenate([q, np.zeros((q.shape[0], 1), dtype=np.uint8)], axis=1)
    high, low = (q[:, 0::2], q[:, 1::2]) if even_high else (q[:, 1::2], q[:, 0::2])
    packed: Bytes = ((high << 4) | low).astype(np.uint8)
    return packed


def unpack_nibbles(packed: Bytes, dim: int, *, even_high: bool = True) -> Bytes:
    """Inverse of :func:`pack_nibbles`: ``[V, dim]`` values 0..15."""
    q = np.empty((packed.shape[0], packed.shape[1] * 2), dtype=np.uint8)
    even, odd = (
        (slice(0, None, 2), slice(1, None, 2))
        if even_high
        else (slice(1, None, 2), slice(0, None, 2))
    )
    q[:, even] = packed >> 4
    q[:, odd] = packed & 0x0F
    return q[:, :dim]


def encode_sseq(table: Array) -> tuple[Bytes, Array]:
    """SSEQ 4-bit: returns ``(packed [V, ceil(D/2)] uint8, scale [V] float32)``."""
    scale = (np.abs(table).max(axis=1) + 1e-8).astype(np.float32)
    q = np.clip(np.rint((table / scale[:, None] + 1) * 7.5), 0, 15).astype(np.uint8)
    return pack_nibbles(q), scale


def decode_sseq(packed: Bytes, scale: Array, dim: int) -> Array:
    """Decode SSEQ 4-bit rows: ``(q / 7.5 - 1) * scale``, float32 ``[V, dim]``."""
    q = unpack_nibbles(packed, dim).astype(np.float32)
    out: Array = ((q / np.float32(7.5) - 1) * scale[:, None]).astype(np.float32)
    return out


def encode_blocks4(table: Array, block: int = BLOCK) -> tuple[Bytes, Array]:
    """4-bit blocks: ``(packed [V, P / 2] uint8, scales [V, P / block] float32)``.

    ``P`` is the width rounded up to a whole number of blocks; the padding columns are zero.
    """
    vocab, dim = table.shape
    width = -(-dim // block) * block
    padded = np.zeros((vocab, width), dtype=np.float64)
    padded[:, :dim] = table
    blocks = padded.reshape(vocab, width // block, block)
    peak = np.take_along_axis(blocks, np.abs(blocks).argmax(axis=2)[..., None], axis=2)[..., 0]
    scales = (peak / -8).astype(np.float32)
    safe = np.where(scales == 0, 1, scales).astype(np.float64)
    q = np.clip(np.rint(blocks / safe[..., None] + 8), 0, 15).astype(np.uint8)
    return pack_nibbles(q.reshape(vocab, width), even_high=False), scales


def decode_blocks4(packed: Bytes, scales: Array, dim: int, block: int = BLOCK) -> Array:
    """Inverse of :func:`encode_blocks4`: ``(q - 8) * scale`` per block, ``[V, dim]``."""
    vocab, width = packed.shape[0], scales.shape[1] * block
    q = unpack_nibbles(packed, width, even_high=False).astype(np.float32)
    blocks = (q.reshape(vocab, -1, block) - 8) * scales[..., None]
    out: Array = blocks.reshape(vocab, width)[:, :dim].astype(np.float32)
    return out


def decoded_table(table: Array, variant: str) -> Array:
    """The table as ``variant`` stores it, decoded back to float32.

    The PyTorch reference run on this table must reproduce the variant's graph to float32
    rounding; comparing it with the fp32 reference measures the quantization loss alone.
    """
    if variant == "fp32":
        return table
    if variant == "fp16":
        return table.astype(np.float16).astype(np.float32)
    if variant == "int8":
        return decode_int8_rows(*encode_int8_rows(table))
    if variant == "int4":
        return decode_sseq(*encode_sseq(table), table.shape[1])
    if variant == "int4_block":
        return decode_blocks4(*encode_blocks4(table), table.shape[1])
    raise ValueError(f"variant={variant!r} has no decoder.")
