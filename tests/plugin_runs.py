"""Shared set-up of the plugin tests' tiny-model runs (imported by tests/test_plugin_*.py)."""

from __future__ import annotations

from typing import Any

# CPU, fp32, no checkpointing: fast and deterministic on the test machines.
CPU = dict(bf16=False, use_cpu=True, gradient_checkpointing=False, report_to="none", seed=0)
# Two optimizer steps of two rows at a high learning rate: enough for parameters to move and metrics to be logged.
TINY_RUN = dict(
    max_steps=2,
    per_device_train_batch_size=2,
    learning_rate=1e-2,
    logging_steps=1,
    max_length=64,
    save_strategy="no",
    **CPU,
)


def make_trainer(cls_trainer, cls_config, model_path: str, tmp_path, train_dataset, **extra: Any):
    """``cls_trainer`` on ``train_dataset`` with :data:`TINY_RUN` settings; ``extra`` config fields win."""
    args = cls_config(output_dir=str(tmp_path), **{**TINY_RUN, **extra})
    return cls_trainer(model=model_path, args=args, train_dataset=train_dataset)
