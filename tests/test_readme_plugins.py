"""The README's plugin examples ("Plugins in your own TRL script") run as written on the tiny model.

Each ```python block of that section is executed verbatim. The test supplies what the README leaves to the reader
(``model``, ``ds``, ``lora``) and, through the config classes, only defaults the block does not set: the CPU settings
and a one-step run of tiny batches (any field the block sets wins). Then the block's trainer trains one step.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
SECTION = "## Plugins in your own TRL script"

RUN = dict(
    bf16=False, use_cpu=True, gradient_checkpointing=False, report_to="none", seed=0,
    max_steps=1, per_device_train_batch_size=2, logging_steps=1, save_strategy="no",
)  # fmt: skip
TINY = {
    "SFT": dict(max_length=64),
    "Reward": dict(max_length=64),
    "DPO": dict(max_length=64, policy_sample_max_new_tokens=4),
    "GRPO": dict(num_generations=2, max_completion_length=8),
    "PPO": dict(steps_per_generation=1, num_iterations=1, max_completion_length=6),
}


def readme_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index(SECTION) : text.index("\n## ", text.index(SECTION) + len(SECTION))]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def _method(block: str) -> str:
    return re.search(r"from alignkit\.plugins import (\w+)Config, \1Trainer", block).group(1)


def _dataset(method: str):
    from datasets import Dataset

    if method in ("DPO", "Reward"):
        rows = [
            {
                "prompt": [{"role": "user", "content": f"Question {i}?"}],
                "chosen": [{"role": "assistant", "content": "A fine answer. " * (2 + i)}],
                "rejected": [{"role": "assistant", "content": "No no no."}],
            }
            for i in range(4)
        ]
    elif method == "SFT":
        rows = [
            {"messages": [{"role": "user", "content": f"Say {i}."}, {"role": "assistant", "content": f"{i} {i} {i}"}]}
            for i in range(4)
        ]
    else:  # GRPO, PPO: prompts with a reference answer for MathAnswer
        rows = [{"prompt": [{"role": "user", "content": f"{i} + {i} = ?"}], "answer": str(2 * i)} for i in range(4)]
    return Dataset.from_list(rows)


def test_readme_has_one_block_per_trainer():
    assert sorted(_method(b) for b in readme_blocks()) == ["DPO", "GRPO", "PPO", "Reward", "SFT"]


@pytest.mark.parametrize("block", readme_blocks(), ids=_method)
def test_readme_plugin_block_runs_as_written(block, tiny_model, tmp_path, monkeypatch):
    from peft import LoraConfig

    import alignkit.plugins as plugins

    method = _method(block)
    config_cls = getattr(plugins, f"{method}Config")

    def config_with_test_defaults(**fields):
        return config_cls(**{**RUN, **TINY[method], **fields})

    monkeypatch.setattr(plugins, f"{method}Config", config_with_test_defaults)
    monkeypatch.chdir(tmp_path)  # the blocks write to output_dir="out"
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    namespace = {"model": tiny_model, "ds": _dataset(method), "lora": lora}
    exec(compile(block, f"README.md ({method} block)", "exec"), namespace)

    trainer = namespace["trainer"]
    assert type(trainer) is getattr(plugins, f"{method}Trainer")
    assert isinstance(trainer.args, config_cls)
    trainer.train()
    assert trainer.state.global_step == 1
    assert trainer.state.log_history and "loss" in trainer.state.log_history[0]


def test_readme_maths_modules_import_without_transformers():
    """The README promises the maths without transformers: the public modules and the shared config mixins."""
    import subprocess
    import sys

    modules = ["kl", "advantages", "penalties", "graders", "common.kl_fields", "common.penalty_fields"]
    code = (
        "import sys\n"
        + "".join(f"import alignkit.plugins.{m}\n" for m in modules)
        + "print('trl' in sys.modules or 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"
