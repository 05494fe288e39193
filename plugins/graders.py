"""Public name of the graders (pure Python, no transformers import): the code is
:mod:`alignkit.plugins.common.text_graders`, :mod:`~alignkit.plugins.common.math_grader` and the registry
:mod:`~alignkit.plugins.common.reward_funcs`; :func:`completion_text` is :func:`alignkit.chat_format.completion_text`
(the one reading of a completion's text for graders, rewards and eval), re-exported here."""

from alignkit.chat_format import completion_text
from alignkit.plugins.common.math_grader import MathAnswer, extract_math_answer, parse_number
from alignkit.plugins.common.reward_funcs import GRADERS, get_grader
from alignkit.plugins.common.text_graders import (
    Contains,
    EditDistance,
    ExactMatch,
    Grader,
    levenshtein,
    normalize_answer,
)

__all__ = [
    "GRADERS",
    "Contains",
    "EditDistance",
    "ExactMatch",
    "Grader",
    "MathAnswer",
    "completion_text",
    "extract_math_answer",
    "get_grader",
    "levenshtein",
    "normalize_answer",
    "parse_number",
]
