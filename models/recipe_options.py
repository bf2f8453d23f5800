"""A recipe's fields as its command-line options, and back: one option per field, in one loop.

A recipe is a frozen dataclass whose defaults build the bundled model. Each field becomes
``--field-name`` typed by its default: a ``True`` flag becomes ``--no-field-name``, a tuple
takes several values, a ``dict[str, int]`` takes ``KEY=VALUE`` items over its default (under
the flag its :func:`cli` metadata names). :func:`command_options` writes the options that rebuild a
recipe, which :func:`recipe_from` parses back to the same recipe.

Example::

    @dataclass(frozen=True)
    class Recipe:
        seed: int = 0
        pooling: str = option("middle", choices=("middle", "mean"), help="token vector")

    parser = argparse.ArgumentParser()
    add_options(parser, Recipe)
    recipe = recipe_from(parser, parser.parse_args(["--seed", "3"]), Recipe)
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Collection, Iterable
from typing import Any, TypeVar

__all__ = ["add_options", "cli", "command_options", "option", "recipe_from"]

R = TypeVar("R")


def cli(
    *,
    help: str | None = None,
    choices: Collection[str] | None = None,
    nargs: int | None = None,
    flag: str | None = None,
    metavar: str | None = None,
) -> dict[str, Any]:
    """A field's ``metadata``: what its command-line option needs beyond its default.

    Args:
        help: The option's help.
        choices: Allowed values (of a ``dict`` field: allowed keys).
        nargs: Number of values of a tuple field (default: one or more).
        flag: The option's name without ``--``, if not the field's.
        metavar: How the help shows a value.
    """
    return {"help": help, "choices": choices, "nargs": nargs, "flag": flag, "metavar": metavar}


def option(default: Any, **metadata: Any) -> Any:
    """A recipe field of an immutable ``default`` with the :func:`cli` ``metadata``."""
    return dataclasses.field(default=default, metadata=cli(**metadata))


def _flag(field: dataclasses.Field[Any]) -> str:
    return "--" + (field.metadata.get("flag") or field.name.replace("_", "-"))


def add_options(parser: argparse.ArgumentParser, recipe_type: type[Any]) -> None:
    """Add one option per field of ``recipe_type`` to ``parser``, defaulting to its default."""
    defaults = recipe_type()
    for field in dataclasses.fields(recipe_type):
        default = getattr(defaults, field.name)
        meta = field.metadata
        common: dict[str, Any] = {"dest": field.name, "help": meta.get("help")}
        if isinstance(default, bool):
            name = field.name.replace("_", "-")
            flag = f"--no-{name}" if default else f"--{name}"
            action = "store_false" if default else "store_true"
            parser.add_argument(flag, action=action, **common)
            continue
        common["metavar"] = meta.get("metavar")
        if isinstance(default, dict):  # its keys are checked by recipe_from, not its items
            parser.add_argument(_flag(field), nargs="+", default=[], **common)
            continue
        common["choices"] = meta.get("choices")
        if isinstance(default, tuple):
            kind = type(default[0]) if default else str
            nargs = meta.get("nargs") or "+"
            parser.add_argument(
                _flag(field), nargs=nargs, type=kind, default=list(default), **common
            )
        else:
            parser.add_argument(_flag(field), type=type(default), default=default, **common)


def recipe_from(
    parser: argparse.ArgumentParser, args: argparse.Namespace, recipe_type: type[R]
) -> R:
    """The recipe that the options of :func:`add_options` in ``args`` give.

    Raises:
        SystemExit: through ``parser.error`` for a ``KEY=VALUE`` item of an unknown key or a
            value that is not a whole number.
    """
    defaults = recipe_type()
    values: dict[str, Any] = {}
    for field in dataclasses.fields(recipe_type):  # type: ignore[arg-type]
        value = getattr(args, field.name)
        default = getattr(defaults, field.name)
        if isinstance(default, dict):
            value = _items(parser, field, default, value)
        elif isinstance(default, tuple):
            value = tuple(value)
        values[field.name] = value
    return recipe_type(**values)


def _items(
    parser: argparse.ArgumentParser,
    field: dataclasses.Field[Any],
    default: dict[str, int],
    given: Iterable[str],
) -> dict[str, int]:
    """``default`` updated by ``KEY=VALUE`` items."""
    keys = field.metadata.get("choices") or ()
    metavar = field.metadata.get("metavar") or "KEY=VALUE"
    out = dict(default)
    for item in given:
        key, _, count = item.partition("=")
        if key not in keys or not count.isdigit():
            parser.error(
                f"{_flag(field)} takes {metavar} with {metavar.partition('=')[0]} in {keys}: "
                f"{item!r}"
            )
        out[key] = int(count)
    return out


def command_options(recipe: Any, *, always: Collection[str] = ()) -> list[str]:
    """The options that rebuild ``recipe``: those of fields that differ from the default (and
    of the fields named in ``always``), in field order, e.g. ``["--seed 3", "--no-context"]``."""
    defaults = type(recipe)()
    options = []
    for field in dataclasses.fields(recipe):
        value, default = getattr(recipe, field.name), getattr(defaults, field.name)
        if value == default and field.name not in always:
            continue
        if isinstance(value, bool):
            options.append(f"--{'no-' if default else ''}{field.name.replace('_', '-')}")
        elif isinstance(value, dict):
            changed = [f"{key}={n}" for key, n in value.items() if n != default.get(key)]
            options += [f"{_flag(field)} {' '.join(changed)}"] if changed else []
        elif isinstance(value, tuple):
            options.append(f"{_flag(field)} {' '.join(map(str, value))}")
        else:
            options.append(f"{_flag(field)} {value}")
    return options
