"""Public name of the KL maths (pure torch, no transformers import): estimators, controllers and the masked mean.

The code lives in :mod:`alignkit.plugins.common.kl_estimators`, :mod:`~alignkit.plugins.common.kl_controllers` and
:mod:`~alignkit.plugins.common.masked`; which KL each trainer measures is in
:mod:`~alignkit.plugins.common.kl_fields`.
"""

from alignkit.plugins.common.kl_controllers import (
    DEFAULT_HORIZON,
    AdaptiveKLController,
    FixedKLController,
    check_adaptive_kl_fields,
    make_kl_controller,
)
from alignkit.plugins.common.kl_estimators import KL_ESTIMATORS, kl_estimate, kl_k1, kl_k2, kl_k3
from alignkit.plugins.common.masked import masked_mean

__all__ = [
    "DEFAULT_HORIZON",
    "KL_ESTIMATORS",
    "AdaptiveKLController",
    "FixedKLController",
    "check_adaptive_kl_fields",
    "kl_estimate",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "make_kl_controller",
    "masked_mean",
]
