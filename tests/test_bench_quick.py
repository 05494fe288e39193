"""No bench rots: `make bench QUICK=1` (bench/run.py --quick) smoke-runs every benchmark on a tiny model into a
temporary directory and checks each wrote a result JSON of the schema; and every script in bench/ is listed in it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import run as bench_run  # noqa: E402


def test_every_bench_script_is_run_by_make_bench():
    # A new bench/*.py must be added to bench/run.py (or declared not a bench), so `make bench` runs every bench.
    scripts = {p.name for p in (ROOT / "bench").glob("*.py")} - bench_run.NOT_BENCHES
    listed = {script.split("/")[0] for script, *_ in bench_run.BENCHMARKS.values()}
    assert scripts - listed == set(), "add these to bench/run.py BENCHMARKS"
    no_smoke = {name for name, (_, _, quick, _) in bench_run.BENCHMARKS.items() if quick is None}
    assert no_smoke == set(bench_run.NO_QUICK), "a bench without a smoke run must say why in NO_QUICK"


def test_efficacy_aggregate_means_sds_and_reasons():
    import efficacy

    out = efficacy.aggregate(
        {"default_win_rate": [0.6, 0.7, 0.8], "ppo_accuracy_gain": [0.1, None, 0.3]}, {"rdpo_length_ratio": "why"}
    )
    assert set(k for k in out if not k.endswith(("_sd", "_reason"))) == set(efficacy.GOALS)  # exactly issue 12's keys
    # mean of 0.6, 0.7, 0.8 = 0.7; sample sd = sqrt(((-.1)^2 + 0 + .1^2) / 2) = 0.1
    assert out["default_win_rate"] == pytest.approx(0.7) and out["default_win_rate_sd"] == pytest.approx(0.1)
    assert out["ppo_accuracy_gain"] is None and "missing for some seeds" in out["ppo_accuracy_gain_reason"]
    assert out["rdpo_length_ratio"] is None and out["rdpo_length_ratio_reason"] == "why"
    assert out["make_seconds_reason"].startswith("not run")


def test_efficacy_keep_carries_only_figures_not_run_now():
    import efficacy

    previous = efficacy.aggregate({"default_win_rate": [0.6, 0.8], "rm_heldout_accuracy": [0.7, 0.9]}, {})
    previous["meta"] = {"command": "old", "date": "d0", "per_seed": {"rm_heldout_accuracy": [0.7, 0.9]}}
    now = efficacy.aggregate({"default_win_rate": [0.5, 0.5]}, {"ppo_accuracy_gain": "failed"})
    carried = efficacy.carry_over(now, previous)
    assert now["default_win_rate"] == 0.5  # measured now: never replaced
    assert now["rm_heldout_accuracy"] == pytest.approx(0.8) and "rm_heldout_accuracy_reason" not in now
    assert carried == {"rm_heldout_accuracy": {"command": "old", "date": "d0", "per_seed": [0.7, 0.9]}}
    assert now["ppo_accuracy_gain"] is None and now["ppo_accuracy_gain_reason"] == "failed"  # a failure stays


@pytest.mark.slow
@pytest.mark.bench
def test_every_bench_smoke_runs():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("ALIGNKIT_BENCH_RESULTS", None)
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
