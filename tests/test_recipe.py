"""The default model's recipe (``models/``): the stage-1 context blend and the recorded command."""

from __future__ import annotations

import shlex

import numpy as np
import pytest

pytest.importorskip("torch", reason="the recipe needs the exporter: pip install -e . -e ./export")
from models import train_default


def test_context_blend_maps_unseen_tokens_and_shrinks_rare_ones() -> None:
    rng = np.random.default_rng(0)
    alone = rng.normal(size=(600, 8)) * 10
    linear, offset = rng.normal(size=(8, 8)) / 10, rng.normal(size=8)
    seen = alone @ linear + offset
    counts = np.full(600, 50.0)
    counts[:3] = 0.0  # never seen in context
    counts[3:6] = 2.0  # seen twice: half its own in-context mean with shrink 2
    seen[:6] = rng.normal(size=(6, 8))  # off the linear map, so each part shows
    alone[3:6] = alone[:3]  # the same stand-alone vectors as the unseen tokens

    blended = train_default.context_blend(alone, seen, counts, shrink=2.0)

    # Unseen: the ridge map fitted on the well-seen tokens recovers the linear relation.
    np.testing.assert_allclose(blended[:3], alone[:3] @ linear + offset, atol=0.02)
    # Seen twice: n / (n + 2) = 1/2 of the in-context mean, 1/2 of the mapped vector.
    np.testing.assert_allclose(blended[3:6], 0.5 * seen[3:6] + 0.5 * blended[:3], atol=1e-12)
    # Seen 50 times: 50/52 of the in-context mean.
    mapped = alone[6:] @ linear + offset
    np.testing.assert_allclose(blended[6:], (50 * seen[6:] + 2 * mapped) / 52, atol=0.02)


def test_context_blend_without_enough_context_text_names_the_fix() -> None:
    alone = np.ones((100, 8))
    with pytest.raises(ValueError, match="--no-context"):
        train_default.context_blend(alone, np.zeros_like(alone), np.zeros(100), shrink=2.0)


def test_the_recorded_command_rebuilds_the_same_recipe() -> None:
    recipe = train_default.TrainRecipe(
        seed=3,
        sources=("debian", "stsb", "debian-full"),
        limits={**train_default.TrainRecipe().limits, "wordnet": 0, "debian-full": 1000},
        context=False,
        context_shrink=5.0,
        context_texts=500,
        distill_anchors=0,
        hard_negatives=False,
        width_weights=(1.0, 1.0, 1.5, 2.0, 2.0),
        select="sources",
        learning_rate=0.02,
        epochs=2,
    )
    command = train_default.recipe_command(recipe)

    *_, parsed = train_default._parse_args(shlex.split(command)[3:])

    assert parsed == recipe
    assert train_default.recipe_command(train_default.TrainRecipe()) == (
        "python -m models.train_default --output models/default"
    )
