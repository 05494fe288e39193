"""Tiny cards and recipes for `alignkit train` tests of the catalog (run starts, KTO, SimPO, PPO on chat).

:func:`use_recipe_dir` points alignkit's recipe lookup at a temporary folder, so ``run:NAME`` resolves to a tiny
recipe ``NAME.yaml`` there, the way it resolves to ``recipes/NAME.yaml`` for users.
"""

from __future__ import annotations

import json
from pathlib import Path

PAIRS = [
    {
        "prompt": [{"role": "user", "content": f"Say something about the number {i}."}],
        "chosen": [{"role": "assistant", "content": f"The number {i} is a fine number."}],
        "rejected": [{"role": "assistant", "content": "no no no no no"}],
    }
    for i in range(8)
]
# a LoRA on two projections, CPU fp32, no checkpointing, nothing saved but the final weights
TINY_KEYS = (
    "use_peft: true\nlora_r: 4\nlora_alpha: 8\nlora_target_modules: [q_proj, v_proj]\nmax_length: 64\n"
    "per_device_train_batch_size: 2\ngradient_accumulation_steps: 1\nlogging_steps: 1\nsave_strategy: 'no'\n"
    "bf16: false\nuse_cpu: true\ngradient_checkpointing: false\neval_suite: null\nlearning_rate: 0.01\n"
)


def _card(path: Path, name: str, fmt: str, columns: str, rows: list[dict]) -> Path:
    for split in ("train", "test"):
        (path.parent / f"{name}-{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path.write_text(
        f"name: {name}\ndescription: test rows\nsource: {{file: '{name}-{{split}}.jsonl'}}\n"
        f"format: {{type: {fmt}, conversational: true}}\ncolumns: {columns}\nsplits: {{train: train, test: test}}\n"
        "license: test\nsize: a few rows\nrebuild: written by the test\n"
    )
    return path


def pair_card(folder: Path) -> Path:
    columns = "{prompt: prompt, chosen: chosen, rejected: rejected}"
    return _card(folder / "tiny-pairs.yaml", "tiny-pairs", "preference", columns, PAIRS)


def sft_card(folder: Path) -> Path:
    rows = [{"messages": p["prompt"] + p["chosen"]} for p in PAIRS]
    return _card(folder / "tiny-sft.yaml", "tiny-sft", "language_modeling", "{messages: messages}", rows)


def prompt_card(folder: Path) -> Path:
    rows = [{"prompt": p["prompt"]} for p in PAIRS]
    return _card(folder / "tiny-prompts.yaml", "tiny-prompts", "prompt_only", "{prompt: prompt}", rows)


def write_recipe(
    folder: Path, name: str, trainer: str, model: str, dataset: Path, extra: str = "", steps: int = 1
) -> Path:
    """``NAME.yaml``: ``steps`` steps of ``trainer`` from ``model`` on ``dataset`` (``extra``: more YAML lines)."""
    path = folder / f"{name}.yaml"
    head = f"description: {name}, a test recipe\ntrainer: {trainer}\nmodel_name_or_path: {model}\n"
    path.write_text(f"{head}dataset: {dataset}\nmax_steps: {steps}\n{extra}{TINY_KEYS}")
    return path


def use_recipe_dir(monkeypatch, folder: Path) -> None:
    import alignkit.recipe

    monkeypatch.setattr(alignkit.recipe, "recipe_dir", lambda: folder)
