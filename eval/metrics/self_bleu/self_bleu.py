"""``evaluate`` module: self-BLEU of a set of responses (wraps :func:`alignkit.eval.diversity.self_bleu`)."""

from __future__ import annotations

from typing import Any

import datasets
import evaluate

from alignkit.eval.diversity import self_bleu

_DESCRIPTION = """Self-BLEU (Zhu et al. 2018, Texygen): BLEU-4 of each response against all the others, averaged.
Higher means less diverse. Computed by alignkit.eval.diversity.self_bleu (smoothing: floor epsilon 0.1)."""

_CITATION = """@inproceedings{zhu2018texygen, title={Texygen: A Benchmarking Platform for Text Generation Models},
author={Zhu, Yaoming and Lu, Sidi and Zheng, Lei and Guo, Jiaxian and Zhang, Weinan and Wang, Jun and Yu, Yong},
booktitle={SIGIR}, year={2018}}"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list[str]): the responses (at least 2).
    tokenizer: None (lowercased words and punctuation), a Hugging Face tokenizer, or a callable str -> list.
    max_n (int): highest n-gram order, default 4.
    smooth_epsilon (float): count used for an order with no match, default 0.1.
Returns:
    self_bleu: mean BLEU in [0, 1].
Example:
    >>> m = evaluate.load("eval/metrics/self_bleu")
    >>> m.compute(predictions=["the cat sat on the mat", "the cat sat on a mat", "dogs run fast"])
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class SelfBleu(evaluate.Metric):
    """Self-BLEU as an ``evaluate.Metric`` (predictions only, no references)."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(
        self, predictions: list[str], tokenizer: Any = None, max_n: int = 4, smooth_epsilon: float = 0.1
    ) -> dict[str, float]:
        value = self_bleu(list(predictions), tokenizer=tokenizer, max_n=max_n, smooth_epsilon=smooth_epsilon)
        return {"self_bleu": value}
