"""Checks ``alignkit eval`` runs before it loads a model or generates anything, so bad input costs nothing.

- :func:`check_same_suite`: runs compared with ``--compare`` were set up with one eval suite (their prompt sets and
  generation settings), or the user picks one with ``--suite``;
- :func:`check_model_refs`: a reward model or judge the suite names by path exists, and a reward model is a
  sequence classifier;
- :func:`check_adapter_base`: an adapter is evaluated on the base it was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alignkit.errors import AlignkitError
from alignkit.preflight import model_architectures

# config.json keys that must agree between an adapter's training base and the base it is loaded on
_SHAPE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "intermediate_size", "vocab_size")


def check_same_suite(runs: dict[str, dict], suite_given: bool) -> None:
    """``runs`` maps run directory -> run.json. Runs set up with different suites cannot share one report unless
    ``--suite`` names the suite to use for all."""
    suites = {name: meta.get("eval_suite") for name, meta in runs.items() if meta.get("eval_suite")}
    if len(set(suites.values())) > 1 and not suite_given:
        listed = ", ".join(f"{name}: {suite}" for name, suite in suites.items())
        raise AlignkitError(
            f"--compare: the runs use different eval suites ({listed}), so their prompt sets and generation "
            "settings differ; pass --suite NAME to evaluate all of them on one suite"
        )


def _local(ref: str | None) -> Path | None:
    """The path a model reference names, when it is a path (not run:NAME, an alias or a hub id)."""
    if not ref or ref.startswith("run:"):
        return None
    from alignkit.models import EMBEDDED_MODELS

    if ref in EMBEDDED_MODELS:
        return None
    path = Path(ref).expanduser()
    if path.exists() or ref.startswith((".", "/", "~")):
        return path
    return None


def check_model_refs(suite: Any) -> None:
    """Reward models and judges named by path in the suite (see the module docstring)."""
    refs: list[tuple[str, str | None, bool]] = []  # (suite field, reference, must be a sequence classifier)
    rm_score = suite.metric("rm_score")
    if rm_score is not None:
        refs.append(("metrics.rm_score.reward_model", rm_score.reward_model, True))
    win_rate = suite.metric("win_rate")
    if win_rate is not None:
        if "rm" in win_rate.judges:
            refs.append(("metrics.win_rate.rm_judge", win_rate.rm_judge, True))
        if "llm" in win_rate.judges:
            refs.append(("metrics.win_rate.llm_judge", win_rate.llm_judge, False))
    for where, ref, classifier in refs:
        path = _local(ref)
        if path is None:
            continue
        if not path.is_dir():
            raise AlignkitError(f"suite {suite.path}: {where}: model path '{ref}' does not exist")
        archs = model_architectures(path)
        if classifier and archs and not any(a.endswith("ForSequenceClassification") for a in archs):
            raise AlignkitError(
                f"suite {suite.path}: {where}: '{ref}' is not a sequence classifier (it is {archs[0]}); give a "
                "reward model (e.g. run:rm-smol, trained with `alignkit train rm-smol`)"
            )


def check_adapter_base(spec: Any) -> None:
    """An adapter's recorded base and the base it is loaded on must have the same shape (when both are local)."""
    if not spec.adapter:
        return
    try:
        trained_on = json.loads((Path(spec.adapter) / "adapter_config.json").read_text())["base_model_name_or_path"]
    except (OSError, ValueError, KeyError):
        return
    if not trained_on or not Path(trained_on).is_dir() or not Path(spec.base).is_dir():
        return
    shapes = [_shape(Path(trained_on)), _shape(Path(spec.base))]
    if shapes[0] and shapes[1] and shapes[0] != shapes[1]:
        differ = [k for k in _SHAPE_KEYS if shapes[0].get(k) != shapes[1].get(k)]
        raise AlignkitError(
            f"model '{spec.name}': adapter {spec.adapter} was trained on {trained_on}, which does not match the "
            f"base {spec.base} it is loaded on ({', '.join(differ)} differ); evaluate it on its own base model"
        )


def _shape(path: Path) -> dict[str, Any]:
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: config.get(k) for k in _SHAPE_KEYS}
