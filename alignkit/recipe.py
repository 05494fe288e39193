"""Recipes: flat YAML in TRL/transformers key names, parsed with TRL's own parser into dataclasses.

A recipe file is split, key by key, across three dataclasses, exactly as a TRL script's ``TrlParser`` would:

- :class:`RecipeArguments` (which trainer, which dataset card, sample limits, reward functions, eval suite);
- ``trl.ModelConfig`` (model id, LoRA/QLoRA settings, dtype);
- the trainer's config, e.g. ``alignkit.plugins.DPOConfig`` (TRL's fields plus our plugin fields).

Unknown keys fail loudly, naming the key and the file. Keys the recipe leaves out that depend on the hardware
(precision, checkpointing, dataloader) are chosen by :mod:`alignkit.hardware` and recorded.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.resources
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from alignkit import yaml12
from alignkit.errors import AlignkitError
from alignkit.field_types import hint_kinds, is_whole_number

# trainer name -> (module, config class, trainer class). alignkit's plugins where alignkit adds something; TRL's own
# trainer where nothing of ours applies (KTO; CPO, whose loss_type simpo with cpo_alpha 0 is SimPO).
TRAINERS: dict[str, tuple[str, str, str]] = {
    "sft": ("alignkit.plugins", "SFTConfig", "SFTTrainer"),
    "reward": ("alignkit.plugins", "RewardConfig", "RewardTrainer"),
    "dpo": ("alignkit.plugins", "DPOConfig", "DPOTrainer"),
    "grpo": ("alignkit.plugins", "GRPOConfig", "GRPOTrainer"),
    "ppo": ("alignkit.plugins", "PPOConfig", "PPOTrainer"),
    "kto": ("trl", "KTOConfig", "KTOTrainer"),
    "cpo": ("trl.experimental.cpo", "CPOConfig", "CPOTrainer"),
}


def trainer_classes(trainer: str) -> tuple[type, type]:
    """``(config class, trainer class)`` of a recipe's ``trainer``."""
    module_name, config_name, trainer_name = TRAINERS[trainer]
    if module_name.startswith("trl.experimental"):
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # the recipe header says it is experimental
    module = importlib.import_module(module_name)
    return getattr(module, config_name), getattr(module, trainer_name)


RUNS_ROOT = Path("runs")


