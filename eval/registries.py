"""The eval's three registries, name -> builder: metrics, judges and prompt sources.

A suite names what it wants (``metrics: {rm_score: ...}``, ``judges: [rm, grader]``, a prompt set's ``source``); the
harness looks each name up here and calls what it finds, so adding a metric, a judge or a way to load prompts is one
registered function or class, with no harness change::

    from alignkit.eval.registries import JUDGES

    @JUDGES.register("length")
    def length_judge(options, ctx, prompt_data):   # -> a PairwiseJudge, or None where it does not apply
        ...

- :data:`METRICS`: name -> a :class:`~alignkit.eval.metric_base.Metric` subclass; its ``options`` dataclass is what
  the suite's ``metrics.<name>`` mapping parses into. Metrics run in registration order (the built-ins: responses
  first, the reward model before the judges that reuse its scores, lm-eval last).
- :data:`JUDGES`: name -> ``builder(win_rate_options, ctx, prompt_data) -> SuiteJudge | None``
  (:mod:`alignkit.eval.judge_builders`).
- :data:`PROMPT_SOURCES`: name -> ``loader(ref, split, n) -> list[row]`` (:mod:`alignkit.eval.prompt_sets`).

The built-in entries are registered by importing their modules, which happens on the first lookup; none of them
imports torch at module level.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from alignkit.errors import AlignkitError

_BUILTIN_MODULES = (
    "alignkit.eval.prompt_sets",
    "alignkit.eval.metric_responses",
    "alignkit.eval.metric_rm_score",
    "alignkit.eval.metric_perplexity",
    "alignkit.eval.metric_preference",
    "alignkit.eval.metric_win_rate",
    "alignkit.eval.metric_lm_eval",
    "alignkit.eval.judge_builders",
)
_loaded = False


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)


class Registry:
    """An ordered mapping name -> builder with one-line errors; ``kind`` names the entries in messages."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        """Decorator: register a builder (function or class) under ``name``; a second entry for a name is an error."""

        def add(builder: Any) -> Any:
            if name in self._entries and self._entries[name] is not builder:
                raise AlignkitError(f"{self.kind} '{name}' is already registered ({self._entries[name]!r})")
            self._entries[name] = builder
            return builder

        return add

    def get(self, name: str) -> Any:
        """The builder registered as ``name``; an unknown name is a one-line error listing the known ones."""
        _load_builtins()
        if name not in self._entries:
            raise AlignkitError(f"unknown {self.kind} '{name}' (known: {', '.join(sorted(self._entries))})")
        return self._entries[name]

    def names(self) -> list[str]:
        """Registered names: the built-ins in :data:`_BUILTIN_MODULES` order, then the rest in registration order.

        Not plain registration order: importing one metric module first (``from alignkit.eval.metric_win_rate
        import ...``) registers it before the built-ins load, and the harness runs metrics in this order (the
        reward model must score before the judge that reuses its scores)."""
        _load_builtins()
        rank = {module: i for i, module in enumerate(_BUILTIN_MODULES)}
        return sorted(self._entries, key=lambda n: rank.get(getattr(self._entries[n], "__module__", ""), len(rank)))

    def __contains__(self, name: object) -> bool:
        _load_builtins()
        return name in self._entries


METRICS = Registry("metric")
JUDGES = Registry("judge")
PROMPT_SOURCES = Registry("prompt source")
