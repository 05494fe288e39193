"""The adaptive-KL config fields, defined and validated once for every trainer (pure Python, no transformers).

Each trainer measures its own KL, and ``kl_target`` is in that KL's unit:

======  ==========================================================  ===================  =====================
trainer KL reading fed to the controller (logged as)                unit of kl_target    kl_horizon counts
======  ==========================================================  ===================  =====================
GRPO    TRL's per-token k3 of sampled completions, token mean (kl)  nats per token       completions
DPO     implicit per-token k2 on chosen + rejected dataset tokens,  nats per token       preference pairs
        token mean (kl_implicit)
PPO     per-token k3 (or, kl_reading analytic, each position's KL   nats per sequence    sequences
        over the policy's top tokens) summed over each completion,
        mean over sequences (kl), whatever ``kl_estimator`` the
        reward uses
======  ==========================================================  ===================  =====================

So a target of 0.05 is a per-token KL for GRPO and DPO, but a whole-completion KL for PPO (about 0.05 / |y| per
token). The controller (:class:`~alignkit.plugins.common.kl_controllers.AdaptiveKLController`, Ziegler et al. 2019)
starts at the trainer's ``beta`` and is driven, saved and restored by
:mod:`alignkit.plugins.common.kl_callback` in the same way for all three.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alignkit.plugins.common.kl_controllers import check_adaptive_kl_fields

__all__ = ["AdaptiveKLFields"]


@dataclass
class AdaptiveKLFields:
    """Config mixin: ``kl_target`` and ``kl_horizon``, off by default; put it before the TRL config in the bases.

    ``__post_init__`` validates them after the TRL config's own checks (errors name the field): a target and a
    horizon must be finite and > 0, a horizon needs a target, and a target needs ``beta`` > 0.
    """

    kl_target: float | None = field(
        default=None,
        metadata={
            "help": "Target KL of an adaptive β (Ziegler et al. 2019 controller starting at `beta`, which must be "
            "> 0), in the unit of the KL this trainer measures: GRPO per-token k3 of its completions (nats/token, "
            "the `kl` metric); DPO implicit per-token k2 on chosen+rejected tokens (nats/token, `kl_implicit`); "
            "PPO per-token k3 summed over the completion (nats/sequence, `kl`). None keeps β fixed."
        },
    )
    kl_horizon: float | None = field(
        default=None,
        metadata={
            "help": "Horizon of the adaptive-β controller, in samples: completions (GRPO), preference pairs (DPO), "
            "sequences (PPO); β moves by at most ±20% × samples per update / horizon. Default 10000 when kl_target "
            "is set. Must be > 0."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        # TRL's GRPO drops the reference model at beta=0, and the controller multiplies β: it needs β > 0 to start.
        check_adaptive_kl_fields(self.kl_target, self.kl_horizon, self.beta)
