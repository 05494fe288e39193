"""``evaluate`` module: raw win rate of system A over B with a bootstrap CI (wraps
:func:`alignkit.eval.winrate.win_rate`)."""

from __future__ import annotations

import datasets
import evaluate

from alignkit.eval.winrate import win_rate

_DESCRIPTION = """Win rate of A over B with a tie worth a half, (wins + ties / 2) / n, and a 95% percentile-bootstrap
interval over prompts. Computed by alignkit.eval.winrate.win_rate, as in the eval report."""

_CITATION = ""

_KWARGS_DESCRIPTION = """
Args:
    verdicts (list[float]): per prompt, +1 A wins / 0 tie / -1 B wins (scale="signed"), or P(A preferred) in [0, 1]
        (scale="prob").
    scale (str): "signed" (default) or "prob".
    n_resamples (int), alpha (float), seed (int): bootstrap settings (defaults 1000, 0.05, 0).
Returns:
    n, wins, ties, losses, win_rate, ci_low, ci_high.
Example:
    >>> m = evaluate.load("eval/metrics/win_rate")
    >>> m.compute(verdicts=[1, 1, 0, -1])["win_rate"]
    0.625
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class WinRate(evaluate.Metric):
    """Raw win rate as an ``evaluate.Metric``; the input column is ``verdicts``."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"verdicts": datasets.Value("float64")}),
        )

    def _compute(
        self, verdicts: list[float], scale: str = "signed", n_resamples: int = 1000, alpha: float = 0.05, seed: int = 0
    ) -> dict[str, float]:
        return win_rate(verdicts, scale=scale, n_resamples=n_resamples, alpha=alpha, seed=seed)
