"""Per-value column transforms that dataset cards name in their ``transforms`` field (``module:function``)."""

from __future__ import annotations

from alignkit.errors import AlignkitError


def gsm8k_final_answer(solution: str) -> str:
    """GSM8K solutions end with ``#### <number>``; keep the number, commas removed (``"#### 1,200"`` -> ``"1200"``)."""
    if "####" not in solution:
        raise AlignkitError(f"gsm8k answer has no '####' final-answer marker: {solution[-80:]!r}")
    return solution.rsplit("####", 1)[1].strip().replace(",", "")


def as_user_turn(text: str) -> list[dict[str, str]]:
    """Wrap a plain-text prompt as a conversational one (one user turn), so chat templates apply."""
    return [{"role": "user", "content": text}]
