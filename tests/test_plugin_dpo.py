"""DPO plugin: R-DPO margin by hand and via the trainer, adaptive β, β checkpointing, off-by-default, bad config."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from plugin_runs import CPU, make_trainer

from alignkit.plugins.dpo.rdpo import rdpo_logits


def test_rdpo_logits_hand_example():
    # β = 0.1, log-ratios: chosen 2.0, rejected −1.0 → β·Δ = 0.1 · 3.0 = 0.3
    # α = 0.01, |y_w| = 30, |y_l| = 10 → α·(30 − 10) = 0.2;  z = 0.3 + 0.2 = 0.5
    # loss = −log σ(0.5) = log(1 + e^−0.5) = log(1.606531) = 0.474077
    z = rdpo_logits(
        torch.tensor([2.0]), torch.tensor([-1.0]), torch.tensor([30.0]), torch.tensor([10.0]), beta=0.1, alpha=0.01
    )
    assert z.item() == pytest.approx(0.5, abs=1e-6)
    assert (-F.logsigmoid(z)).item() == pytest.approx(0.474077, abs=1e-6)


def test_rdpo_tilt_is_the_one_the_logits_use():
    from alignkit.plugins.dpo.rdpo import rdpo_reference_tilt, tilt_reference_logps

    # β = 0.1, α = 0.01 → tilt = (α/β)·|y| = 0.1·|y|: 30 tokens → 3.0, 10 tokens → 1.0.
    tilt = rdpo_reference_tilt(torch.tensor([30, 10]), beta=0.1, alpha=0.01)
    assert tilt.tolist() == pytest.approx([3.0, 1.0])
    # Tilted log-ratios 2 + 3 = 5 and −1 + 1 = 0 → z = 0.1·(5 − 0) = 0.5, the R-DPO argument of the hand example.
    z = rdpo_logits(torch.tensor([2.0]), torch.tensor([-1.0]), torch.tensor([30]), torch.tensor([10]), 0.1, 0.01)
    assert z.item() == pytest.approx(0.1 * ((2.0 + 3.0) - (-1.0 + 1.0)), abs=1e-6)
    # Per-token reference log-probs (2 rows, L = 5, the last T = 4 columns are the completion window): the tilt is
    # subtracted once, at each row's first completion token (row 0: window column 1 → column 2; row 1: column 0 → 1).
    ref = torch.zeros(2, 5)
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]])
    tilted = tilt_reference_logps(ref, mask, tilt)
    assert tilted.tolist() == [[0.0, 0.0, -3.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0, 0.0]]
    assert (tilted.sum(1) - ref.sum(1)).tolist() == pytest.approx([-3.0, -1.0])  # sequence log π_ref − t(y)


def _pairs(n=4):
    from datasets import Dataset

    rows = [
        {
            "prompt": [{"role": "user", "content": f"Question {i}?"}],
            "chosen": [{"role": "assistant", "content": "A fine answer. " * (2 + i)}],
            "rejected": [{"role": "assistant", "content": "No no no."}],
        }
        for i in range(n)
    ]
    return Dataset.from_list(rows)


def _trainer(cls_trainer, cls_config, model_path, tmp_path, n=4, **extra):
    return make_trainer(cls_trainer, cls_config, model_path, tmp_path, _pairs(n), **extra)


def _one_batch_loss(trainer):
    batch = next(iter(trainer.get_train_dataloader()))
    inputs = trainer._prepare_inputs(batch)
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, dict(inputs)).item()
    return loss, inputs


def test_off_by_default_matches_trl(tiny_model, tmp_path, monkeypatch):
    import trl

    import alignkit.plugins.dpo.dpo_trainer as dpo
    from alignkit.plugins import DPOConfig, DPOTrainer

    # Off means TRL's code path after one check: no forward hook, no log-prob copies, no completion statistics.
    monkeypatch.setattr(DPOTrainer, "_fused_outputs", lambda *a, **k: pytest.fail("forward hook with the plugin off"))
    monkeypatch.setattr(dpo, "ngram_repetition_rate", lambda *a, **k: pytest.fail("n-gram stats with the plugin off"))
    ours = _trainer(DPOTrainer, DPOConfig, tiny_model, tmp_path / "a", max_steps=1)
    ours.train()
    stock = _trainer(trl.DPOTrainer, trl.DPOConfig, tiny_model, tmp_path / "b", max_steps=1)
    stock.train()
    assert ours.state.log_history[0]["loss"] == pytest.approx(stock.state.log_history[0]["loss"], abs=1e-6)
    assert ours.state.log_history[0].keys() == stock.state.log_history[0].keys()
    assert [type(c) for c in ours.callback_handler.callbacks] == [type(c) for c in stock.callback_handler.callbacks]


def test_rdpo_shifts_the_sigmoid_argument_by_alpha_length_gap(tiny_model, tmp_path):
    """One pair, same weights: TRL's loss gives β·Δ, ours must equal −log σ(β·Δ + α·(|y_w| − |y_l|))."""
    import trl

    from alignkit.plugins import DPOConfig, DPOTrainer

    alpha = 0.02
    # The policy must differ from the reference, else β·Δ = 0 for both and a sign error could hide; a fresh
    # trainer's policy equals its reference, so one SGD step first (same seed → same step for both trainers).
    stock = _trainer(
        trl.DPOTrainer, trl.DPOConfig, tiny_model, tmp_path / "s", n=1, max_steps=1, per_device_train_batch_size=1
    )
    stock.train()
    stock_loss, inputs = _one_batch_loss(stock)
    ours = _trainer(
        DPOTrainer,
        DPOConfig,
        tiny_model,
        tmp_path / "o",
        n=1,
        max_steps=1,
        per_device_train_batch_size=1,
        rdpo_alpha=alpha,
    )
    ours.args.rdpo_alpha = 0.0  # train the first step exactly like stock, then switch R-DPO on for the check
    ours.train()
    ours.args.rdpo_alpha = alpha
    ours_loss, _ = _one_batch_loss(ours)

    beta_delta = -math.log(math.expm1(stock_loss))  # stock loss = −log σ(βΔ) = log(1 + e^{−βΔ})
    len_c, len_r = inputs["completion_mask"].sum(dim=1).tolist()
    expected = math.log1p(math.exp(-(beta_delta + alpha * (len_c - len_r))))
    assert len_c != len_r and abs(beta_delta) > 1e-4
    assert ours_loss == pytest.approx(expected, abs=1e-5)


