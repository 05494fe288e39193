"""Guards against NaN and inf in training: bad rewards are skipped, bad steps are skipped, a run of them aborts.

- :class:`FiniteRewards` wraps a reward function so a NaN or ±inf reward becomes ``None``, which TRL's GRPO (and our
  PPO) already treat as "this function does not score this sample": the weighted sum and the group statistics skip
  it (``nansum``/``nanmean``), and a sample no function scores gets advantage 0. The wrapper counts what it skipped.
- :class:`FiniteGuard` is a ``TrainerCallback`` for any trainer. Before each optimizer step it checks the trainable
  parameters' gradients (a non-finite loss makes them non-finite too): when any is NaN/inf, it drops them, so the
  optimizer leaves those weights alone for that step, and counts the step. ``max_bad_steps`` bad steps in a row
  abort training with a one-line :class:`~alignkit.errors.AlignkitError` that names the cause. Before a checkpoint
  is saved it checks the trainable weights, so no checkpoint ever holds non-finite weights. Counts are logged as
  ``nonfinite/steps_skipped`` (and, for rewards, ``nonfinite/rewards_skipped``).

Imports torch and transformers.
"""

from __future__ import annotations

import inspect
import logging
import math
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from alignkit.errors import AlignkitError

logger = logging.getLogger("alignkit")


class FiniteRewards:
    """``reward_fn`` with every non-finite reward replaced by ``None`` (TRL: not scored), counted in ``skipped``."""

    def __init__(self, reward_fn: Any):
        self.reward_fn = reward_fn
        self.__name__ = getattr(reward_fn, "__name__", type(reward_fn).__name__)  # TRL logs rewards/<name>/mean
        self.skipped = 0

    def __call__(self, *args: Any, **kwargs: Any) -> list[float | None]:
        rewards = self.reward_fn(*args, **kwargs)
        out = []
        for r in rewards:
            bad = r is not None and not math.isfinite(float(r))
            self.skipped += bad
            out.append(None if bad else r)
        return out

    def take(self) -> int:
        """The count since the last call (logged once per generation batch)."""
        n, self.skipped = self.skipped, 0
        return n


def wrap_reward_funcs(reward_funcs: Any) -> Any:
    """Wrap the plain callables among ``reward_funcs`` (a reward model or a model id is left to TRL)."""
    if reward_funcs is None:
        return None
    single = not isinstance(reward_funcs, list)
    funcs = [reward_funcs] if single else list(reward_funcs)
    plain = (torch.nn.Module, FiniteRewards)
    wrapped = [  # async reward functions stay as they are: TRL awaits them, and the wrapper is synchronous
        FiniteRewards(f) if callable(f) and not isinstance(f, plain) and not inspect.iscoroutinefunction(f) else f
        for f in funcs
    ]
    return wrapped[0] if single else wrapped


def _trainable(model: Any) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _all_finite(tensors: list[torch.Tensor]) -> bool:
    # one device sync for all tensors (a GPU would otherwise wait once per LoRA matrix)
    return not tensors or bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


class FiniteGuard(TrainerCallback, ExportableState):
    """Skip optimizer steps with non-finite gradients, abort after ``max_bad_steps`` in a row, and never save a
    checkpoint with non-finite weights (see the module docstring).

    Its counts live in each checkpoint's ``trainer_state.json`` (``stateful_callbacks``, written by the Trainer as part
    of the checkpoint) and are taken back when a run resumes, so ``nonfinite/steps_skipped`` continues its count."""

    def __init__(self, max_bad_steps: int = 3):
        if max_bad_steps < 1:
            raise ValueError(f"max_bad_steps must be >= 1, got {max_bad_steps}")
        self.max_bad_steps = max_bad_steps
        self.in_a_row = 0
        self.skipped = 0

    def state(self) -> dict:
        counts = {"in_a_row": self.in_a_row, "skipped": self.skipped}
        return {"args": {"max_bad_steps": self.max_bad_steps}, "attributes": counts}

    def on_train_begin(self, args, state, control, **kwargs):
        name = type(self).__name__
        saved = state.stateful_callbacks.get(name) if state.global_step > 0 else None
        if isinstance(saved, dict):  # resumed from a checkpoint: continue its counts
            self.in_a_row = int(saved.get("attributes", {}).get("in_a_row", 0))
            self.skipped = int(saved.get("attributes", {}).get("skipped", 0))
        state.stateful_callbacks[name] = self.state()  # the Trainer updates only entries that exist (old checkpoints)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = [p.grad for p in _trainable(model) if p.grad is not None]
        if _all_finite(grads):
            self.in_a_row = 0
            return
        self.in_a_row += 1
        self.skipped += 1
        for p in _trainable(model):
            p.grad = None  # torch optimizers leave a parameter without a gradient untouched
        step = state.global_step + 1
        logger.warning("step %d: non-finite loss or gradients; the update was skipped (%d so far)", step, self.skipped)
        if self.in_a_row >= self.max_bad_steps:
            raise AlignkitError(
                f"training aborted at step {step}: {self.in_a_row} steps in a row had a non-finite (NaN/inf) loss or "
                "gradients; lower learning_rate, check the data and reward functions, or resume from the last "
                "checkpoint (it holds finite weights)"
            )

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if control.should_save and not _all_finite([p.detach() for p in _trainable(model)]):
            control.should_save = False
            raise AlignkitError(
                f"training aborted at step {state.global_step}: the trainable weights hold NaN/inf, so no checkpoint "
                "was saved; lower learning_rate and resume from the last checkpoint"
            )

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is not None and "loss" in logs:  # training logs only
            logs["nonfinite/steps_skipped"] = self.skipped  # what later callbacks (train_log.jsonl) write
            if state.log_history:  # the Trainer appended its copy of this entry before calling us
                state.log_history[-1]["nonfinite/steps_skipped"] = self.skipped
