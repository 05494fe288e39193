"""Glue between a KL controller (:mod:`alignkit.plugins.common.kl_controllers`) and a transformers ``Trainer``.

The trainer records one KL reading per micro-batch with :meth:`KLControllerCallback.record`; the callback turns the
readings into one controller update (on each optimizer step, or when the trainer calls :meth:`flush`, e.g. once per
GRPO generation batch), pushes the new β into the trainer, and saves/restores the controller with checkpoints:
``kl_controller.json`` is written into ``<output_dir>/checkpoint-<step>/`` on save and read back when a run resumes
at that step (a checkpoint outside ``output_dir`` is not found; β then restarts from the config, with a warning).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable

from transformers import TrainerCallback

from .kl_controllers import AdaptiveKLController, FixedKLController

logger = logging.getLogger(__name__)

__all__ = ["KLControllerCallback"]

STATE_FILE = "kl_controller.json"


class KLControllerCallback(TrainerCallback):
    """Feeds averaged KL readings to ``controller`` and applies its β through ``apply(beta)``.

    Args:
        controller: a Fixed/Adaptive KL controller.
        apply: called with the new β after each update and after a restore (e.g. ``lambda b: setattr(t, "beta", b)``).
        update_on_step_end: update after every optimizer step (DPO); if False, only :meth:`flush` updates (GRPO).
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

    def record(self, kl: float, n_samples: int) -> None:
        """One micro-batch reading: mean KL ``kl`` over ``n_samples`` sequences (global, across processes)."""
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

    def on_step_end(self, args, state, control, **kwargs):
        if self.update_on_step_end:
            self.flush()

    def on_save(self, args, state, control, **kwargs):
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if state.is_world_process_zero and os.path.isdir(folder):
            with open(os.path.join(folder, STATE_FILE), "w") as f:
                json.dump(self.controller.state_dict(), f)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            return
        path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}", STATE_FILE)
        if not os.path.exists(path):
            logger.warning(
                "resuming at step %d but %s is missing; KL coefficient restarts from the config",
                state.global_step,
                path,
            )
            return
        with open(path) as f:
            self.controller.load_state_dict(json.load(f))
        self.apply(self.controller.value)
