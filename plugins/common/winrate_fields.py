"""The held-out win-rate callback's config fields (pure Python, no transformers): one key turns it on in a recipe.

``winrate_steps: N`` makes ``alignkit train`` add :class:`alignkit.eval.winrate_callback.WinRateCallback`, built from
the recipe's eval suite (:func:`alignkit.eval.winrate_callback.callback_from_suite`): its first prompt set (the first
``winrate_prompts`` rows) and its held-out judge (``win_rate.rm_judge``, else the grader on a graded set). From
Python, pass the callback to any trainer yourself; these fields only serve recipes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["WinRateFields"]


@dataclass
class WinRateFields:
    """Config mixin: ``winrate_steps`` (0 = off), ``winrate_prompts``, ``winrate_max_new_tokens``; put it before the
    TRL config in the bases."""

    winrate_steps: int = field(
        default=0,
        metadata={
            "help": "Every this many optimizer steps (and at the last), judge the policy's greedy replies to held-out "
            "prompts against its starting replies with the eval suite's held-out judge and log winrate/* (raw and "
            "length-controlled win rate with 95% CIs, length, distinct-2); winrate.png at the end. 0 disables it."
        },
    )
    winrate_prompts: int = field(
        default=16, metadata={"help": "Held-out prompts per measurement (the eval suite's first prompt set)."}
    )
    winrate_max_new_tokens: int = field(default=64, metadata={"help": "Token limit of each judged reply."})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name, low in (("winrate_steps", 0), ("winrate_prompts", 1), ("winrate_max_new_tokens", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
