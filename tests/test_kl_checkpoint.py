"""One adaptive-KL path: for GRPO, DPO and PPO the controller's β is saved as kl_controller.json in each checkpoint
and restored when a run resumes from it (here from a checkpoint outside the resumed run's output_dir)."""

from __future__ import annotations

import inspect
import json
import os

import pytest
from transformers import TrainerCallback

from alignkit.plugins.common.kl_callback import STATE_FILE


def _grpo(model_path, out, **extra):
    from test_plugin_grpo import _trainer

    from alignkit.plugins import GRPOConfig, GRPOTrainer

    # Per step: one generation batch of 1 prompt × 2 completions. β moves before step 2's generation (KL 0 at step 1
    # → β · 0.8), so the step-2 checkpoint holds a β that is not the config's.
    kl = dict(beta=0.04, kl_target=0.01, kl_horizon=1.0)
    return _trainer(GRPOTrainer, GRPOConfig, model_path, out, **kl, **extra), 0.04


def _dpo(model_path, out, **extra):
    from test_plugin_dpo import _trainer

    from alignkit.plugins import DPOConfig, DPOTrainer

    # β moves after every optimizer step (KL 0 on step 1 → β · 0.8).
    return _trainer(DPOTrainer, DPOConfig, model_path, out, kl_target=1.0, kl_horizon=1.0, **extra), 0.1


def _ppo(model_path, out, **extra):
    from test_ppo import _trainer

    # One rollout per step; β moves from rollout 2 on (rollout 1 precedes the first update), KL far below target 0.5.
    return _trainer(model_path, out, steps_per_generation=1, num_iterations=1, **extra), 0.05


class _BetaAtTrainBegin(TrainerCallback):
    """Records the trainer's β when training (re)starts: after Trainer loaded the checkpoint, before any step."""

    def __init__(self, trainer):
        self.trainer, self.seen = trainer, []

    def on_train_begin(self, args, state, control, **kwargs):
        self.seen.append((self.trainer.beta, self.trainer.kl_controller.value))


@pytest.mark.parametrize("build", [_grpo, _dpo, _ppo], ids=["grpo", "dpo", "ppo"])
def test_kl_controller_round_trips_through_a_checkpoint(build, tiny_model, tmp_path):
    first, initial_beta = build(tiny_model, tmp_path / "a", max_steps=2, save_strategy="steps", save_steps=1)
    first.train()
    ckpt = tmp_path / "a" / "checkpoint-2"
    with open(ckpt / STATE_FILE) as f:
        saved = json.load(f)
    assert saved["kind"] == "adaptive"
    assert saved["value"] == pytest.approx(first.kl_controller.value)
    assert saved["value"] != pytest.approx(initial_beta)  # β moved before it was saved

    resumed, _ = build(tiny_model, tmp_path / "b", max_steps=3, save_strategy="no")
    probe = _BetaAtTrainBegin(resumed)
    resumed.add_callback(probe)
    assert resumed.beta == pytest.approx(initial_beta)  # from the config until the checkpoint is loaded
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert probe.seen == [(pytest.approx(saved["value"]), pytest.approx(saved["value"]))]
    assert resumed.state.global_step == 3
    assert not os.path.exists(tmp_path / "b" / "checkpoint-2")  # restored from the given path, not output_dir


def test_resume_seam_loads_the_checkpoint_before_train_begin():
    """AdaptiveKLMixin restores β in Trainer._load_optimizer_and_scheduler(checkpoint), which must run on resume, and
    before on_train_begin (where a bare callback would otherwise look for the file in output_dir)."""
    from transformers import Trainer

    assert list(inspect.signature(Trainer._load_optimizer_and_scheduler).parameters) == ["self", "checkpoint"]
    prepare = inspect.getsource(Trainer._prepare_for_training)
    assert "self._load_optimizer_and_scheduler(resume_from_checkpoint)" in prepare
    loop = inspect.getsource(Trainer._inner_training_loop)
    assert loop.index("self._prepare_for_training(") < loop.index("self.callback_handler.on_train_begin(")
    assert "self.callback_handler.on_save(" in inspect.getsource(Trainer._maybe_log_save_evaluate)
