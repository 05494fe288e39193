"""The benchmark baton: arms take turns in the balanced order, and threads of one process keep their own RNG."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from benchlib import balanced_orders, balanced_schedule, run_interleaved_in_process  # noqa: E402

LOG: list[tuple[str, str]] = []  # (arm, "begin" | "end"), appended by the fake trainers in turn order
LOCK = threading.Lock()


class FakeTrainer:
    """Calls the callbacks like Trainer.train(): seeds, then begin/end around each step, drawing one random number."""

    def __init__(self, name: str, seed: int, steps: int, fail_at: int | None = None):
        self.name, self.seed, self.steps, self.fail_at = name, seed, steps, fail_at
        self.callbacks, self.draws = [], []
        self.state = type("State", (), {"log_history": []})()

    def add_callback(self, cb):
        self.callbacks.append(cb)

    def train(self):
        torch.manual_seed(self.seed)
        for step in range(self.steps):
            for cb in self.callbacks:
                cb.on_step_begin(None, None, None)
            with LOCK:
                LOG.append((self.name, "begin"))
            if step == self.fail_at:
                raise ValueError(f"{self.name} broke")
            self.draws.append(torch.rand(1).item())
            with LOCK:
                LOG.append((self.name, "end"))
            for cb in self.callbacks:
                cb.on_step_end(None, None, None)
        self.state.log_history = [{"draws": self.draws}]


def build(name, seed, steps, fail_at=None):
    return FakeTrainer(name, seed, steps, fail_at), {}


def alone(seed: int, steps: int) -> list[float]:
    torch.manual_seed(seed)
    return [torch.rand(1).item() for _ in range(steps)]


def test_balanced_orders_first_order_balance():
    # 4 arms: every arm in every position once, and every ordered pair (a, b) adjacent exactly once.
    orders = balanced_orders(4)
    assert all(sorted(o) == [0, 1, 2, 3] for o in orders)
    assert all(sorted(o[p] for o in orders) == [0, 1, 2, 3] for p in range(4))
    follows = [(o[i], o[i + 1]) for o in orders for i in range(3)]
    assert len(follows) == len(set(follows)) == 12


def test_in_process_arms_take_turns_and_keep_their_rng():
    LOG.clear()
    steps = 4
    arms = {f"arm{i}": (build, dict(name=f"arm{i}", seed=i, steps=steps)) for i in range(3)}
    results = run_interleaved_in_process(arms, steps)
    # Never two arms inside a step: the log alternates begin/end of the same arm.
    assert [kind for _, kind in LOG] == ["begin", "end"] * (3 * steps)
    assert all(LOG[k][0] == LOG[k + 1][0] for k in range(0, len(LOG), 2))
    # The turn order is the balanced schedule, not thread start order.
    names = list(arms)
    assert [LOG[k][0] for k in range(0, len(LOG), 2)] == [names[i] for i in balanced_schedule(3, steps)]
    # Each arm drew exactly what it would have drawn alone (its own seeded stream), though turns interleaved.
    for i, name in enumerate(names):
        assert results[name].logs[0]["draws"] == pytest.approx(alone(i, steps), abs=0)
        assert len(results[name].wall) == steps


def test_in_process_failure_stops_every_arm():
    LOG.clear()
    arms = {
        "ok": (build, dict(name="ok", seed=0, steps=3)),
        "bad": (build, dict(name="bad", seed=1, steps=3, fail_at=1)),
    }
    with pytest.raises(RuntimeError, match="(?s)arm bad failed.*bad broke"):
        run_interleaved_in_process(arms, 3)


def test_overhead_ratios_against_both_stock_arms():
    import plugin_overhead as po
    from benchlib import ArmResult

    # One warm-up step (dropped), then 3 rounds. Reference per round = mean(stock, stock-again):
    # (10+12)/2 = 11, (20+22)/2 = 21, (30+32)/2 = 31 → median 21.
    info = {"data": "synthetic", "torch_threads": 1}
    results = {
        "stock": ArmResult("stock", wall=[99, 10, 20, 30], cpu=[99, 10, 20, 30], info=info),
        "off": ArmResult("off", wall=[99, 11, 21, 31], cpu=[99, 11, 21, 31], info=info),
        "on": ArmResult("on", wall=[99, 11, 21, 41], cpu=[99, 11, 21, 31], info=info),
        "stock-again": ArmResult("stock-again", wall=[99, 12, 22, 32], cpu=[99, 12, 22, 32], info=info),
    }
    text, ratios = po.summarize("dpo", results, warmup=1)
    assert ratios["stock-again"] == pytest.approx(22 / 20)  # A/A: ratio of medians of the two stock copies
    assert ratios["off"] == pytest.approx(1.0)  # median 21 / 21
    assert ratios["off_paired"] == pytest.approx(1.0)
    assert ratios["on"] == pytest.approx(1.0)  # one slow step (41 vs 31) does not move the median ...
    assert ratios["on_total"] == pytest.approx(73 / 63)  # ... but the total charges it: (11+21+41)/(11+21+31)
    assert "| off | 21.00 |" in text
    report = po.render_report(
        {
            "command": "x",
            "started": "t",
            "load_before": "0",
            "precision_note": "fp32",
            "isolation": "thread",
            "warmup": 1,
            "kinds": ["dpo"],
            "failed": {},
            "seconds": {"dpo": 1},
            "load_after": {"dpo": "0"},
        },
        {"dpo": results},
    )
    # Verdicts on the paired ratios, with the bootstrap CI of their median over rounds.
    # off: pairs 11/11, 21/21, 31/31 are all 1, so every resample's median is 1: CI [1, 1].
    # on: pairs 1, 1, 41/31 = 1.323; a resample holding the 1.323 at least twice (P = 7/27 > 2.5 %) has median 1.323,
    #     so the CI reaches 1.323 and the point verdict is flagged.
    # A/A: pairs 12/10 = 1.2, 22/20 = 1.1, 32/30 = 1.067 → median 1.1, resample medians span [1.067, 1.2].
    assert (
        "| DPO | 1.000 [1.000, 1.000] meets <= 1.02 | 1.000 [1.000, 1.323] meets <= 1.05 (point; CI reaches past) "
        "| 1.100 [1.067, 1.200] |"
    ) in report
