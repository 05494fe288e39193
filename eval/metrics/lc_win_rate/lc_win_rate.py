"""``evaluate`` module: length-controlled win rate of system A over B
(wraps :func:`alignkit.eval.winrate.length_controlled_win_rate`)."""

from __future__ import annotations

import datasets
import evaluate

from alignkit.eval.winrate import DEFAULT_L2, length_controlled_win_rate

_DESCRIPTION = """Length-controlled win rate (after AlpacaEval 2, Dubois et al. 2024): fit
P(A preferred) = sigmoid(a + b * normalized length difference) to pairwise verdicts and report sigmoid(a), the win rate
when both answers are equally long. Computed by alignkit.eval.winrate.length_controlled_win_rate."""

_CITATION = """@article{dubois2024length, title={Length-Controlled AlpacaEval: A Simple Way to Debias Automatic
Evaluators}, author={Dubois, Yann and Galambosi, Bal{\\'a}zs and Liang, Percy and Hashimoto, Tatsunori B},
journal={arXiv:2404.04475}, year={2024}}"""

_KWARGS_DESCRIPTION = """
Args:
    verdicts (list[float]): per prompt, +1 A wins / 0 tie / -1 B wins (scale="signed"), or P(A preferred) in [0, 1]
        (scale="prob").
    len_a, len_b (list[float]): response lengths of A and B on the same prompts.
    scale (str): "signed" (default) or "prob".
    n_resamples (int), alpha (float), seed (int): bootstrap interval settings (defaults 1000, 0.05, 0).
    l2 (float): ridge on the logistic coefficients.
Returns:
    n, lc_win_rate, ci_low, ci_high, win_rate, intercept, slope, length_sd.
Example:
    >>> m = evaluate.load("eval/metrics/lc_win_rate")
    >>> m.compute(verdicts=[1, -1, 0, 1], len_a=[120, 80, 100, 150], len_b=[100, 90, 100, 90])
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class LcWinRate(evaluate.Metric):
    """LC win rate as an ``evaluate.Metric``; inputs are the columns ``verdicts``, ``len_a`` and ``len_b``."""

    def _info(self) -> evaluate.MetricInfo:
        # float64: lengths and soft verdicts pass through Arrow unchanged, so results match the direct call exactly
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "verdicts": datasets.Value("float64"),
                    "len_a": datasets.Value("float64"),
                    "len_b": datasets.Value("float64"),
                }
            ),
        )

    def _compute(
        self,
        verdicts: list[float],
        len_a: list[float],
        len_b: list[float],
        scale: str = "signed",
        n_resamples: int = 1000,
        alpha: float = 0.05,
        seed: int = 0,
        l2: float = DEFAULT_L2,
    ) -> dict[str, float]:
        return length_controlled_win_rate(
            verdicts, len_a, len_b, scale=scale, n_resamples=n_resamples, alpha=alpha, seed=seed, l2=l2
        )
