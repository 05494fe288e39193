"""KL coefficient controllers (pure Python, no transformers import).

The KL coefficient β of the PPO/GRPO/DPO objective, either fixed or adapted by the proportional controller of
Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences", §2.2 (https://arxiv.org/abs/1909.08593).
TRL deleted its adaptive controller long ago (upstream issue #4532 asks for it in GRPO); these are small,
checkpointable objects. :mod:`alignkit.plugins.common.kl_callback` drives one from a trainer, the same way for GRPO,
DPO and PPO; the KL each of them feeds in (estimator and unit) is listed in :mod:`alignkit.plugins.common.kl_fields`.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["AdaptiveKLController", "FixedKLController", "check_adaptive_kl_fields", "make_kl_controller"]

# Ziegler et al. clip the proportional error so one wild KL reading moves β by a bounded amount.
_ERROR_CLIP = 0.2
# Historical TRL PPO default (``horizon=10000``), used when only a target is given.
DEFAULT_HORIZON = 10_000


def _check_kl_reading(current_kl: float, n_steps: int) -> float:
    current_kl = float(current_kl)
    if math.isnan(current_kl):
        raise ValueError("current_kl is NaN; the KL controller cannot update from it (check the KL estimate)")
    if isinstance(n_steps, bool) or int(n_steps) != n_steps or n_steps < 0:
        raise ValueError(f"n_steps must be a non-negative integer, got {n_steps!r}")
    return current_kl


class FixedKLController:
    """A constant KL coefficient β; ``update`` validates its input and returns β unchanged.

    Args:
        kl_coef: β ≥ 0 (0 disables the KL term).
    """

    kind = "fixed"

    def __init__(self, kl_coef: float):
        if not math.isfinite(kl_coef) or kl_coef < 0:
            raise ValueError(f"kl_coef must be a finite number >= 0, got {kl_coef!r}")
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Return β unchanged (the reading is still validated, so a NaN KL fails the same way for both kinds)."""
        _check_kl_reading(current_kl, n_steps)
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _check_kind(state, self.kind)
        self.value = float(state["value"])

    def __repr__(self) -> str:
        return f"FixedKLController(kl_coef={self.value})"


class AdaptiveKLController:
    """Proportional KL controller of Ziegler et al. 2019 (§2.2, https://arxiv.org/abs/1909.08593).

    On each ``update(current_kl, n_steps)``::

        error = clip(current_kl / target − 1, −0.2, 0.2)
        β    ← β · (1 + error · n_steps / horizon)

    so β rises when the policy drifts further from the reference than ``target`` and falls when it stays closer.

    ``n_steps`` counts the *samples (sequences) seen since the previous update*, as in the paper (their
    K_β = 100,000 is in samples); ``horizon`` is in the same unit. Pass the global number of sequences in the batch
    (e.g. ``per_device_batch × grad_accum × world_size``), not the number of optimizer steps.

    Deviation from the paper: ``n_steps / horizon`` is capped at 1, so a single update moves β by at most ±20 %.
    Without the cap a badly scaled horizon (``n_steps ≥ 5·horizon``) could drive β to zero or below, after which a
    multiplicative controller can never recover. With sensible settings (n_steps ≪ horizon) the cap never binds.

    Args:
        init_kl_coef: initial β > 0.
        target: desired KL per sequence (same unit as the ``current_kl`` you feed in), > 0.
        horizon: number of samples over which an error is corrected, > 0.
    """

    kind = "adaptive"

    def __init__(self, init_kl_coef: float, target: float, horizon: float):
        if not math.isfinite(init_kl_coef) or init_kl_coef <= 0:
            raise ValueError(f"init_kl_coef must be a finite number > 0, got {init_kl_coef!r}")
        if target is None or not math.isfinite(target) or target <= 0:
            raise ValueError(f"target (KL target) must be a finite number > 0, got {target!r}")
        if horizon is None or not math.isfinite(horizon) or horizon <= 0:
            raise ValueError(f"horizon must be a finite number > 0, got {horizon!r}")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Move β towards keeping ``current_kl`` at ``target``; returns the new β."""
        current_kl = _check_kl_reading(current_kl, n_steps)
        error = min(max(current_kl / self.target - 1.0, -_ERROR_CLIP), _ERROR_CLIP)
        self.value *= 1.0 + error * min(n_steps / self.horizon, 1.0)
        return self.value

    def state_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore β only; target and horizon come from the (possibly edited) config of the resumed run."""
        _check_kind(state, self.kind)
        value = float(state["value"])
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"checkpointed KL coefficient 'value' must be a finite number > 0, got {value!r}")
        self.value = value

    def __repr__(self) -> str:
        return f"AdaptiveKLController(value={self.value}, target={self.target}, horizon={self.horizon})"


def _check_kind(state: dict[str, Any], kind: str) -> None:
    if state.get("kind", kind) != kind:
        raise ValueError(f"KL controller state is of kind {state.get('kind')!r}, cannot load it into a {kind!r} one")


def check_adaptive_kl_fields(kl_target: float | None, kl_horizon: float | None, beta: float) -> None:
    """Validate a trainer config's adaptive-KL fields, with errors that name them (``kl_target``, ``kl_horizon``,
    ``beta``): a target and a horizon must be finite and > 0, a horizon needs a target, and a target needs an
    initial β > 0 (the controller multiplies β, so it could never leave 0)."""
    for name, value in (("kl_target", kl_target), ("kl_horizon", kl_horizon)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0 (or None), got {value!r}")
    if kl_horizon is not None and kl_target is None:
        raise ValueError("kl_horizon was set without kl_target; set kl_target to enable the adaptive KL")
    if kl_target is not None and not beta > 0:
        raise ValueError(f"kl_target (adaptive KL) needs an initial beta > 0, got beta={beta!r}")


def make_kl_controller(
    kl_coef: float, target: float | None = None, horizon: float | None = None
) -> FixedKLController | AdaptiveKLController:
    """Build a controller: fixed β when ``target`` is None, else adaptive starting at ``kl_coef``.

    ``horizon`` defaults to 10,000 samples (TRL's historical PPO default) when a target is given; giving a horizon
    without a target is rejected, since it would silently do nothing.
    """
    if target is None:
        if horizon is not None:
            raise ValueError("horizon was given without target; set target to use the adaptive KL controller")
        return FixedKLController(kl_coef)
    return AdaptiveKLController(kl_coef, target, DEFAULT_HORIZON if horizon is None else horizon)
