"""NaN/inf guards (plugins/common/finite_guard.py): a NaN or inf reward is skipped and counted, a step with
non-finite gradients is skipped, K such steps in a row abort in one line, and no checkpoint holds non-finite
weights."""

from __future__ import annotations

import math

import pytest
import torch
from plugin_runs import CPU
from safetensors.torch import load_file

from alignkit.errors import AlignkitError


def test_non_finite_rewards_become_none_and_are_counted():
    from alignkit.plugins.common.finite_guard import FiniteRewards, wrap_reward_funcs

    def shaky(prompts, completions, **kwargs):
        return [1.0, math.nan, math.inf, None, -math.inf, 2.0]

    (wrapped,) = wrap_reward_funcs([shaky])
    assert wrapped.__name__ == "shaky"  # TRL logs rewards/<name>/mean
    assert wrapped([], []) == [1.0, None, None, None, None, 2.0]  # None stays None: not counted as non-finite
    assert wrapped.take() == 3 and wrapped.take() == 0
    assert wrap_reward_funcs([wrapped]) == [wrapped] and isinstance(wrapped, FiniteRewards)  # never twice


def shaky_reward(prompts, completions, **kwargs):
    """In each group of 4 completions: NaN for the first, inf for the second, a content-dependent score for the rest
    (two finite rewards with spread, so GRPO still has something to learn from)."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [(math.nan, math.inf)[i % 4] if i % 4 < 2 else float(sum(map(ord, t)) % 7) for i, t in enumerate(texts)]


def test_grpo_skips_nan_and_inf_rewards_and_still_trains(tiny_model, tmp_path):
    from datasets import Dataset

    from alignkit.plugins import GRPOConfig, GRPOTrainer

    prompts = Dataset.from_list([{"prompt": [{"role": "user", "content": f"What is {i} + {i}?"}]} for i in range(4)])
    args = GRPOConfig(
        output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, num_generations=4,
        max_completion_length=8, learning_rate=1e-2, logging_steps=1, save_strategy="no", skip_nonfinite_rewards=True,
        **CPU,
    )  # fmt: skip
    trainer = GRPOTrainer(model=tiny_model, reward_funcs=[shaky_reward], args=args, train_dataset=prompts)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    logs = [h for h in trainer.state.log_history if "nonfinite/rewards_skipped" in h]
    assert [h["nonfinite/rewards_skipped"] for h in logs] == [2, 2], trainer.state.log_history  # NaN + inf per step
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)
    after = dict(trainer.model.named_parameters())
    assert all(torch.isfinite(after[n]).all() for n in before)
    assert any(not torch.equal(before[n], after[n]) for n in before)  # the finite rewards still taught it


def _sft_rows():
    from datasets import Dataset

    return Dataset.from_list(
        [{"messages": [{"role": "user", "content": f"Count to {i}."}, {"role": "assistant", "content": "1 2 3"}]}
         for i in range(8)]
    )  # fmt: skip


def test_consecutive_non_finite_steps_abort_and_checkpoints_stay_finite(tiny_model, tmp_path, caplog):
    from peft import LoraConfig

    from alignkit.plugins import FiniteGuard, SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=str(tmp_path), max_steps=6, per_device_train_batch_size=2, learning_rate=1e-2, logging_steps=1,
        max_length=64, save_steps=1, **CPU,
    )  # fmt: skip
    trainer = SFTTrainer(
        model=tiny_model,
        args=args,
        train_dataset=_sft_rows(),
        peft_config=LoraConfig(r=4, target_modules="all-linear"),
    )
    trainer.add_callback(FiniteGuard(max_bad_steps=2))
    compute_loss = trainer.compute_loss
    calls = {"n": 0}

    def poisoned(*a, **k):  # step 1 is healthy, every later loss is NaN
        calls["n"] += 1
        loss = compute_loss(*a, **k)
        return loss if calls["n"] == 1 else loss * math.nan

    trainer.compute_loss = poisoned
    with pytest.raises(AlignkitError, match=r"aborted at step 3: 2 steps in a row had a non-finite"):
        trainer.train()
    assert caplog.text.count("non-finite loss or gradients; the update was skipped") == 2
    checkpoints = sorted(tmp_path.glob("checkpoint-*"))
    assert [c.name for c in checkpoints] == ["checkpoint-1", "checkpoint-2"]  # step 2 skipped its update, saved
    weights = [load_file(str(c / "adapter_model.safetensors")) for c in checkpoints]
    assert all(torch.isfinite(t).all() for w in weights for t in w.values())
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # the skipped step changed nothing
    logged = [h["nonfinite/steps_skipped"] for h in trainer.state.log_history if "nonfinite/steps_skipped" in h]
    assert logged[:2] == [0, 1]


def test_weights_that_turned_non_finite_are_never_saved():
    from transformers import TrainerControl, TrainerState

    from alignkit.plugins import FiniteGuard

    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = math.inf
    control = TrainerControl(should_save=True)
    with pytest.raises(AlignkitError, match="no checkpoint was saved"):
        FiniteGuard().on_step_end(None, TrainerState(global_step=4), control, model=model)
    assert control.should_save is False


def test_ppo_skips_nan_and_inf_rewards(tiny_model, tmp_path):
    from datasets import Dataset
    from peft import LoraConfig

    from alignkit.plugins import PPOConfig, PPOTrainer

    rows = [{"prompt": [{"role": "user", "content": f"What is {i} + {i}?"}]} for i in range(4)]
    args = PPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, max_completion_length=6, max_steps=1,
        learning_rate=5e-2, logging_steps=1, save_strategy="no", skip_nonfinite_rewards=True, **CPU,
    )  # fmt: skip
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = PPOTrainer(
        tiny_model, [shaky_reward], args=args, train_dataset=Dataset.from_list(rows), peft_config=lora
    )
    trainer.train()
    logged = [h for h in trainer.state.log_history if "nonfinite/rewards_skipped" in h]
    assert [h["nonfinite/rewards_skipped"] for h in logged] == [2]  # NaN and inf of the one rollout of 4
    assert all(math.isfinite(h["loss"]) for h in trainer.state.log_history if "loss" in h)
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
