"""A run's model card: valid Hugging Face metadata, the recipe and command, data licences, hyperparameters, hardware,
versions, and the eval table once report.json exists (refreshed, not left stale)."""

import json

import pytest
from huggingface_hub import ModelCard

from alignkit.cli import main
from alignkit.model_card import write_model_card

ROWS = [
    {
        "prompt": [{"role": "user", "content": f"Say something about the number {i}."}],
        "chosen": [{"role": "assistant", "content": f"The number {i} is a fine number."}],
        "rejected": [{"role": "assistant", "content": "no no no no no"}],
    }
    for i in range(8)
]


@pytest.fixture(scope="module")
def tiny_run(tiny_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("card")
    for split in ("train", "test"):
        (root / f"pairs-{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    card = root / "tiny-pairs.yaml"
    card.write_text(
        "name: tiny-pairs\ndescription: test pairs\nsource: {file: 'pairs-{split}.jsonl'}\n"
        "format: {type: preference, conversational: true}\n"
        "columns: {prompt: prompt, chosen: chosen, rejected: rejected}\nsplits: {train: train, test: test}\n"
        "license: CC-BY-4.0 (written by the test)\nsize: 8 rows\nrebuild: written by the test\n"
    )
    out = root / "runs" / "dpo-card"
    args = ["train", "dpo-smol", f"model_name_or_path={tiny_model}", f"dataset={card}", f"output_dir={out}",
            "max_steps=1", "per_device_train_batch_size=2", "max_length=64", "save_steps=1", "--no-eval"]  # fmt: skip
    assert main(args) == 0
    return out


def test_card_after_training_has_valid_metadata_and_the_run_facts(tiny_run):
    card = ModelCard.load(tiny_run / "adapter" / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "peft"
    assert {"trl", "alignkit", "dpo", "lora"} <= set(data["tags"])
    assert data["model_name"] == "dpo-card"
    assert "base_model" not in data or data["base_model"] is None  # a local tiny model has no hub id to link
    text = card.text
    assert "alignkit train dpo-smol model_name_or_path=" in text and "max_steps=1" in text  # the command
    assert "CC-BY-4.0 (written by the test)" in text  # the data card's licence
    assert "| learning_rate | 0.0002 |" in text  # a recipe key, from the file, not overridden
    assert "| max_steps | 1 |" in text  # an override
    assert "| trl | 1.16" in text and "| cpu_count |" in text  # versions and hardware
    assert "Not evaluated yet" in text
    # TRL's generic card at the run root (named after the .partial staging dir, base model None) is replaced
    root = (tiny_run / "README.md").read_text()
    assert ".partial" not in root and "[None]" not in root and root == (tiny_run / "adapter" / "README.md").read_text()


def test_card_refresh_after_eval_carries_the_report_table(tiny_run):
    report = {
        "suite": {"name": "smol"},
        "created": "2026-12-02",
        "goals": {
            "comparison": "dpo-card vs base",
            "prompt_set": "chat",
            "judge": {"model": "run:rm-judge-smol", "held_out": True},
            "met": 1,
            "of": 1,
            "rows": [{"label": "Win rate vs start", "value": 0.61, "op": ">=", "goal": 0.65, "status": "missed"}],
        },
        "win_rates": {
            "dpo-card vs base": {
                "chat": {
                    "rm": {
                        "raw": {"n": 64, "win_rate": 0.61, "ci_low": 0.5, "ci_high": 0.72},
                        "lc": {"lc_win_rate": 0.58},
                        "judge": {"model": "run:rm-judge-smol"},
                    }
                }
            }
        },
    }
    (tiny_run / "report.json").write_text(json.dumps(report))
    try:
        text = ModelCard.load(write_model_card(tiny_run)).text
    finally:
        (tiny_run / "report.json").unlink()
    assert "Not evaluated yet" not in text
    assert "| dpo-card vs base | chat | run:rm-judge-smol | 0.61 | [0.5, 0.72] | 0.58 | 64 |" in text
    assert "| Win rate vs start | 0.61 | >= 0.65 | missed |" in text


def test_embedded_model_links_its_hub_checkpoint(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "dpo-embedded"
    shutil.copytree(tiny_run, run)
    meta = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**meta, "model_name_or_path": "smollm2-135m-instruct"}))
    data = ModelCard.load(write_model_card(run)).data
    assert data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct"
