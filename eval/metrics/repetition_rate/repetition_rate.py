"""``evaluate`` module: n-gram repetition rate of responses (wraps :func:`alignkit.eval.diversity.repetition_rate`)."""

from __future__ import annotations

from typing import Any

import datasets
import evaluate

from alignkit.eval.diversity import repetition_rate

_DESCRIPTION = """N-gram repetition rate: the mean over responses of 1 - unique n-grams / total n-grams (responses
shorter than n skipped). 0 = no n-gram repeats within a response. Computed by
alignkit.eval.diversity.repetition_rate, the number the eval report's diversity metric shows."""

_CITATION = ""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list[str]): the responses.
    n (int): n-gram order, default 3 (the report's).
    tokenizer: None (lowercased words and punctuation), a Hugging Face tokenizer, or a callable str -> list.
Returns:
    repetition_rate (NaN when every response is shorter than n).
Example:
    >>> m = evaluate.load("eval/metrics/repetition_rate")
    >>> m.compute(predictions=["a b a b a b", "a b c d"], n=2)
    {'repetition_rate': 0.3}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RepetitionRate(evaluate.Metric):
    """Repetition rate as an ``evaluate.Metric`` (predictions only)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions: list[str], n: int = 3, tokenizer: Any = None) -> dict[str, float]:
        return {"repetition_rate": repetition_rate(list(predictions), n, tokenizer=tokenizer)}
