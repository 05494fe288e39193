"""GRPO plugin: advantage override, penalty shaping, adaptive KL, off-by-default equivalence with TRL, bad config."""

from __future__ import annotations

import pytest
import torch

CPU = dict(bf16=False, use_cpu=True, gradient_checkpointing=False, report_to="none", seed=0)


def char_reward(prompts, completions, **kwargs):
    """Deterministic, content-dependent reward so that a group of 2 random completions has spread."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [float(sum(map(ord, t)) % 7) for t in texts]


def _prompts():
    from datasets import Dataset

    return Dataset.from_list([{"prompt": [{"role": "user", "content": f"What is {i} + {i}?"}]} for i in range(4)])


def _trainer(cls_trainer, cls_config, model_path, tmp_path, reward_funcs=char_reward, **extra):
    kwargs = dict(
        max_steps=2,
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=8,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        **CPU,
    )
    args = cls_config(output_dir=str(tmp_path), **{**kwargs, **extra})
    return cls_trainer(model=model_path, reward_funcs=reward_funcs, args=args, train_dataset=_prompts())


def test_off_by_default_matches_trl(tiny_model, tmp_path, monkeypatch):
    import trl

    import alignkit.plugins.grpo.grpo_trainer as grpo
    from alignkit.plugins import GRPOConfig, GRPOTrainer

    # Off means TRL's code path: no extra reward functions, no advantage recomputation, no KL controller.
    monkeypatch.setattr(grpo, "normalize", lambda *a, **k: pytest.fail("advantages recomputed with the plugin off"))
    ours = _trainer(GRPOTrainer, GRPOConfig, tiny_model, tmp_path / "a", max_steps=1, beta=0.04)
    ours.train()
    stock = _trainer(trl.GRPOTrainer, trl.GRPOConfig, tiny_model, tmp_path / "b", max_steps=1, beta=0.04)
    stock.train()
    a, b = ours.state.log_history[0], stock.state.log_history[0]
    assert a["reward"] == pytest.approx(b["reward"], abs=1e-6)
    assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
    assert a.keys() == b.keys()
    assert ours.reward_funcs == stock.reward_funcs and ours.reward_weights.tolist() == stock.reward_weights.tolist()
    assert [type(c) for c in ours.callback_handler.callbacks] == [type(c) for c in stock.callback_handler.callbacks]


def test_advantage_method_replaces_trl_advantages(tiny_model, tmp_path):
    from alignkit.plugins import GRPOConfig, GRPOTrainer

    trainer = _trainer(GRPOTrainer, GRPOConfig, tiny_model, tmp_path, advantage_method="rloo")
    batch = next(iter(trainer.get_train_dataloader()))
    out = trainer._generate_and_score_completions(batch)
    rewards = trainer._last_rewards_per_func[:, 0]
    assert rewards[0] != rewards[1]  # else RLOO and TRL's group scaling would both give 0 and prove nothing
    # RLOO with G = 2: A_1 = r_1 − r_2, A_2 = r_2 − r_1 (the other sample is the baseline).
    expected = torch.stack([rewards[0] - rewards[1], rewards[1] - rewards[0]])
    assert torch.allclose(out["advantages"][:2], expected.to(out["advantages"].dtype))
    # The completions table (TRL's _logs) carries the same advantages, not TRL's group-scaled ones.
    logged = list(trainer._logs["advantages"])
    assert len(logged) == len(out["advantages"])
    assert logged == pytest.approx(out["advantages"].tolist(), abs=1e-6)


def test_all_additions_run_trains_and_logs(tiny_model, tmp_path):
    from alignkit.plugins import GRPOConfig, GRPOTrainer

    trainer = _trainer(
        GRPOTrainer,
        GRPOConfig,
        tiny_model,
        tmp_path,
        advantage_method="rank",
        beta=0.04,
        kl_target=0.01,
        kl_horizon=1.0,
        length_penalty_coef=0.1,
        length_penalty_target=4,
        repetition_penalty_weight=0.5,
    )
    assert trainer.reward_weights.tolist() == pytest.approx([1.0, 0.1, 0.5])
    assert trainer.args.reward_weights == [1.0, 0.1, 0.5]
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    assert any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters() if n in before)
    logs = [h for h in trainer.state.log_history if "kl_coef" in h]
    assert len(logs) == 2
    assert "rewards/length_penalty/mean" in logs[0] and "rewards/repetition_penalty/mean" in logs[0]
    # Step 1: policy == reference → KL 0 → β · (1 − 0.2) before the second generation batch.
    assert logs[0]["kl_coef"] == pytest.approx(0.04)
    assert logs[1]["kl_coef"] == pytest.approx(0.032)


def test_user_config_is_not_mutated(tiny_model, tmp_path):
    from alignkit.plugins import GRPOConfig, GRPOTrainer

    args_kwargs = dict(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=8,
        repetition_penalty_weight=0.5,
        **CPU,
    )
    args = GRPOConfig(**args_kwargs)
    GRPOTrainer(model=tiny_model, reward_funcs=[char_reward], args=args, train_dataset=_prompts())
    assert args.reward_weights is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"advantage_method": "nope"}, "advantage_method"),
        ({"advantage_method": "rloo", "multi_objective_aggregation": "normalize_then_sum"}, "advantage_method"),
        ({"length_penalty_coef": -1.0}, "length_penalty_coef"),
        ({"length_penalty_coef": 0.1}, "length_penalty_target"),
        ({"repetition_penalty_weight": -0.5}, "repetition_penalty_weight"),
        ({"repetition_ngram_size": 0}, "repetition_ngram_size"),
        ({"kl_target": 0.0, "beta": 0.1}, "kl_target"),
        ({"kl_target": 0.1, "beta": 0.0}, "kl_target"),
        ({"kl_target": 0.1, "beta": 0.1, "kl_horizon": 0}, "kl_horizon"),
        ({"kl_horizon": 10}, "kl_horizon"),
    ],
)
def test_invalid_config(kwargs, field, tmp_path):
    from alignkit.plugins import GRPOConfig

    with pytest.raises(ValueError, match=field):
        GRPOConfig(output_dir=str(tmp_path), **CPU, **kwargs)


def test_penalty_given_twice_is_refused(tiny_model, tmp_path):
    from alignkit.plugins import GRPOConfig, GRPOTrainer
    from alignkit.plugins.penalties import LengthPenalty

    args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        num_generations=2,
        length_penalty_coef=0.1,
        length_penalty_target=4,
        **CPU,
    )
    with pytest.raises(ValueError, match="length_penalty_coef is set and reward_funcs already has a LengthPenalty"):
        GRPOTrainer(model=tiny_model, reward_funcs=[LengthPenalty(0.1, 4)], args=args, train_dataset=_prompts())
