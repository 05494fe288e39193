"""The one adaptive-KL path of GRPO, DPO and PPO: a controller driven by a transformers ``TrainerCallback``.

The trainer records KL readings with :meth:`KLControllerCallback.record` (one per micro-batch, or one per rollout);
the callback turns the readings since the last update into one controller update (on each optimizer step, or when the
trainer calls :meth:`~KLControllerCallback.flush`, e.g. once per generation batch), pushes the new β into the trainer,
and checkpoints the controller: ``kl_controller.json`` is written into ``<output_dir>/checkpoint-<step>/`` on save.
On resume, :class:`AdaptiveKLMixin` reads it from the checkpoint the Trainer resumes from (any path); a callback used
without the mixin reads ``<output_dir>/checkpoint-<step>/`` when training begins. A missing file logs a warning and
β restarts from the config. What each trainer measures and the target's unit:
:mod:`alignkit.plugins.common.kl_fields`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable

from transformers import TrainerCallback

from alignkit.plugins.common.kl_controllers import AdaptiveKLController, FixedKLController, make_kl_controller

logger = logging.getLogger(__name__)

__all__ = ["STATE_FILE", "AdaptiveKLMixin", "KLControllerCallback"]

STATE_FILE = "kl_controller.json"


class KLControllerCallback(TrainerCallback):
    """Feeds averaged KL readings to ``controller`` and applies its β through ``apply(beta)``.

    Args:
        controller: a Fixed/Adaptive KL controller.
        apply: called with the new β after each update and after a restore (e.g. ``lambda b: setattr(t, "beta", b)``).
        update_on_step_end: update after every optimizer step (DPO); if False, only :meth:`flush` updates (GRPO, PPO).
    """

    def __init__(
        self,
        controller: FixedKLController | AdaptiveKLController,
        apply: Callable[[float], None],
        update_on_step_end: bool = True,
    ):
        self.controller = controller
        self.apply = apply
        self.update_on_step_end = update_on_step_end
        self._kl_sum = 0.0
        self._count = 0
        self._samples = 0
        self._resume_handled = False
        self.saved_by_trainer = False  # True: the trainer writes kl_controller.json itself (AdaptiveKLMixin)

    def record(self, kl: float, n_samples: int) -> None:
        """One reading: mean KL ``kl`` over ``n_samples`` samples (global, across processes)."""
        self._kl_sum += float(kl) * n_samples
        self._samples += int(n_samples)
        self._count += 1

    def flush(self) -> float:
        """Update β from the sample-weighted mean of the readings since the last update; returns the current β."""
        if self._samples > 0:
            beta = self.controller.update(self._kl_sum / self._samples, self._samples)
            self.apply(beta)
        self._kl_sum, self._count, self._samples = 0.0, 0, 0
        return self.controller.value

    def save(self, folder: str) -> None:
        """Write the controller state to ``folder/kl_controller.json``."""
        with open(os.path.join(folder, STATE_FILE), "w") as f:
            json.dump(self.controller.state_dict(), f)

    def load(self, folder: str) -> bool:
        """Restore the controller from ``folder/kl_controller.json`` and apply its β; False (with a warning) if the
        file is absent."""
        self._resume_handled = True
        path = os.path.join(folder, STATE_FILE)
        if not os.path.exists(path):
            logger.warning("resuming from %s but %s is missing; KL coefficient restarts from the config", folder, path)
            return False
        with open(path) as f:
            self.controller.load_state_dict(json.load(f))
        self.apply(self.controller.value)
        return True

    def on_step_end(self, args, state, control, **kwargs):
        if self.update_on_step_end:
            self.flush()

    def on_save(self, args, state, control, **kwargs):
        # AdaptiveKLMixin saves earlier, inside the checkpoint write (see there), unless save_only_model skips that
        # write; a bare callback saves here
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        by_trainer = self.saved_by_trainer and not args.save_only_model
        if not by_trainer and state.is_world_process_zero and os.path.isdir(folder):
            self.save(folder)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step > 0 and not self._resume_handled:  # resumed, and no trainer loaded its checkpoint
            self.load(os.path.join(args.output_dir, f"checkpoint-{state.global_step}"))


class AdaptiveKLMixin:
    """Trainer mixin (before the TRL trainer in the bases) that wires :class:`KLControllerCallback` when the config's
    ``kl_target`` is set, and adds nothing otherwise (no callback, stock TRL behaviour).

    β lives in the trainer's ``beta`` attribute (the one TRL's loss reads; PPO's rollout reads it too); the callback
    sets it. ``_save_optimizer_and_scheduler`` writes ``kl_controller.json`` into the checkpoint before the Trainer
    writes ``trainer_state.json`` (the file that marks a checkpoint complete, :func:`alignkit.runs.last_checkpoint`),
    so a run killed while saving never leaves a complete-looking checkpoint without it;
    ``_load_optimizer_and_scheduler`` (the Trainer seam that receives the checkpoint path on resume) restores the
    controller from it.
    """

    _kl_callback: KLControllerCallback | None = None

    def _add_kl_controller(self, update_on_step_end: bool) -> None:
        """Call once at the end of ``__init__`` (after TRL set ``self.beta``)."""
        if self.args.kl_target is None:
            return
        controller = make_kl_controller(self.beta, self.args.kl_target, self.args.kl_horizon)
        self._kl_callback = KLControllerCallback(controller, self._set_beta, update_on_step_end)
        self._kl_callback.saved_by_trainer = True
        self.add_callback(self._kl_callback)

    def _set_beta(self, beta: float) -> None:
        self.beta = beta

    @property
    def kl_controller(self) -> FixedKLController | AdaptiveKLController | None:
        """The adaptive-β controller, or None when β is fixed (``kl_target`` unset)."""
        return None if self._kl_callback is None else self._kl_callback.controller

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        super()._save_optimizer_and_scheduler(output_dir)
        if self._kl_callback is not None and self.args.should_save:
            self._kl_callback.save(output_dir)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is not None and self._kl_callback is not None:
            self._kl_callback.load(checkpoint)