@dataclass
class RecipeArguments:
    """alignkit's own recipe keys (everything else is a TRL/transformers key)."""

    trainer: str = field(default="", metadata={"help": f"Which trainer to run: one of {sorted(TRAINERS)}."})
    description: str = field(default="", metadata={"help": "One line shown by `alignkit list`."})
    dataset: str = field(default="", metadata={"help": "Dataset card name (datasets_cards/<name>.yaml) or path."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Cap on training rows (None = all)."})
    max_eval_samples: int | None = field(default=64, metadata={"help": "Cap on held-out rows for eval."})
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={
            "help": "GRPO/PPO reward functions by name (graders and penalties, see "
            "alignkit.plugins.common.reward_funcs), your own by import path (package.module:function, imported from "
            "the installed packages, PYTHONPATH or the current directory), or reward models: run:NAME (a reward run, "
            "trained first when missing) or a reward-model path."
        },
    )
    eval_suite: str | None = field(
        default="smol", metadata={"help": "Eval suite run after training (eval/suites/<name>.yaml); null = none."}
    )
    nonfinite_abort_steps: int = field(
        default=3,
        metadata={
            "help": "Optimizer steps with a NaN/inf loss or gradients are skipped; this many in a row abort the run "
            "(alignkit.plugins.FiniteGuard)."
        },
    )
    reward_hacking_monitor: bool = field(
        default=True,
        metadata={
            "help": "Add alignkit.eval.RewardHackingMonitor to a policy trainer (not reward): logs monitor/* (reward/"
            "length correlation, KL vs target, entropy, zero-spread groups, length, distinct-2, repetition), warns "
            "once per reward-hacking signature, draws training.png. false = off."
        },
    )
    onpolicy_rounds: int = field(
        default=1,
        metadata={
            "help": "Iterative on-policy DPO: rounds of (build pairs with the current policy, train on them, merge). "
            "Needs a DPO recipe on an on-policy pair card (a builder with a 'policy' argument); 1 = one plain run."
        },
    )

    def __post_init__(self):
        if self.trainer not in TRAINERS:
            raise ValueError(f"trainer: must be one of {sorted(TRAINERS)}, got {self.trainer!r}")
        if not self.dataset:
            raise ValueError("dataset: a dataset card name is required (see datasets_cards/)")
        for key in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ValueError(f"{key}: must be >= 1 or null, got {value}")
        if self.nonfinite_abort_steps < 1:
            raise ValueError(f"nonfinite_abort_steps: must be >= 1, got {self.nonfinite_abort_steps}")
        if self.onpolicy_rounds < 1:
            raise ValueError(f"onpolicy_rounds: must be >= 1, got {self.onpolicy_rounds}")
        if self.onpolicy_rounds > 1 and self.trainer != "dpo":
            raise ValueError(f"onpolicy_rounds: {self.onpolicy_rounds} rounds need trainer dpo, not {self.trainer}")
        if self.trainer in ("grpo", "ppo") and not self.reward_funcs:
            raise ValueError(f"reward_funcs: a {self.trainer} recipe needs at least one reward function")


@dataclass
class Recipe:
    name: str
    path: Path
    raw: dict[str, Any]  # the YAML mapping after CLI overrides, before hardware choices
    explicit_keys: set[str]
    args: RecipeArguments
    model_args: Any  # trl.ModelConfig
    training_args: Any  # the trainer's config dataclass
    hardware: dict[str, Any]
    hardware_choices: dict[str, Any]
    hardware_reasons: dict[str, str]
    # ``model_name_or_path: run:NAME``: the chain of starts, filled by alignkit.train (see alignkit.run_start)
    start_chain: list[dict[str, Any]] = field(default_factory=list)

    @property
    def trainer_class(self):
        return trainer_classes(self.args.trainer)[1]


def recipe_dir() -> Path:
    return Path(str(importlib.resources.files("alignkit.recipes")))


def list_recipes() -> dict[str, Path]:
    return {p.stem: p for p in sorted(recipe_dir().glob("*.yaml"))}


def find_recipe(name_or_path: str) -> Path:
    path = Path(name_or_path).expanduser()
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise AlignkitError(f"recipe file '{name_or_path}' does not exist")
        return path
    recipes = list_recipes()
    if name_or_path not in recipes:
        raise AlignkitError(f"unknown recipe '{name_or_path}'; available: {', '.join(recipes)} (see `alignkit list`)")
    return recipes[name_or_path]


def read_yaml_mapping(path: Path) -> dict[str, Any]:
    try:
        data = yaml12.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise AlignkitError(f"{where}: invalid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(data, dict):
        raise AlignkitError(f"{path}: a recipe must be a YAML mapping of key: value")
    return data


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["learning_rate=1e-4", "lora_r=8"]`` -> typed values (YAML scalars, so lists and booleans work too)."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise AlignkitError(f"override '{item}' is not of the form key=value")
        try:
            out[key.strip()] = yaml12.safe_load(value) if value else ""
        except yaml.YAMLError:
            raise AlignkitError(f"override '{item}': value is not a valid YAML scalar") from None
    return out


def parse_recipe_dict(
    raw: dict[str, Any], source: str, hardware=None, name: str | None = None, runs_root: Path = RUNS_ROOT
) -> Recipe:
    """Validate and split a recipe mapping into dataclasses, without loading any model."""
    from trl import ModelConfig, TrlParser

    from alignkit import hardware as hw_mod

    trainer = raw.get("trainer")
    if trainer not in TRAINERS:
        raise AlignkitError(f"{source}: field 'trainer' must be one of {sorted(TRAINERS)}, got {trainer!r}")
    config_cls = trainer_classes(trainer)[0]
    name = name or Path(source).stem
    hw = hardware or hw_mod.detect()
    explicit = set(raw)
    chosen, reasons = hw_mod.choose_settings(hw, explicit)
    values = {**chosen, **raw}
    values.setdefault("output_dir", str(runs_root / name))
    values.setdefault("report_to", "none")
    values.setdefault("seed", 42)
    if trainer in ("grpo", "ppo"):  # a recipe run skips (and counts) NaN/inf rewards instead of training on them
        values.setdefault("skip_nonfinite_rewards", True)

    parser = TrlParser([RecipeArguments, ModelConfig, config_cls])
    parser.exit_on_error = False  # a bad value raises ArgumentError instead of printing usage and exiting
    unknown = parser.set_defaults_with_config(**values)
    if unknown:
        keys = [k[2:] for k in unknown[::2]]
        raise AlignkitError(f"{source}: unknown key(s) {', '.join(repr(k) for k in keys)} for trainer '{trainer}'")
    try:
        args, model_args, training_args = parser.parse_args_into_dataclasses(args=[])
    except (ValueError, TypeError, argparse.ArgumentError) as exc:
        message = re.sub(r"argument --([\w]+)(/--[\w-]+)?", r"field \1", str(exc))
        raise AlignkitError(f"{source}: {message}") from None
    _check_penalties_given_once(args, training_args, source)
    _check_whole_numbers((args, model_args, training_args), source)
    _check_values(training_args, model_args, trainer, source)
    _check_report_to(training_args, source)
    return Recipe(
        name=name,
        path=Path(source),
        raw=raw,
        explicit_keys=explicit,
        args=args,
        model_args=model_args,
        training_args=training_args,
        hardware=hw.to_dict(),
        hardware_choices=chosen,
        hardware_reasons=reasons,
    )


# A trainer config field that appends a penalty reward itself, and the reward_funcs name of the same penalty.
_PENALTY_FIELDS = {
    "length_penalty_coef": "length_penalty",
    "repetition_penalty_weight": "repetition_penalty",
}


def _check_penalties_given_once(args, training_args, source: str) -> None:
    for key, reward_name in _PENALTY_FIELDS.items():
        if getattr(training_args, key, 0) and reward_name in (args.reward_funcs or []):
            raise AlignkitError(
                f"{source}: field '{key}' and reward_funcs entry '{reward_name}' both add the penalty (it would "
                "count twice); keep one of them"
            )


def _check_whole_numbers(configs, source: str) -> None:
    """An integer field given a non-integer (``max_steps: 2.5``) fails here. The parser converts only string values,
    so a YAML float reached the trainer as is: a run of 2.5 steps, or a float batch size failing in the data loader."""
    for config in configs:
        hints = typing.get_type_hints(type(config))
        for f in dataclasses.fields(config):
            value = getattr(config, f.name)
            if hint_kinds(hints[f.name]) == {int} and value is not None and not is_whole_number(value):
                raise AlignkitError(f"{source}: field '{f.name}' must be a whole number, got {value!r}")


# Values that TRL, transformers or PEFT accept, or reject only after minutes of sampling or with a traceback:
# (which config, field, trainers or None for every one, the bound a finite value must keep, why). An unset (None)
# field is not checked; the LoRA fields only when the recipe trains adapters (use_peft).
_VALUE_RULES = (
    ("training", "learning_rate", None, (">", 0), "0 trains nothing, < 0 climbs the loss"),
    ("training", "weight_decay", None, (">=", 0), "< 0 grows the weights"),
    ("training", "per_device_train_batch_size", None, (">=", 1), "rows per micro-batch"),
    ("training", "gradient_accumulation_steps", None, (">=", 1), "micro-batches per optimizer step"),
    ("training", "max_length", None, (">=", 1), "tokens kept per row"),
    ("training", "max_completion_length", ("grpo", "ppo"), (">=", 1), "tokens sampled per completion"),
    ("training", "beta", ("dpo", "kto", "cpo"), (">", 0), "the preference scale: 0 flattens the loss, < 0 inverts it"),
    ("training", "beta", ("grpo", "ppo"), (">=", 0), "the KL penalty's weight: 0 is off, < 0 rewards drifting"),
    ("training", "temperature", ("grpo", "ppo"), (">", 0), "sampling temperature; it also divides the logits"),
    ("training", "epsilon", ("grpo", "ppo"), (">", 0), "the clip range of the policy ratio"),
    ("training", "epsilon_high", ("grpo", "ppo"), (">", 0), "the upper clip range of the policy ratio"),
    ("model", "lora_r", None, (">=", 1), "the adapters' rank"),
    ("model", "lora_alpha", None, (">", 0), "the adapters' scale is lora_alpha / lora_r"),
)  # fmt: skip


def _check_values(training_args, model_args, trainer: str, source: str) -> None:
    """A value outside its field's range (:data:`_VALUE_RULES`) fails here, in one line, before any model loads."""
    configs = {"training": training_args, "model": model_args if getattr(model_args, "use_peft", False) else None}
    for which, name, trainers, (op, bound), why in _VALUE_RULES:
        config = configs[which]
        if config is None or (trainers is not None and trainer not in trainers):
            continue
        value = getattr(config, name, None)
        if value is None:
            continue
        if not (math.isfinite(value) and (value > bound if op == ">" else value >= bound)):
            raise AlignkitError(
                f"{source}: field '{name}' must be a finite number {op} {bound}, got {value!r} ({why})"
            )


# report_to integration -> (modules that provide it, what to install)
_REPORTERS = {
    "tensorboard": (("tensorboard", "tensorboardX"), "pip install 'alignkit[tensorboard]'"),
    "wandb": (("wandb",), "pip install wandb"),
    "trackio": (("trackio",), "pip install trackio"),
}


def _check_report_to(training_args, source: str) -> None:
    """A logger the recipe names but that is not installed fails here, in one line, before any model loads."""
    import importlib.util

    for name in training_args.report_to or []:
        modules, install = _REPORTERS.get(name, ((), ""))
        if modules and not any(importlib.util.find_spec(m) for m in modules):
            raise AlignkitError(f"{source}: field 'report_to': '{name}' is not installed ({install})")


def load_recipe(name_or_path: str, overrides: list[str] | None = None, **kwargs) -> Recipe:
    path = find_recipe(name_or_path)
    raw = {**read_yaml_mapping(path), **parse_overrides(overrides or [])}
    return parse_recipe_dict(raw, str(path), name=path.stem, **kwargs)


def recipe_hardware(path: Path) -> str:
    """The short hardware line of a recipe's header (``# Hardware:  1 GPU with >= 12 GB (...)`` -> ``1 GPU with >= 12
    GB``): up to the first ``;`` or parenthesis; ``""`` when the header has none."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        text = line.lstrip("#").strip()
        if text.startswith("Hardware:"):
            return re.split(r";| \(", text[len("Hardware:") :].strip(), maxsplit=1)[0].strip()
    return ""


def recipe_command(recipe: Recipe) -> str:
    """The ``alignkit train`` command line that reproduces ``recipe``: its name (or file path) plus, as ``key=value``
    overrides, every key whose value differs from the recipe file's (a model card quotes it)."""
    import json
    import shlex

    try:
        on_file = read_yaml_mapping(recipe.path)
    except AlignkitError:
        on_file = {}
    target = recipe.name if list_recipes().get(recipe.name) == recipe.path else str(recipe.path)
    words = ["alignkit", "train", target]
    for key, value in recipe.raw.items():
        if key not in on_file or on_file[key] != value:
            words.append(f"{key}={value if isinstance(value, str) else json.dumps(value)}")
    return shlex.join(words)


def recipe_description(path: Path) -> str:
    try:
        return str(read_yaml_mapping(path).get("description", "")).strip()
    except AlignkitError as exc:
        return f"(invalid: {exc})"
