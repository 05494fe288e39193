"""Type-hint helpers shared by the recipe checks (:mod:`alignkit.recipe`) and the eval-suite parser
(:mod:`alignkit.eval.suite`), so both read a field's type and a whole number the same way."""

from __future__ import annotations

import typing
from typing import Any

__all__ = ["hint_kinds", "is_whole_number"]


def hint_kinds(hint: Any) -> set[Any]:
    """The types a field's hint allows, ``None`` left out: ``int`` -> {int}, ``int | None`` -> {int}."""
    return set(typing.get_args(hint)) - {type(None)} or {hint}


def is_whole_number(value: Any) -> bool:
    """An int that is not a bool (YAML's ``2.5`` and ``true`` are not)."""
    return isinstance(value, int) and not isinstance(value, bool)
