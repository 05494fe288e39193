"""Eval suites: which prompts, which metrics, which judges, how to decode.

A suite is a YAML file (``eval/suites/<name>.yaml``, shipped as package data, or any path) parsed into dataclasses:
:class:`Suite`, one :class:`PromptSet` per prompt set, :class:`~alignkit.eval.generation.GenerationConfig`, and for
each metric the options dataclass it registered in :data:`alignkit.eval.registries.METRICS`. Every key is checked:
an unknown or misspelled key, a missing required key or a bad value is a one-line
:class:`~alignkit.errors.AlignkitError` naming the key and the file, so a typo never silently disables a metric. A
metric is enabled by its presence under ``metrics:``. See ``eval/suites/smol.yaml`` for an annotated example.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from alignkit.errors import AlignkitError
from alignkit.eval.generation import GenerationConfig
from alignkit.eval.registries import METRICS, PROMPT_SOURCES
from alignkit.field_types import hint_kinds, is_whole_number
from alignkit.inference_precision import check_precision
from alignkit.pipeline import RunNeed

SUITES_DIR = Path(__file__).resolve().parent / "suites"


@dataclass
class PromptSet:
    name: str = ""  # default: the card
    card: str = ""  # the source's reference: a dataset card name, or a .json/.jsonl path
    split: str = "test"
    max_prompts: int = 64
    grader: str | None = None  # a plugins.graders name; enables grader accuracy and the grader judge
    reference_column: str = "answer"
    source: str | None = None  # a PROMPT_SOURCES name; default: file for a .json/.jsonl card, else card

    def __post_init__(self) -> None:
        from alignkit.eval.prompt_sets import default_source

        if not self.card:
            raise AlignkitError("needs a 'card'")
        self.name = self.name or self.card
        self.source = self.source or default_source(self.card)
        PROMPT_SOURCES.get(self.source)
        if self.grader:
            from alignkit.plugins.graders import GRADERS

            if self.grader not in GRADERS:
                raise AlignkitError(f"grader '{self.grader}' is not one of {', '.join(sorted(GRADERS))}")


@dataclass
class Suite:
    name: str
    path: Path
    prompt_sets: list[PromptSet]
    generation: GenerationConfig
    metrics: dict[str, Any]  # metric name -> its options dataclass, in the order the harness runs them
    samples: int = 3
    description: str = ""
    precision: str = "exact"  # alignkit.inference_precision: "exact" (fp32 on a CPU) or "fast" (bf16 where native)

    def metric(self, name: str) -> Any | None:
        """The options of an enabled metric, or ``None`` when the suite does not ask for it."""
        return self.metrics.get(name)

    def limit(self, n: int, cap_only: bool = False) -> None:
        """Set every prompt set and every metric's row count (held-out texts, preference pairs) to ``N`` rows
        (``--max-prompts N``), or with ``cap_only`` only lower them (a run's ``max_eval_samples`` never enlarges a
        suite). A metric's options take part by defining ``limit_rows(size)``, ``size: rows -> rows``."""
        if n < 1:
            raise AlignkitError(f"--max-prompts: must be >= 1, got {n}")

        def size(current: int) -> int:
            return min(current, n) if cap_only else n

        for ps in self.prompt_sets:
            ps.max_prompts = size(ps.max_prompts)
        for opts in self.metrics.values():
            if hasattr(opts, "limit_rows"):
                opts.limit_rows(size)

    def required_runs(self) -> list[RunNeed]:
        """The runs (``run:NAME``) this suite cannot do without, each with the recipe that trains it; a metric's
        options take part by defining ``required_runs(where)``."""
        needs = []
        for name, opts in self.metrics.items():
            if hasattr(opts, "required_runs"):
                section = METRICS.get(name).section
                needs += opts.required_runs(f"suite {self.path}: {'metrics.' if section == 'metrics' else ''}{name}")
        return needs


def _mapping(data: Any, where: str, path: Path) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AlignkitError(f"suite {path}: '{where}' must be a mapping, got {type(data).__name__}")
    return dict(data)


def _check_keys(data: dict[str, Any], allowed: set[str] | list[str], where: str, path: Path) -> None:
    for key in data:
        if key not in allowed:
            raise AlignkitError(
                f"suite {path}: unknown key '{key}' in '{where}' (allowed: {', '.join(sorted(allowed))})"
            )


def _nested_dataclass(hint: Any) -> type | None:
    """The dataclass in a field's type hint (``X`` or ``X | None``), if any."""
    for candidate in (hint, *typing.get_args(hint)):
        if dataclasses.is_dataclass(candidate):
            return candidate
    return None


