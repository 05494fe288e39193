"""Eval suites: which prompts, which metrics, which judges, how to decode.

A suite is a YAML file (``eval/suites/<name>.yaml``, shipped as package data, or any path). Every key is checked:
an unknown or misspelled key is a one-line :class:`~alignkit.errors.AlignkitError` naming the key and the file, so a
typo never silently disables a metric. A metric is enabled by its presence under ``metrics:``. See
``eval/suites/smol.yaml`` for an annotated example.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from alignkit.errors import AlignkitError
from alignkit.eval.generation import GenerationConfig

SUITES_DIR = Path(__file__).resolve().parent / "suites"

TOP_KEYS = {"name", "description", "prompt_sets", "generation", "metrics", "lm_eval", "samples"}
PROMPT_SET_KEYS = {"name", "card", "split", "max_prompts", "grader", "reference_column"}
METRIC_KEYS: dict[str, set[str]] = {
    "rm_score": {"reward_model", "train_missing", "batch_size", "max_length"},
    "perplexity": {"heldout", "reference_model", "max_length", "stride", "batch_size"},
    "diversity": {"repetition_n"},
    "preference": {"card", "split", "max_pairs", "batch_size", "max_length"},
    "win_rate": {"judges", "llm_judge", "llm_max_prompts", "tie_band", "batch_size"},
}
HELDOUT_KEYS = {"card", "split", "max_samples"}
LM_EVAL_KEYS = {"tasks", "limit", "batch_size", "num_fewshot", "mode"}
JUDGES = {"rm", "llm", "grader"}


@dataclass
class PromptSet:
    name: str
    card: str
    split: str = "test"
    max_prompts: int = 64
    grader: str | None = None  # a plugins.graders name; enables grader accuracy and the grader judge
    reference_column: str = "answer"


@dataclass
class Suite:
    name: str
    path: Path
    prompt_sets: list[PromptSet]
    generation: GenerationConfig
    metrics: dict[str, dict[str, Any]]
    lm_eval: dict[str, Any] = field(default_factory=dict)
    samples: int = 3
    description: str = ""

    def metric(self, name: str) -> dict[str, Any] | None:
        """The options of an enabled metric, or ``None`` when the suite does not ask for it."""
        return self.metrics.get(name)

    def limit(self, n: int, cap_only: bool = False) -> None:
        """Set every prompt set, the held-out texts and the preference pairs to ``N`` rows (``--max-prompts N``),
        or with ``cap_only`` only lower them (a run's ``max_eval_samples`` never enlarges a suite)."""
        if n < 1:
            raise AlignkitError(f"--max-prompts: must be >= 1, got {n}")

        def size(current: int) -> int:
            return min(current, n) if cap_only else n

        for ps in self.prompt_sets:
            ps.max_prompts = size(ps.max_prompts)
        heldout = (self.metric("perplexity") or {}).get("heldout")
        if heldout:
            heldout["max_samples"] = size(heldout.get("max_samples", 64))
        if self.metric("preference") is not None:
            self.metrics["preference"]["max_pairs"] = size(self.metrics["preference"].get("max_pairs", 64))


def _check_keys(data: Any, allowed: set[str], where: str, path: Path) -> dict[str, Any]:
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AlignkitError(f"suite {path}: '{where}' must be a mapping, got {type(data).__name__}")
    for key in data:
        if key not in allowed:
            raise AlignkitError(
                f"suite {path}: unknown key '{key}' in '{where}' (allowed: {', '.join(sorted(allowed))})"
            )
    return dict(data)


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
    data = _check_keys(raw, TOP_KEYS, "top level", path)
    sets_raw = data.get("prompt_sets") or []
    if not isinstance(sets_raw, list) or not sets_raw:
        raise AlignkitError(f"suite {path}: 'prompt_sets' must be a non-empty list")
    prompt_sets = []
    for i, item in enumerate(sets_raw):
        ps = _check_keys(item, PROMPT_SET_KEYS, f"prompt_sets[{i}]", path)
        if "card" not in ps:
            raise AlignkitError(f"suite {path}: prompt_sets[{i}] needs a 'card'")
        ps.setdefault("name", ps["card"])
        if ps.get("grader"):
            from alignkit.plugins.graders import GRADERS

            if ps["grader"] not in GRADERS:
                known = ", ".join(sorted(GRADERS))
                raise AlignkitError(f"suite {path}: prompt_sets[{i}].grader '{ps['grader']}' is not one of {known}")
        prompt_sets.append(PromptSet(**ps))
    if len({p.name for p in prompt_sets}) != len(prompt_sets):
        raise AlignkitError(f"suite {path}: prompt set names must be unique")
    metrics = _check_keys(data.get("metrics"), set(METRIC_KEYS), "metrics", path)
    for name, opts in metrics.items():
        metrics[name] = _check_keys(opts, METRIC_KEYS[name], f"metrics.{name}", path)
    ppl = metrics.get("perplexity")
    if ppl and ppl.get("heldout") is not None:
        ppl["heldout"] = _check_keys(ppl["heldout"], HELDOUT_KEYS, "metrics.perplexity.heldout", path)
    wr = metrics.get("win_rate")
    if wr is not None:
        judges = wr.setdefault("judges", ["rm", "llm", "grader"])
        for j in judges:
            if j not in JUDGES:
                raise AlignkitError(f"suite {path}: unknown judge '{j}' in metrics.win_rate.judges ({sorted(JUDGES)})")
    gen = _check_keys(data.get("generation"), set(GenerationConfig.__dataclass_fields__), "generation", path)
    return Suite(
        name=str(data.get("name") or path.stem),
        path=path,
        prompt_sets=prompt_sets,
        generation=GenerationConfig.from_dict(gen, f"suite {path}"),
        metrics=metrics,
        lm_eval=_check_keys(data.get("lm_eval"), LM_EVAL_KEYS, "lm_eval", path),
        samples=int(data.get("samples", 3)),
        description=str(data.get("description") or ""),
    )
