"""Reward plugin: Pearson/length maths by hand, off-by-default equivalence with TRL, a 2-step run, bad config."""

from __future__ import annotations

import pytest
import torch
from plugin_runs import CPU, make_trainer

from alignkit.plugins.reward.length_decorrelation import length_correlation_penalty, pearson_corr, response_lengths


def test_length_correlation_penalty_hand_example():
    # rewards r = [1, 2, 3, 0], lengths ℓ = [10, 20, 20, 10]
    # r̄ = 1.5 → dr = [−0.5, 0.5, 1.5, −1.5];  ℓ̄ = 15 → dℓ = [−5, 5, 5, −5]
    # Σ dr·dℓ = 2.5 + 2.5 + 7.5 + 7.5 = 20;  Σ dr² = 0.25 + 0.25 + 2.25 + 2.25 = 5;  Σ dℓ² = 100
    # ρ = 20 / sqrt(5 · 100) = 20 / 22.3607 = 0.894427;  ρ² = 0.8
    rewards = torch.tensor([1.0, 2.0, 3.0, 0.0], requires_grad=True)
    penalty, rho = length_correlation_penalty(rewards, torch.tensor([10, 20, 20, 10]))
    assert rho.item() == pytest.approx(0.894427, abs=1e-5)
    assert penalty.item() == pytest.approx(0.8, abs=1e-5)
    penalty.backward()
    # dρ/dr_i = dℓ_i / sqrt(Σdr²·Σdℓ²) − ρ·dr_i / Σdr²:
    #   i=1 (long, r=2):  5/22.36 − 0.894·0.5/5 = +0.134 → descent lowers the long answer's reward
    #   i=0 (short, r=1): −5/22.36 + 0.894·0.5/5 = −0.134 → descent raises the short answer's reward
    assert rewards.grad[1] > 0 > rewards.grad[0]


def test_pearson_constant_input_is_zero():
    assert pearson_corr(torch.tensor([1.0, 2.0]), torch.tensor([5.0, 5.0])).item() == 0.0


def test_response_lengths_strip_shared_prefix():
    # Pair: chosen [7, 8, 1, 2, 3], rejected [7, 8, 4, pad, pad] → shared prefix [7, 8] (2 tokens)
    # |y_w| = 5 − 2 = 3, |y_l| = 3 − 2 = 1
    chosen = torch.tensor([[7, 8, 1, 2, 3]])
    rejected = torch.tensor([[7, 8, 4, 0, 0]])
    lc, lr = response_lengths(chosen, rejected, torch.ones_like(chosen), torch.tensor([[1, 1, 1, 0, 0]]))
    assert lc.tolist() == [3] and lr.tolist() == [1]


def _pairs():
    from datasets import Dataset

    rows = [
        {
            "prompt": [{"role": "user", "content": f"Question {i}?"}],
            "chosen": [{"role": "assistant", "content": "A fine answer. " * (1 + i)}],
            "rejected": [{"role": "assistant", "content": "No."}],
        }
        for i in range(4)
    ]
    return Dataset.from_list(rows)


def _trainer(cls_trainer, cls_config, model_path, tmp_path, **extra):
    return make_trainer(cls_trainer, cls_config, model_path, tmp_path, _pairs(), **extra)


def test_off_by_default_matches_trl(tiny_model, tmp_path, monkeypatch):
    import trl

    import alignkit.plugins.reward.reward_trainer as reward
    from alignkit.plugins import RewardConfig, RewardTrainer

    # Off means TRL's code path after one check: no outputs kept, no lengths, no correlation.
    for name in ("response_lengths", "length_correlation_penalty"):
        monkeypatch.setattr(reward, name, lambda *a, _name=name, **k: pytest.fail(f"{_name} called with plugin off"))

    ours = _trainer(
        RewardTrainer, RewardConfig, tiny_model, tmp_path / "a", max_steps=1, center_rewards_coefficient=0.01
    )
    ours.train()
    stock = _trainer(
        trl.RewardTrainer, trl.RewardConfig, tiny_model, tmp_path / "b", max_steps=1, center_rewards_coefficient=0.01
    )
    stock.train()
    assert ours.state.log_history[0]["loss"] == pytest.approx(stock.state.log_history[0]["loss"], abs=1e-6)
    assert ours.state.log_history[0].keys() == stock.state.log_history[0].keys()


def test_length_decorrelation_run_trains_and_logs(tiny_model, tmp_path):
    from alignkit.plugins import RewardConfig, RewardTrainer

    trainer = _trainer(
        RewardTrainer,
        RewardConfig,
        tiny_model,
        tmp_path,
        length_decorrelation_coef=1.0,
        center_rewards_coefficient=0.01,
    )
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters() if n in before)
    logged = [h["reward_length_corr"] for h in trainer.state.log_history if "reward_length_corr" in h]
    assert len(logged) == 2 and all(-1 <= r <= 1 for r in logged)


@pytest.mark.parametrize("value", [-1.0, float("inf")])
def test_invalid_config(value, tmp_path):
    from alignkit.plugins import RewardConfig

    with pytest.raises(ValueError, match="length_decorrelation_coef"):
        RewardConfig(output_dir=str(tmp_path), length_decorrelation_coef=value, **CPU)
