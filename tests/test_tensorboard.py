"""`report_to: tensorboard` in a recipe: the run's event files hold TRL's training metrics and alignkit's additions
(adaptive β, the implicit KL, R-DPO's length statistics, the reward-hacking monitor)."""

import json

import pytest

pytest.importorskip("tensorboard", reason="tensorboard is in the dev extra; `make setup` installs it")


def test_event_files_hold_training_and_alignkit_metrics(tiny_model, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from alignkit.cli import main

    rows = [
        {
            "prompt": [{"role": "user", "content": f"Say something about {i}."}],
            "chosen": [{"role": "assistant", "content": f"{i} is a fine number."}],
            "rejected": [{"role": "assistant", "content": "no no no"}],
        }
        for i in range(8)
    ]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    card = tmp_path / "pairs.yaml"
    card.write_text(
        "name: tiny-pairs\ndescription: d\nsource: {file: 'pairs.jsonl'}\nformat: {type: preference, "
        "conversational: true}\ncolumns: {prompt: prompt, chosen: chosen, rejected: rejected}\n"
        "splits: {train: train, test: train}\nlicense: test\nsize: 8 rows\nrebuild: test\n"
    )
    out = tmp_path / "runs" / "dpo-tb"
    args = ["train", "dpo-smol", f"model_name_or_path={tiny_model}", f"dataset={card}", f"output_dir={out}",
            "report_to=tensorboard", "kl_target=0.05", "precompute_ref_log_probs=false", "rdpo_alpha=0.01",
            "max_steps=2", "logging_steps=1",
            "per_device_train_batch_size=2", "max_length=64", "save_steps=10", "--no-eval"]  # fmt: skip
    assert main(args) == 0
    event_files = list(out.glob("runs/*/events.out.tfevents.*"))
    assert event_files, sorted(p.name for p in out.rglob("*"))
    tags = set()
    for f in event_files:
        acc = EventAccumulator(str(f))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    assert {"train/loss", "train/rewards/margins", "train/learning_rate"} <= tags  # TRL's own
    assert {"train/beta", "train/kl_implicit", "train/lengths/chosen"} <= tags  # alignkit's plugins
    assert {"train/monitor/kl", "train/monitor/kl_over_target", "train/monitor/entropy"} <= tags  # the monitor


def test_a_logger_that_is_not_installed_is_a_one_line_error(monkeypatch):
    import importlib.util

    from alignkit.errors import AlignkitError
    from alignkit.recipe import load_recipe

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if "ensorboard" in name else real(name, *a))
    with pytest.raises(
        AlignkitError, match=r"field 'report_to': 'tensorboard' is not installed .*alignkit\[tensorboard\]"
    ):
        load_recipe("dpo-smol", ["report_to=tensorboard"])