def _value_problem(hint: Any, value: Any, metadata: Any) -> str | None:
    """What is wrong with a suite value for a field typed ``bool`` or ``int`` (alone or ``| None``), else None.

    A boolean must be YAML's true or false (a typo such as ``maybe`` would otherwise read as true). An integer field is
    a count (prompts, rows, tokens, batch size) and must be >= 1, unless its field metadata sets another ``min``
    (``top_k``, ``seed``, ``num_fewshot``: >= 0).
    """
    kinds = hint_kinds(hint)
    if kinds == {bool}:
        return None if isinstance(value, bool) else f"must be true or false, got {value!r}"
    if kinds == {int}:
        if not is_whole_number(value):
            return f"must be a whole number, got {value!r}"
        low = metadata.get("min", 1)
        if value < low:
            return f"must be >= {low}, got {value}"
    return None


def parse_options(cls: type, data: Any, where: str, path: Path) -> Any:
    """``cls(**data)`` for one suite mapping: unknown keys, missing required keys, a bool or int field's bad value
    (:func:`_value_problem`) and values that ``cls`` rejects (``AlignkitError``/``ValueError`` from its
    ``__post_init__``) are one-line errors naming ``where`` and the file. Fields whose type is a dataclass parse
    recursively."""
    data = _mapping(data, where, path)
    init_fields = [f for f in dataclasses.fields(cls) if f.init]
    _check_keys(data, [f.name for f in init_fields], where, path)
    hints = typing.get_type_hints(cls)
    for f in init_fields:
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in data:
            raise AlignkitError(f"suite {path}: '{where}' needs a '{f.name}'")
        nested = _nested_dataclass(hints[f.name])
        if nested is not None and data.get(f.name) is not None:
            data[f.name] = parse_options(nested, data[f.name], f"{where}.{f.name}", path)
        elif data.get(f.name) is not None and (problem := _value_problem(hints[f.name], data[f.name], f.metadata)):
            raise AlignkitError(f"suite {path}: '{where}.{f.name}' {problem}")
    try:
        return cls(**data)
    except (AlignkitError, ValueError, TypeError) as exc:
        raise AlignkitError(f"suite {path}: {where}: {exc}") from None


def suite_path(name_or_path: str) -> Path:
    """A suite name (``smol`` -> ``eval/suites/smol.yaml``) or a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise AlignkitError(f"suite file {p} does not exist")
        return p
    candidate = SUITES_DIR / f"{name_or_path}.yaml"
    if not candidate.is_file():
        known = sorted(f.stem for f in SUITES_DIR.glob("*.yaml"))
        raise AlignkitError(f"unknown suite '{name_or_path}' (known: {', '.join(known)}; or pass a YAML path)")
    return candidate


def load_suite(name_or_path: str) -> Suite:
    path = suite_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise AlignkitError(f"suite {path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    data = _mapping(raw, "top level", path)
    in_metrics = [n for n in METRICS.names() if METRICS.get(n).section == "metrics"]
    top_level = [n for n in METRICS.names() if METRICS.get(n).section != "metrics"]
    top_keys = {"name", "description", "prompt_sets", "generation", "metrics", "samples", "precision", *top_level}
    _check_keys(data, top_keys, "top level", path)

    sets_raw = data.get("prompt_sets") or []
    if not isinstance(sets_raw, list) or not sets_raw:
        raise AlignkitError(f"suite {path}: 'prompt_sets' must be a non-empty list")
    prompt_sets = [parse_options(PromptSet, item, f"prompt_sets[{i}]", path) for i, item in enumerate(sets_raw)]
    if len({p.name for p in prompt_sets}) != len(prompt_sets):
        raise AlignkitError(f"suite {path}: prompt set names must be unique")

    enabled = _mapping(data.get("metrics"), "metrics", path)
    _check_keys(enabled, in_metrics, "metrics", path)
    enabled.update({n: data[n] for n in top_level if n in data})
    metrics = {
        name: parse_options(METRICS.get(name).options, enabled[name], _where(name, top_level), path)
        for name in METRICS.names()
        if name in enabled
    }
    generation = parse_options(GenerationConfig, data.get("generation"), "generation", path)
    return Suite(
        name=str(data.get("name") or path.stem),
        path=path,
        prompt_sets=prompt_sets,
        generation=generation,
        metrics=metrics,
        samples=int(data.get("samples", 3)),
        description=str(data.get("description") or ""),
        precision=check_precision(data.get("precision", "exact"), f"suite {path}: 'precision'"),
    )


def _where(name: str, top_level: list[str]) -> str:
    return name if name in top_level else f"metrics.{name}"
