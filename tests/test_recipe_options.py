"""A recipe's fields are its command-line options (``models/recipe_options.py``): every field
of both recipes parses, and the recorded command of any recipe rebuilds it."""

from __future__ import annotations

import argparse
import dataclasses
import shlex
from typing import Any

import pytest

pytest.importorskip("sse_export", reason="the recipe needs the exporter: pip install -e ./export")
from models import build_default, train_default
from models.recipe_options import add_options, command_options, recipe_from


def changed(field: dataclasses.Field[Any], value: Any) -> Any:
    """A value of the field's kind that differs from ``value``."""
    choices = field.metadata.get("choices")
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value * 2 + 1
    if isinstance(value, dict):
        return {**value, choices[-1]: 7}
    if isinstance(value, tuple):
        return (choices[-1],) if choices else tuple(x + 1 for x in value)
    return next(choice for choice in choices if choice != value)


def parse(recipe_type: type[Any], options: list[str]) -> Any:
    parser = argparse.ArgumentParser()
    add_options(parser, recipe_type)
    return recipe_from(parser, parser.parse_args(shlex.split(" ".join(options))), recipe_type)


@pytest.mark.parametrize("recipe_type", [train_default.TrainRecipe, build_default.BuildRecipe])
def test_every_field_round_trips_through_the_command_line(recipe_type: type[Any]) -> None:
    defaults = recipe_type()
    for field in dataclasses.fields(recipe_type):
        value = changed(field, getattr(defaults, field.name))
        recipe = dataclasses.replace(defaults, **{field.name: value})
        options = command_options(recipe)
        assert options, field.name
        assert parse(recipe_type, options) == recipe, field.name


def test_choices_and_tuples_round_trip() -> None:
    recipe = train_default.TrainRecipe(
        sources=("debian", "stsb"), drop_pairs=("stsb",), select="domain", width_weights=(1.0,) * 5
    )
    assert parse(train_default.TrainRecipe, command_options(recipe)) == recipe
    assert parse(build_default.BuildRecipe, ["--pooling mean"]) == build_default.BuildRecipe(
        pooling="mean"
    )


def test_the_default_recipes_need_no_option_but_a_forced_one() -> None:
    assert command_options(train_default.TrainRecipe()) == []
    assert command_options(build_default.BuildRecipe(), always=("seed",)) == ["--seed 0"]


def test_an_unknown_limit_names_the_form_and_the_sources(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        parse(train_default.TrainRecipe, ["--limit nope=3"])
    assert "--limit takes SOURCE=PAIRS with SOURCE in ('wikipedia'" in capsys.readouterr().err
