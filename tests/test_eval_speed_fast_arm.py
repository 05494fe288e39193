"""bench/eval_speed.py's precision-fast arm (issue 13): the CI-shift statistic by hand, the figure's verdict and its
not-measured row, and one smoke run with the arm forced on (bf16 is emulated on a CPU without it: slow, but tiny)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import eval_speed  # noqa: E402


def test_ci_shift_is_in_half_widths_of_the_reports_ci():
    from alignkit.eval.stats import mean_std_ci

    # the half-width is the eval report's own CI of the mean (a bootstrap), so the shift reads in the report's units
    exact, fast = [1.0, 2.0, 3.0, 4.0], [1.1, 2.1, 3.1, 4.1]  # every value +0.1: the mean moves by 0.1
    row = mean_std_ci(exact)
    out = eval_speed.ci_shift(exact, fast)
    assert out["ci_half_width"] == pytest.approx((row["ci_high"] - row["ci_low"]) / 2)
    assert out["shift_in_half_widths"] == pytest.approx(0.1 / out["ci_half_width"])
    assert eval_speed.ci_shift(exact, exact)["shift_in_half_widths"] == 0.0


def _stages(fast: bool, shift: float = 0.01) -> list:
    def stage(name: str, loop: float, batched: float, fast_s: float) -> eval_speed.Stage:
        st = eval_speed.Stage(name, batched_s=batched, loop_s=loop, batched_cpu_s=batched, loop_cpu_s=loop)
        if fast:
            st.fast_s, st.fast_cpu_s = fast_s, fast_s
            st.fast_shift = {f"{name}_metric": {"shift_in_half_widths": shift}}
        return st

    return [stage("generation", 700.0, 100.0, 100.0), stage("rm_score", 200.0, 100.0, 40.0),
            stage("perplexity", 100.0, 50.0, 20.0)]  # fmt: skip


def test_fast_figure_speedup_and_equivalence():
    # loop 1000 s / fast (100 + 40 + 20) = 6.25x: missed on speed, equivalent
    fig = eval_speed.fast_figure(_stages(True))
    assert fig["measured"] == pytest.approx(6.25) and fig["met"] is False and fig["also"][0]["met"] is True
    # a metric moved by more than 0.1 half-widths: not equivalent
    assert eval_speed.fast_figure(_stages(True, shift=0.3))["also"][0]["met"] is False


def test_fast_figure_without_the_arm_is_not_measured():
    fig = eval_speed.fast_figure(_stages(False))
    assert fig["measured"] is None and fig["met"] is None and "native bf16" in fig["note"]


def test_smoke_run_with_the_fast_arm_forced_on(tmp_path):
    out = tmp_path / "eval_speed.md"
    assert eval_speed.main(["--quick", "--fast-arm", "on", "--out", str(out)]) == 0
    record = json.loads((tmp_path / "eval_speed.json").read_text())
    fast = next(f for f in record["figures"] if f["figure"] == "eval_speed.fast")
    assert fast["measured"] is not None and fast["measured"] > 0
    stages = record["statistics"]["stages"]
    assert stages["generation"]["fast_s"] == stages["generation"]["batched_s"]  # decoded exactly, as the harness
    for name in ("rm_score", "perplexity"):
        assert stages[name]["fast_s"] > 0 and stages[name]["fast_shift"], name
    assert "Fast arm (`precision: fast`" in out.read_text()
