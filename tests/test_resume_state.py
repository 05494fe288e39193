"""The pieces of an exact resume that tests/test_kill_resume.py does not reach on its own (issue 15): the log rewind,
the counters and the monitor history a resumed run takes back, and the Trainer seam that writes alignkit's
checkpoint state before the file that marks a checkpoint complete."""

from __future__ import annotations

import inspect
import json
import logging
from types import SimpleNamespace

import pytest
from transformers import TrainerControl, TrainerState

from alignkit.train import rewind_train_log


def _checkpoint(tmp_path, step):
    ckpt = tmp_path / f"checkpoint-{step}"
    ckpt.mkdir()
    (ckpt / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return str(ckpt)


def test_rewind_drops_what_follows_the_checkpoint_and_a_cut_line(tmp_path):
    log = tmp_path / "train_log.jsonl"
    entries = [{"step": s, "loss": 1.0 / s} for s in (1, 2, 3)] + [{"step": 3, "train_runtime": 9.0}]
    log.write_text("".join(json.dumps(e) + "\n" for e in entries) + '{"step": 4, "lo')  # killed mid-write
    rewind_train_log(log, _checkpoint(tmp_path, 2))
    assert [json.loads(line) for line in log.read_text().splitlines()] == entries[:2]
    rewind_train_log(log, str(tmp_path / "checkpoint-9"))  # not a complete checkpoint: the log is left alone
    assert len(log.read_text().splitlines()) == 2


def test_finite_guard_continues_its_counts_after_a_resume():
    from alignkit.plugins import FiniteGuard

    before = FiniteGuard(max_bad_steps=3)
    before.skipped, before.in_a_row = 4, 1
    state = TrainerState(global_step=7, stateful_callbacks=[before])  # as Trainer._save_checkpoint writes it
    saved = TrainerState(**json.loads(json.dumps(state.__dict__)))  # through trainer_state.json
    after = FiniteGuard(max_bad_steps=3)
    after.on_train_begin(None, saved, TrainerControl())
    assert (after.skipped, after.in_a_row) == (4, 1)
    fresh = FiniteGuard()
    older = TrainerState(global_step=7)  # a checkpoint without the guard's entry: counts restart, saving works
    fresh.on_train_begin(None, older, TrainerControl())
    assert fresh.skipped == 0 and older.stateful_callbacks["FiniteGuard"] == fresh.state()


def test_monitor_picks_up_its_history_from_the_checkpoint_log(caplog):
    from alignkit.eval import RewardHackingMonitor

    args = SimpleNamespace(output_dir="unused", kl_target=None)
    first, state = RewardHackingMonitor(plot=False), TrainerState()
    for step, length in enumerate((10, 20, 30), start=1):  # the reply length triples: one warning
        state.global_step = step
        first.on_log(
            args, state, TrainerControl(), logs={"loss": 0.1, "reward": step, "completions/mean_length": length}
        )
    assert set(first.warned) == {"length_growth"}

    resumed = RewardHackingMonitor(plot=False)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="alignkit"):
        resumed.on_train_begin(args, TrainerState(global_step=3, log_history=state.log_history), TrainerControl())
    finite = [{k: v for k, v in row.items() if v == v} for row in first.rows]  # the log holds finite values only
    assert resumed.rows == finite and len(finite) == 3
    assert set(resumed.warned) == {"length_growth"} and "reward-hacking" not in caplog.text  # not warned twice


def test_alignkit_state_is_written_before_the_checkpoint_is_marked_complete():
    """ResumeStateMixin, the critic and the KL controller write in _save_optimizer_and_scheduler, which the Trainer
    must call before it writes trainer_state.json (alignkit.runs.last_checkpoint's marker of a complete checkpoint)."""
    from transformers import Trainer

    source = inspect.getsource(Trainer._save_checkpoint)
    assert source.index("self._save_optimizer_and_scheduler(output_dir)") < source.index("TRAINER_STATE_NAME")
    from alignkit.plugins.common.kl_callback import AdaptiveKLMixin
    from alignkit.plugins.common.resume_state import ResumeStateMixin
    from alignkit.plugins.ppo.ppo_critic import CriticMixin

    for mixin in (ResumeStateMixin, AdaptiveKLMixin, CriticMixin):
        assert "_save_optimizer_and_scheduler" in vars(mixin), mixin
    assert "_save_checkpoint" not in vars(ResumeStateMixin) and "_save_checkpoint" not in vars(AdaptiveKLMixin)


@pytest.mark.parametrize("trainer", ["SFTTrainer", "DPOTrainer", "GRPOTrainer", "PPOTrainer", "RewardTrainer"])
def test_every_plugin_trainer_carries_its_resume_state(trainer):
    import alignkit.plugins as plugins
    from alignkit.plugins.common.resume_state import ResumeStateMixin, RolloutResumeMixin

    cls = getattr(plugins, trainer)
    assert issubclass(cls, RolloutResumeMixin if trainer in ("GRPOTrainer", "PPOTrainer") else ResumeStateMixin)
