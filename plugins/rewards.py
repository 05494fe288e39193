"""One registry from a recipe's ``reward_funcs`` names to picklable TRL reward callables.

Graders and penalties share the TRL reward signature ``(prompts, completions, **kwargs) -> list[float | None]``, so a
recipe can list them by name (``reward_funcs: [math_answer, length_penalty]``) and the same objects serve as eval
metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alignkit.plugins.graders import GRADERS
from alignkit.plugins.penalties import LengthPenalty, RepetitionPenalty

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
