"""Registries by name: ``GRADERS`` (the graders, e.g. for an eval suite's ``grader:``) and ``REWARD_FUNCS`` (graders
plus penalties, for a recipe's ``reward_funcs``), each building picklable TRL reward callables (pure Python).

Graders and penalties share the TRL reward signature ``(prompts, completions, **kwargs) -> list[float | None]``, so a
recipe can list them by name (``reward_funcs: [math_answer, length_penalty]``) and the same objects serve as eval
metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alignkit.plugins.common.length_penalty import LengthPenalty
from alignkit.plugins.common.math_grader import MathAnswer
from alignkit.plugins.common.repetition_penalty import RepetitionPenalty
from alignkit.plugins.common.text_graders import Contains, EditDistance, ExactMatch, Grader

__all__ = ["GRADERS", "REWARD_FUNCS", "get_grader", "get_reward_func"]

GRADERS: dict[str, type[Grader]] = {
    "exact_match": ExactMatch,
    "contains": Contains,
    "edit_distance": EditDistance,
    "math_answer": MathAnswer,
}


def get_grader(name: str, /, **kwargs: Any) -> Grader:
    """Instantiate a grader by registry name, e.g. ``get_grader("math_answer", column="solution", name="acc")``.

    ``name`` is positional-only so ``name=`` in kwargs reaches the grader (its logged reward name).
    """
    if name not in GRADERS:
        raise ValueError(f"unknown grader {name!r}; available: {', '.join(sorted(GRADERS))}")
    return GRADERS[name](**kwargs)


REWARD_FUNCS: dict[str, Callable[..., Any]] = {
    **GRADERS,
    "length_penalty": LengthPenalty,
    "repetition_penalty": RepetitionPenalty,
}


def get_reward_func(name: str, /, **kwargs: Any) -> Callable[..., list[float | None]]:
    """Build the reward callable registered under ``name`` (keyword arguments go to its constructor)."""
    if name not in REWARD_FUNCS:
        raise ValueError(f"unknown reward function {name!r}; available: {sorted(REWARD_FUNCS)}")
    return REWARD_FUNCS[name](**kwargs)
