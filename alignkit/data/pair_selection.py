"""Best-vs-worst selection of one preference pair from N scored samples of the same prompt (pure Python).

Rules, in order (:func:`select_pair`):

1. Empty responses (nothing left after stripping) never enter a pair; with ``drop_truncated`` neither do responses
   cut at ``max_new_tokens``. Fewer than two left: the prompt is dropped as ``truncated`` when truncation removed
   the responses that were missing, else as ``empty``.
2. ``rejected`` = the lowest score (earliest sample on a tie of scores).
3. ``chosen`` = the highest score among the other responses; with ``length_delta`` = δ only among responses of at
   most ``tokens(rejected) + δ`` tokens, so the chosen reply cannot win by being longer (Park et al. 2024 call this
   the length exploitation of DPO). No response short enough: dropped as ``length``. With ``chosen_complete`` only
   a reply that ended by itself (not cut at ``max_new_tokens``) may be chosen, so the pair teaches the policy to
   finish its answer; none left: dropped as ``incomplete``. (``drop_truncated`` is stricter: it also keeps cut
   replies out of the rejected side.) On equal scores the shorter, then the earlier sample wins.
4. ``margin = score(chosen) - score(rejected)``: zero (or identical texts) is a ``tie``, below ``min_margin`` is
   ``small_margin``; both are dropped.

Each dropped prompt counts under exactly one reason, so ``kept + sum(drop reasons) == prompts``.
"""

from __future__ import annotations

from dataclasses import dataclass

DROP_REASONS = ("empty", "truncated", "length", "incomplete", "tie", "small_margin")


@dataclass(frozen=True)
class Candidate:
    """One sampled response: its text, score, generated tokens and whether it was cut at ``max_new_tokens``."""

    text: str
    score: float
    tokens: int
    truncated: bool = False


@dataclass(frozen=True)
class SelectionRules:
    min_margin: float = 0.0
    length_delta: int | None = None  # tokens; None: no length rule
    drop_truncated: bool = False
    chosen_complete: bool = False

    def __post_init__(self) -> None:
        if not self.min_margin >= 0:
            raise ValueError(f"min_margin: must be >= 0, got {self.min_margin}")
        if self.length_delta is not None and self.length_delta < 0:
            raise ValueError(f"length_delta: must be >= 0 tokens or null, got {self.length_delta}")


@dataclass(frozen=True)
class Selection:
    """The outcome for one prompt: ``(chosen, rejected)`` sample indices, or the reason it was dropped."""

    chosen: int | None = None
    rejected: int | None = None
    dropped: str | None = None

    @property
    def kept(self) -> bool:
        return self.dropped is None


def select_pair(candidates: list[Candidate], rules: SelectionRules = SelectionRules()) -> Selection:
    """Pick chosen/rejected among ``candidates`` by the rules of the module docstring."""
    nonempty = [i for i, c in enumerate(candidates) if c.text.strip()]
    usable = [i for i in nonempty if not (rules.drop_truncated and candidates[i].truncated)]
    if len(usable) < 2:
        return Selection(dropped="truncated" if len(nonempty) >= 2 else "empty")
    rejected = min(usable, key=lambda i: (candidates[i].score, i))
    limit = candidates[rejected].tokens + rules.length_delta if rules.length_delta is not None else None
    pool = [i for i in usable if i != rejected and (limit is None or candidates[i].tokens <= limit)]
    if not pool:
        return Selection(dropped="length")
    if rules.chosen_complete:
        pool = [i for i in pool if not candidates[i].truncated]
        if not pool:
            return Selection(dropped="incomplete")
    chosen = max(pool, key=lambda i: (candidates[i].score, -candidates[i].tokens, -i))
    margin = candidates[chosen].score - candidates[rejected].score
    if margin <= 0 or candidates[chosen].text.strip() == candidates[rejected].text.strip():
        return Selection(dropped="tie")
    if margin < rules.min_margin:
        return Selection(dropped="small_margin")
    return Selection(chosen=chosen, rejected=rejected)
