"""The numeric-answer grader (pure Python): GSM8K ``#### 42``, ``\\boxed{...}``, fractions, thousands separators."""

from __future__ import annotations

import math
import re

from alignkit.plugins.common.text_graders import Grader

__all__ = ["MathAnswer", "extract_math_answer", "parse_number"]


# A number: optional sign (not when glued to a preceding word/digit, so "10-4" is 10 then 4), thousands groups
# "1,234" or plain digits, optional decimals; or a bare ".5".
_NUM = r"(?:(?<![\w.)])-)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?:(?<![\w.)])-)?\.\d+"
_NUM_OR_FRACTION = re.compile(rf"(?:{_NUM})(?:\s*/\s*(?:{_NUM}))?")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
_GSM8K = re.compile(r"####\s*(.+)")


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}``, with nested braces balanced (``\\boxed{\\frac{3}{4}}``)."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 0, start + len("\\boxed")
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j]
    return None  # unbalanced: treat as no box


def parse_number(text: str) -> float | None:
    """The last number in ``text`` as a float: handles ``1,234``, ``-3``, ``−3``, ``2.5``, ``.5``, ``3/4``,
    ``\\frac{3}{4}``, ``$12``, ``50%`` (→ 50). Returns None when there is no number."""
    text = _LATEX_FRAC.sub(r"\1/\2", text.replace("\u2212", "-").replace("{,}", ","))
    matches = _NUM_OR_FRACTION.findall(text)
    if not matches:
        return None
    num, _, den = matches[-1].partition("/")
    value = float(num.replace(",", "").strip())
    if den:
        denominator = float(den.replace(",", "").strip())
        if denominator == 0:
            return None
        value /= denominator
    return value


def extract_math_answer(text: str) -> str:
    """The answer span: last ``\\boxed{...}``, else what follows the last ``####`` (GSM8K), else the whole text
    (whose last number :func:`parse_number` then picks)."""
    boxed = _last_boxed(text)
    if boxed is not None:
        return boxed
    gsm = _GSM8K.findall(text)
    return gsm[-1] if gsm else text


class MathAnswer(Grader):
    """1.0 if the completion's final answer equals the reference's numerically, else 0.0.

    Both sides go through :func:`extract_math_answer` then :func:`parse_number`, so a GSM8K reference column holding
    the full worked solution ending in ``#### 42`` works as is. Equality is
    ``math.isclose(pred, ref, rel_tol=rel_tol, abs_tol=abs_tol)``. If the reference answer is not numeric (e.g.
    ``\\boxed{x+1}``), the extracted answers are compared as strings with whitespace and ``$`` removed.
    """

    default_name = "math_answer"

    def __init__(self, column: str = "answer", rel_tol: float = 1e-6, abs_tol: float = 1e-9, name: str | None = None):
        super().__init__(column, name)
        if not (rel_tol >= 0 and abs_tol >= 0):
            raise ValueError(f"rel_tol and abs_tol must be >= 0, got rel_tol={rel_tol!r}, abs_tol={abs_tol!r}")
        self.rel_tol = rel_tol
        self.abs_tol = abs_tol

    def _score(self, text: str, reference: str) -> float:
        ref_span, pred_span = extract_math_answer(reference), extract_math_answer(text)
        ref = parse_number(ref_span)
        if ref is None:
            squash = str.maketrans("", "", " \t\n$")
            return float(bool(ref_span.strip()) and pred_span.translate(squash) == ref_span.translate(squash))
        pred = parse_number(pred_span)
        return float(pred is not None and math.isclose(pred, ref, rel_tol=self.rel_tol, abs_tol=self.abs_tol))
