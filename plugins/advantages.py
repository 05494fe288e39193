"""Public name of the GRPO advantage normalizations (pure torch): the code is
:mod:`alignkit.plugins.common.advantage_methods`."""

from alignkit.plugins.common.advantage_methods import ADVANTAGE_METHODS, DEFAULT_EPS, available_methods, normalize

__all__ = ["ADVANTAGE_METHODS", "DEFAULT_EPS", "available_methods", "normalize"]