def test_rdpo_and_adaptive_beta_run_trains_and_logs(tiny_model, tmp_path):
    from alignkit.plugins import DPOConfig, DPOTrainer

    trainer = _trainer(DPOTrainer, DPOConfig, tiny_model, tmp_path, rdpo_alpha=0.01, kl_target=1.0, kl_horizon=1.0)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters() if n in before)
    logs = [h for h in trainer.state.log_history if "beta" in h]
    assert len(logs) == 2
    for key in (
        "kl_implicit",
        "lengths/chosen",
        "lengths/rejected",
        "repetition_rate/chosen",
        "repetition_rate/rejected",
    ):
        assert key in logs[0], key
    assert logs[0]["lengths/chosen"] > logs[0]["lengths/rejected"]
    # Step 1: policy == reference → KL reading 0 → error clip(0/1 − 1) = −0.2, n/horizon capped at 1 → β·0.8.
    assert logs[0]["kl_implicit"] == pytest.approx(0.0, abs=1e-9)
    assert logs[0]["beta"] == pytest.approx(0.1)
    assert logs[1]["beta"] == pytest.approx(0.08)
    assert trainer.beta != 0.1


def test_left_padded_prompts_hand_example():
    from alignkit.plugins.dpo.policy_samples import left_padded_prompts

    # Row 0: prompt [5, 6, 7], completion [8, 9]; row 1: prompt [3], completion [4], then right padding (0).
    ids = torch.tensor([[5, 6, 7, 8, 9], [3, 4, 0, 0, 0]])
    completion = torch.tensor([[0, 0, 0, 1, 1], [0, 1, 0, 0, 0]])
    prompts, mask = left_padded_prompts(ids, completion, pad_id=-1)
    assert prompts.tolist() == [[5, 6, 7], [-1, -1, 3]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_policy_samples_logged_every_n_steps(tiny_model, tmp_path):
    from alignkit.plugins import DPOConfig, DPOTrainer

    trainer = _trainer(
        DPOTrainer, DPOConfig, tiny_model, tmp_path, max_steps=3, policy_sample_steps=2, policy_sample_max_new_tokens=5
    )
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    sampled = [h for h in logs if "lengths/policy" in h]
    # global_step is 0, 1, 2 inside the three steps: sampled at 0 and 2, never at 1.
    assert [logs.index(h) for h in sampled] == [0, 2]
    for h in sampled:
        assert 0 <= h["lengths/policy"] <= 5  # greedy replies cut at the first stop token, at most the token limit
        assert 0 <= h["repetition_rate/policy"] < 1
    assert trainer.model.training  # generation switched to eval mode and back


def test_kl_controller_state_survives_checkpoint(tmp_path):
    from alignkit.plugins.common.kl_callback import KLControllerCallback
    from alignkit.plugins.kl import AdaptiveKLController

    applied = []
    saved = KLControllerCallback(AdaptiveKLController(0.1, 1.0, 10.0), applied.append)
    saved.record(2.0, 10)  # KL 2 vs target 1 → error clip(1.0) = 0.2; n/horizon = 1 → β = 0.1 · 1.2 = 0.12
    saved.flush()
    args = SimpleNamespace(output_dir=str(tmp_path))
    state = SimpleNamespace(global_step=3, is_world_process_zero=True)
    (tmp_path / "checkpoint-3").mkdir()
    saved.on_save(args, state, None)
    restored = KLControllerCallback(AdaptiveKLController(0.1, 1.0, 10.0), applied.append)
    restored.on_train_begin(args, state, None)
    assert restored.controller.value == pytest.approx(0.12) and applied == [pytest.approx(0.12)] * 2


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"rdpo_alpha": -0.1}, "rdpo_alpha"),
        ({"rdpo_alpha": 0.1, "f_divergence_type": "js_divergence"}, "rdpo_alpha"),
        ({"kl_target": 0.0}, "kl_target"),
        ({"kl_target": 1.0, "kl_horizon": 0}, "kl_horizon"),
        ({"kl_horizon": 100}, "kl_horizon"),
        ({"kl_target": 1.0, "beta": 0.0}, "kl_target"),
        ({"kl_target": 1.0, "precompute_ref_log_probs": True}, "kl_target"),
        ({"policy_sample_steps": -1}, "policy_sample_steps"),
        ({"policy_sample_steps": 2, "policy_sample_size": 0}, "policy_sample_size"),
        ({"policy_sample_max_new_tokens": 0}, "policy_sample_max_new_tokens"),
    ],
)
def test_invalid_config(kwargs, field, tmp_path):
    from alignkit.plugins import DPOConfig

    with pytest.raises(ValueError, match=field):
        DPOConfig(output_dir=str(tmp_path), **CPU, **kwargs)
