"""Registries by name: ``GRADERS`` (the graders, e.g. for an eval suite's ``grader:``) and ``REWARD_FUNCS`` (graders
plus penalties, for a recipe's ``reward_funcs``), each building picklable TRL reward callables (pure Python).

Graders and penalties share the TRL reward signature ``(prompts, completions, **kwargs) -> list[float | None]``, so a
recipe can list them by name (``reward_funcs: [math_answer, length_penalty]``) and the same objects serve as eval
metrics.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from alignkit.plugins.common.length_penalty import LengthPenalty
from alignkit.plugins.common.math_grader import MathAnswer
from alignkit.plugins.common.repetition_penalty import RepetitionPenalty
from alignkit.plugins.common.text_graders import Contains, EditDistance, ExactMatch, Grader

__all__ = ["GRADERS", "REWARD_FUNCS", "get_grader", "get_reward_func", "import_reward_func", "is_import_path"]

GRADERS: dict[str, type[Grader]] = {
    "exact_match": ExactMatch,
    "contains": Contains,
    "edit_distance": EditDistance,
    "math_answer": MathAnswer,
}


def get_grader(name: str, /, **kwargs: Any) -> Grader:
    """Instantiate a grader by registry name, e.g. ``get_grader("math_answer", column="solution", name="acc")``.

    ``name`` is positional-only so ``name=`` in kwargs reaches the grader (its logged reward name).
    """
    if name not in GRADERS:
        raise ValueError(f"unknown grader {name!r}; available: {', '.join(sorted(GRADERS))}")
    return GRADERS[name](**kwargs)


REWARD_FUNCS: dict[str, Callable[..., Any]] = {
    **GRADERS,
    "length_penalty": LengthPenalty,
    "repetition_penalty": RepetitionPenalty,
}


def get_reward_func(name: str, /, **kwargs: Any) -> Callable[..., list[float | None]]:
    """Build the reward callable registered under ``name`` (keyword arguments go to its constructor)."""
    if name not in REWARD_FUNCS:
        raise ValueError(f"unknown reward function {name!r}; available: {sorted(REWARD_FUNCS)}")
    return REWARD_FUNCS[name](**kwargs)


_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_import_path(name: str) -> bool:
    """Whether a ``reward_funcs`` entry is meant as an import path ``module:function`` (it has a colon and is not a
    ``run:NAME`` reward run)."""
    return ":" in name and not name.startswith("run:")


def import_reward_func(spec: str) -> Callable[..., list[float | None]]:
    """The reward function an import path ``package.module:function`` names (a recipe's own reward function).

    The module is imported from the installed packages, ``PYTHONPATH`` or, last, the current directory. A function
    is used as it is; a class is instantiated without arguments (as the registry's entries are). Every failure is a
    ``ValueError`` whose one-line message says what is wrong with ``spec`` and what to do.
    """
    if not _IMPORT_PATH.match(spec):
        raise ValueError(f"'{spec}' is not an import path of the form package.module:function")
    module_name, _, attr = spec.partition(":")
    if os.getcwd() not in sys.path:  # as `python -m` does, but last: a local file never shadows an installed package
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        own = module_name == missing or module_name.startswith(f"{missing}.")
        where = "" if own else f" (imported by {module_name})"
        raise ValueError(
            f"'{spec}': no module named '{missing}'{where}; install it or add its folder to PYTHONPATH"
        ) from None
    except Exception as exc:  # the module itself fails to import: a syntax error, an exception at import time
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ValueError(
            f"'{spec}': importing {module_name} failed ({type(exc).__name__}: {first}); fix that module"
        ) from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"'{spec}': module {module_name} has no attribute '{attr}'; check the name after ':'")
        obj = getattr(obj, part)
    if isinstance(obj, type):
        try:
            obj = obj()
        except Exception as exc:
            raise ValueError(
                f"'{spec}': class {attr} cannot be built without arguments ({type(exc).__name__}: {exc})"
            ) from None
    if not callable(obj):
        raise ValueError(
            f"'{spec}' is a {type(obj).__name__}, not a function; a reward function takes (prompts, completions, "
            "**kwargs) and returns one float per completion"
        )
    return obj
