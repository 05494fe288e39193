"""Checks ``alignkit train`` runs before it creates a run directory or loads a model.

Each raises a one-line :class:`~alignkit.errors.AlignkitError` naming the recipe field and what to do, so bad input
costs neither a model load nor a half-written run:

- :func:`check_hardware`: precision or quantization the recipe forces but this machine cannot run;
- :func:`check_model_dir`: a local model directory must hold weights;
- :func:`check_data_fits_trainer`: the dataset card's format must be one the trainer reads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alignkit.errors import AlignkitError

# The dataset formats (alignkit.data.cards.FORMATS) each trainer reads, as TRL 1.16's trainers do.
TRAINER_FORMATS = {
    "sft": ("language_modeling", "prompt_completion"),
    "reward": ("preference",),
    "dpo": ("preference",),
    "cpo": ("preference",),
    "kto": ("unpaired_preference", "preference"),  # TRL's KTOTrainer also unpairs a preference set itself
    "grpo": ("prompt_only", "prompt_completion"),
    "ppo": ("prompt_only", "prompt_completion"),
}
WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json", "*.gguf")


def check_hardware(recipe: Any) -> None:
    """Precision keys the recipe sets explicitly, and 4-bit loading, against what this machine can run."""
    from alignkit import hardware

    hw, args, where = recipe.hardware, recipe.training_args, recipe.path
    explicit = recipe.explicit_keys
    if hw["device"] == "cpu":
        if "bf16" in explicit and args.bf16 and not hw["cpu_bf16"]:
            raise AlignkitError(
                f"{where}: field 'bf16' is true, but this CPU lacks avx512_bf16/AMX, so bf16 would be emulated "
                "(~24x slower than fp32); drop the key (alignkit then picks fp32 here) or set bf16: false"
            )
        if "fp16" in explicit and args.fp16:
            raise AlignkitError(f"{where}: field 'fp16' needs a CUDA GPU; drop the key or set fp16: false on a CPU")
    if recipe.model_args.load_in_4bit or recipe.model_args.load_in_8bit:
        key = "load_in_4bit" if recipe.model_args.load_in_4bit else "load_in_8bit"
        problem = hardware.four_bit_problem()
        if problem:
            raise AlignkitError(
                f"{where}: field '{key}' needs bitsandbytes, which cannot run here ({problem}); "
                f"set {key}: false for plain LoRA, or `pip install bitsandbytes`"
            )


def check_model_dir(path: str | Path) -> None:
    """A local model directory needs ``config.json`` and weight files."""
    path = Path(path)
    if not path.is_dir():
        return
    if not (path / "config.json").is_file():
        raise AlignkitError(f"model directory '{path}' has no config.json; give a Hugging Face checkpoint directory")
    if not any(next(path.glob(pattern), None) for pattern in WEIGHT_PATTERNS):
        raise AlignkitError(
            f"model directory '{path}' has no weights (*.safetensors or *.bin); save the model there with "
            "save_pretrained, or point model_name_or_path at the checkpoint"
        )
    if not next(path.glob("*.safetensors"), None) and not next(path.glob("*.gguf"), None):
        raise AlignkitError(
            f"model directory '{path}' has only pickled *.bin weights, and alignkit loads safetensors only (a pickle "
            "can run code); convert it with save_pretrained(dir, safe_serialization=True)"
        )


def check_data_fits_trainer(recipe: Any, card: Any) -> None:
    """The card's format must be one the recipe's trainer reads (a preference set given to SFT fails here)."""
    trainer = recipe.args.trainer
    allowed = TRAINER_FORMATS[trainer]
    if card.format not in allowed:
        raise AlignkitError(
            f"{recipe.path}: dataset card '{card.name}' is {card.format} data, but trainer '{trainer}' reads "
            f"{' or '.join(allowed)}; pick a card of that format (see datasets_cards/)"
        )


def model_architectures(path: str | Path) -> list[str]:
    """``architectures`` of a local checkpoint's config.json (empty when unknown)."""
    config = Path(path) / "config.json"
    try:
        return list(json.loads(config.read_text()).get("architectures") or [])
    except (OSError, ValueError):
        return []


def check_rows(recipe: Any, card: Any, train_ds: Any, tokenizer: Any) -> None:
    """The train split must have rows, and conversational data needs a tokenizer with a chat template."""
    if len(train_ds) == 0:
        raise AlignkitError(
            f"card '{card.name}' ({card.where}): the train split has no rows (after its filters and "
            "max_train_samples); add rows or pick another card"
        )
    if card.conversational and not getattr(tokenizer, "chat_template", None):
        raise AlignkitError(
            f"model '{recipe.model_args.model_name_or_path}': its tokenizer has no chat template, which the "
            f"conversational card '{card.name}' needs; use an instruct model's tokenizer or set a chat_template"
        )


def check_prompts_fit(recipe: Any, card: Any, train_ds: Any, tokenizer: Any) -> None:
    """Fail before any model load when every train prompt alone fills ``max_length`` (TRL would drop every row as
    fully truncated); rows with an explicit ``prompt`` column only."""
    max_length = getattr(recipe.training_args, "max_length", None)
    if (
        not max_length
        or "prompt" not in train_ds.column_names
        or card.format not in ("preference", "prompt_completion")
    ):
        return
    for row in train_ds:
        prompt = row["prompt"]
        if card.conversational:
            ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
            ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        else:
            ids = tokenizer(prompt)["input_ids"]
        if len(ids) < max_length:
            return
    raise AlignkitError(
        f"{recipe.path}: field 'max_length' {max_length} leaves nothing to train on: in all {len(train_ds)} rows of "
        f"card '{card.name}' the prompt alone is that long, so every row would be dropped; raise max_length or "
        "shorten the prompts"
    )


def check_rows_kept(recipe: Any, rows: int, prepared: Any) -> None:
    """TRL drops rows that truncation would leave empty (e.g. a prompt longer than ``max_length``): count them, and
    fail when none is left to train on."""
    import logging

    try:
        kept = len(prepared)
    except TypeError:  # an iterable dataset: nothing to count
        return
    dropped = rows - kept
    max_length = getattr(recipe.training_args, "max_length", None)
    if kept == 0:
        raise AlignkitError(
            f"{recipe.path}: field 'max_length' {max_length} leaves nothing to train on: all {rows} rows were "
            "dropped as too long after truncation; raise max_length or shorten the prompts"
        )
    if dropped > 0:
        logging.getLogger("alignkit").warning(
            "dropped %d of %d train rows that do not fit max_length %s", dropped, rows, max_length
        )
