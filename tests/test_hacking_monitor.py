"""The reward-hacking monitor: its signals on hand-computed numbers, and its warnings on synthetic training logs,
fired once per signature when the logs show it and never otherwise. (The tiny-model run with the monitor on is in
tests/test_winrate_callback.py::test_recipe_key_turns_it_on.)"""

import logging
import math
from collections import deque
from types import SimpleNamespace

import pytest

from alignkit.eval import hacking_signals as sig


def test_pearson_exact():
    assert sig.pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert sig.pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    # x = 1,2,3,4 (mean 2.5), y = 1,3,2,4 (mean 2.5): Σdxdy = 2.25+(-.25)+(-.25)+2.25 = 4, Σdx² = Σdy² = 5 -> 0.8
    assert sig.pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert math.isnan(sig.pearson([1, 2, 3], [5, 5, 5]))  # constant side
    assert math.isnan(sig.pearson([1, 2], [1, 2]))  # fewer than 3 pairs
    assert sig.pearson([1, 2, float("nan"), 3], [2, 4, 0, 6]) == pytest.approx(1.0)  # non-finite pairs dropped


def test_length_growth_and_distinct_collapse_thresholds():
    # n = 6 -> k = 2: early = mean(10, 10) = 10, late = mean(16, 16) = 16: +60 % > +50 %
    assert "grew +60%" in sig.check_length_growth([10, 10, 10, 16, 16, 16], 0.5)
    assert sig.check_length_growth([10, 10, 10, 14, 14, 14], 0.5) is None  # +40 %
    assert sig.check_length_growth([10], 0.5) is None  # one point: no trend
    # early 0.8, late 0.5: 62.5 % of the start < 70 %
    assert "62%" in sig.check_distinct_collapse([0.8, 0.8, 0.8, 0.5, 0.5, 0.5], 0.3)
    assert sig.check_distinct_collapse([0.8, 0.8, 0.8, 0.6, 0.6, 0.6], 0.3) is None  # 75 %


def test_proxy_up_heldout_down():
    # best earlier win rate 0.60 at j = 0 (reward 0); now 0.45 < 0.60 - 0.1 with reward 2 > 0: fires
    assert "fell (0.60 -> 0.45)" in sig.check_proxy_up_heldout_down([0, 1, 2], [0.6, 0.55, 0.45], 0.1)
    assert sig.check_proxy_up_heldout_down([2, 1, 0], [0.6, 0.55, 0.45], 0.1) is None  # the proxy fell too
    assert sig.check_proxy_up_heldout_down([0, 1, 2], [0.6, 0.55, 0.55], 0.1) is None  # a drop within tolerance
    assert sig.check_proxy_up_heldout_down([0], [0.6], 0.1) is None


def feed(monitor, entries, kl_target=None):
    """Drive the monitor's on_log with synthetic log entries (one per step), as a Trainer would."""
    from transformers import TrainerControl, TrainerState

    state, control = TrainerState(), TrainerControl()
    args = SimpleNamespace(output_dir="unused", kl_target=kl_target)
    for step, logs in enumerate(entries, start=1):
        state.global_step = step
        monitor.on_log(args, state, control, logs=dict(logs))
    return state


def hacking_run(n=12):
    """GRPO-like logs whose length grows 10 -> 30 tokens and proxy reward rises, plus win-rate entries that fall."""
    entries = []
    for i in range(n):
        entries.append({"loss": 0.1, "reward": 0.1 * i, "completions/mean_length": 10 + 20 * i / (n - 1), "kl": 0.02})
        if i % 4 == 3:
            entries.append({"winrate/win_rate": 0.6 - 0.1 * (i // 4), "winrate/length": 20.0})
    return entries


def healthy_run(n=12):
    entries = []
    for i in range(n):
        entries.append({"loss": 0.1, "reward": 0.1 * i, "completions/mean_length": 10 + (i % 2), "kl": 0.02})
        if i % 4 == 3:
            entries.append({"winrate/win_rate": 0.55 + 0.05 * (i // 4), "winrate/distinct_2": 0.7})
    return entries


def test_warnings_fire_once_per_signature_on_a_hacking_run(caplog):
    from alignkit.eval import RewardHackingMonitor

    monitor = RewardHackingMonitor(max_length_growth=0.5, min_winrate_drop=0.1)
    with caplog.at_level(logging.WARNING, logger="alignkit"):
        state = feed(monitor, hacking_run() + hacking_run(), kl_target=0.05)
    lines = [r.getMessage() for r in caplog.records if "reward-hacking monitor" in r.getMessage()]
    assert set(monitor.warned) == {"length_growth", "proxy_up_heldout_down"}
    assert len(lines) == 2  # once each, although the signatures persist over 30 more entries
    # logged values: KL against its target, reward/length correlation over the recent log entries
    logged = [e for e in state.log_history if "monitor/kl" in e]
    assert logged[-1]["monitor/kl_over_target"] == pytest.approx(0.02 / 0.05)
    assert logged[5]["monitor/reward_length_corr"] == pytest.approx(1.0)  # both rise linearly


def test_no_warning_on_a_healthy_run(caplog):
    from alignkit.eval import RewardHackingMonitor

    monitor = RewardHackingMonitor()
    with caplog.at_level(logging.WARNING, logger="alignkit"):
        feed(monitor, healthy_run())
    assert monitor.warned == {}
    assert not [r for r in caplog.records if "reward-hacking monitor" in r.getMessage()]


def test_distinct_collapse_from_heldout_replies():
    from alignkit.eval import RewardHackingMonitor

    monitor = RewardHackingMonitor()
    entries = [{"winrate/win_rate": 0.5, "winrate/distinct_2": d} for d in (0.8, 0.8, 0.8, 0.4, 0.4, 0.4)]
    feed(monitor, entries)
    assert set(monitor.warned) == {"distinct_collapse"}


def test_grpo_batch_stats_read_trl_logs():
    """Per-sample stats of a GRPO-style trainer's last batch (TRL keeps it in trainer._logs)."""
    from alignkit.eval.monitor_callback import batch_stats

    completions = ["a b", "a b c d", [{"role": "assistant", "content": "a b c d e f"}]]
    trainer = SimpleNamespace(
        _logs={"completion": deque(completions), "rewards": {"len": deque([1.0, 2.0, 3.0])}}, reward_weights=[2.0]
    )
    stats = batch_stats(trainer, lambda text: text.split())
    assert stats["length"] == pytest.approx(4.0)  # 2, 4, 6 words
    assert stats["reward_length_corr"] == pytest.approx(1.0)
    assert stats["repetition_rate"] == pytest.approx(0.0)
    assert batch_stats(SimpleNamespace(), None) == {}  # not a GRPO-style trainer
