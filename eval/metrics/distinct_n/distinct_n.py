"""``evaluate`` module: distinct-n of a set of responses (wraps :func:`alignkit.eval.diversity.distinct_n`)."""

from __future__ import annotations

from typing import Any

import datasets
import evaluate

from alignkit.eval.diversity import distinct_n

_DESCRIPTION = """Distinct-n (Li et al. 2016): unique n-grams / total n-grams, over the whole corpus and averaged per
response. Higher means more diverse. Computed by alignkit.eval.diversity.distinct_n."""

_CITATION = """@inproceedings{li2016diversity, title={A Diversity-Promoting Objective Function for Neural
Conversation Models}, author={Li, Jiwei and Galley, Michel and Brockett, Chris and Gao, Jianfeng and Dolan, Bill},
booktitle={NAACL}, year={2016}}"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list[str]): the responses.
    n (int): n-gram order, default 2.
    tokenizer: None (lowercased words and punctuation), a Hugging Face tokenizer, or a callable str -> list.
Returns:
    distinct_<n>: corpus-level unique / total n-grams (NaN when there is no n-gram).
    distinct_<n>_per_response: mean over responses with at least n tokens.
Example:
    >>> m = evaluate.load("eval/metrics/distinct_n")
    >>> m.compute(predictions=["a b c", "a b d"], n=2)
    {'distinct_2': 0.75, 'distinct_2_per_response': 1.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DistinctN(evaluate.Metric):
    """Distinct-n as an ``evaluate.Metric`` (predictions only, no references)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions: list[str], n: int = 2, tokenizer: Any = None) -> dict[str, float]:
        result = distinct_n(list(predictions), n, tokenizer=tokenizer)
        return {f"distinct_{n}": result["corpus"], f"distinct_{n}_per_response": result["per_response"]}
