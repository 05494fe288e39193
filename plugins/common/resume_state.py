"""What a trainer must carry across a kill and resume beyond transformers' own checkpoint (weights, optimizer,
scheduler, RNG, ``trainer_state.json``), so that a resumed run trains exactly as an uninterrupted one.

:class:`ResumeStateMixin` writes that state into the checkpoint from ``Trainer._save_optimizer_and_scheduler``, which
runs before ``trainer_state.json`` is written: a checkpoint with ``trainer_state.json`` (the file
:func:`alignkit.runs.last_checkpoint` takes as "complete") therefore always holds it too, whenever the process is
killed. ``_load_optimizer_and_scheduler`` (the seam that receives the checkpoint path on resume, before any step)
restores it. Subclasses and mixins add entries by extending :meth:`~ResumeStateMixin._resume_state` and
:meth:`~ResumeStateMixin._restore_resume_state` (calling ``super()``).

Here: the running token count TRL logs as ``num_tokens`` (SFT, DPO, reward). :class:`RolloutResumeMixin` adds what a
GRPO-style trainer buffers between optimizer steps: its micro-step counter and, when the checkpoint falls inside a
rollout (``steps_per_generation`` or ``num_iterations`` > 1), the rest of that rollout, so the resumed run trains on
the same completions instead of sampling new ones, and the completions and rewards GRPO keeps for logging (read by
the reward-hacking monitor), so it logs the same values.
"""

from __future__ import annotations

import json
import os
from typing import Any

import torch

__all__ = ["RESUME_STATE_FILE", "ROLLOUT_FILE", "ResumeStateMixin", "RolloutResumeMixin"]

RESUME_STATE_FILE = "alignkit_state.pt"
ROLLOUT_FILE = "rollout_buffer-{rank}.pt"  # one per process: each holds its own slice of the rollout
ROLLOUT_LOG_FILE = "rollout_logs.json"  # the rollout's completions and rewards (GRPO's ``_logs``), rank 0's
_LOG_KEYS = ("prompt", "completion", "advantages", "rewards", "extra")  # not images


class ResumeStateMixin:
    """Saves :meth:`_resume_state` into each checkpoint and restores it on resume (module docstring)."""

    def _resume_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {}
        if isinstance(getattr(self, "_total_train_tokens", None), int):
            state["total_train_tokens"] = self._total_train_tokens  # TRL's `num_tokens` metric, a running sum
        return state

    def _restore_resume_state(self, state: dict[str, Any]) -> None:
        if "total_train_tokens" in state:
            self._total_train_tokens = int(state["total_train_tokens"])

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        if self.args.should_save:
            torch.save(self._resume_state(), os.path.join(output_dir, RESUME_STATE_FILE))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, RESUME_STATE_FILE)
        if os.path.isfile(path):  # absent in a checkpoint of an older alignkit: counters restart, training is exact
            self._restore_resume_state(torch.load(path, map_location="cpu", weights_only=True))


class RolloutResumeMixin(ResumeStateMixin):
    """For ``trl.GRPOTrainer`` subclasses: GRPO's ``_step`` (micro-steps since the start; which slice of the buffered
    rollout the next step trains on) and, mid-rollout, ``_buffered_inputs`` (module docstring)."""

    def _resume_state(self) -> dict[str, Any]:
        return {**super()._resume_state(), "grpo_step": self._step}

    def _restore_resume_state(self, state: dict[str, Any]) -> None:
        super()._restore_resume_state(state)
        if "grpo_step" in state:
            self._step = int(state["grpo_step"])

    def _mid_rollout(self) -> bool:
        return self._step % (self.args.steps_per_generation * self.num_iterations) != 0

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        if self._mid_rollout() and self._buffered_inputs is not None:  # every process: its own slice
            path = os.path.join(output_dir, ROLLOUT_FILE.format(rank=self.accelerator.process_index))
            torch.save([_to_cpu(batch) for batch in self._buffered_inputs], path)
            if self.args.should_save:
                self._save_rollout_logs(os.path.join(output_dir, ROLLOUT_LOG_FILE))

    def _save_rollout_logs(self, path: str) -> None:
        logs = getattr(self, "_logs", None)
        if not isinstance(logs, dict):
            return
        saved = {}
        for key in _LOG_KEYS:
            value = logs.get(key)
            saved[key] = {k: list(v) for k, v in value.items()} if isinstance(value, dict) else list(value or [])
        try:
            text = json.dumps(saved)
        except (TypeError, ValueError):  # e.g. an extra column that is not JSON: the logs only, training is exact
            return
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)

    def _load_rollout_logs(self, path: str) -> None:
        logs = getattr(self, "_logs", None)
        if not isinstance(logs, dict) or not os.path.isfile(path):
            return
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
        for key in _LOG_KEYS:
            if key not in saved or key not in logs:
                continue
            if isinstance(saved[key], dict):
                for name, values in saved[key].items():
                    logs[key][name].extend(values)
            else:
                logs[key].extend(saved[key])

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None or not self._mid_rollout():
            return
        path = os.path.join(checkpoint, ROLLOUT_FILE.format(rank=self.accelerator.process_index))
        if not os.path.isfile(path):  # an older checkpoint: GRPO samples the rollout afresh (its own resume behaviour)
            return
        saved = torch.load(path, map_location="cpu", weights_only=True)
        self._buffered_inputs = [_to_device(batch, self.accelerator.device) for batch in saved]
        self._load_rollout_logs(os.path.join(checkpoint, ROLLOUT_LOG_FILE))


def _to_cpu(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value
