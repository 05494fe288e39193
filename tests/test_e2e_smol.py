"""End to end on the embedded SmolLM2-135M: build a few real pairs, train dpo-smol a few steps, evaluate, report.

Slow (a few minutes on 2 cores) but run in CI: it is the one test that exercises the real model, the real data
recovery, the pair builder, the trainer and the eval harness together, exactly as `make` does.
"""

import json
import os
from pathlib import Path

import pytest
import yaml

from alignkit.cli import main
from alignkit.data.cards import load_card

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def own_dataset_cache(tmp_path, monkeypatch):
    """What this test builds (pair sets, recovered data) goes to a temporary cache, not the user's; models/ links to
    the real cache's, because the materialized embedded model is a product of setup (alignkit/cache.py keeps the
    two apart), and converting the GGUF again would only cost time."""
    real = Path(os.environ.get("ALIGNKIT_CACHE", Path.home() / ".cache" / "alignkit"))
    (real / "models").mkdir(parents=True, exist_ok=True)
    cache = tmp_path / "alignkit-cache"
    cache.mkdir()
    (cache / "models").symlink_to(real / "models", target_is_directory=True)
    monkeypatch.setenv("ALIGNKIT_CACHE", str(cache))
    before = sorted((real / "datasets").glob("*/*/manifest.json"))
    yield cache
    assert sorted((real / "datasets").glob("*/*/manifest.json")) == before  # nothing built in the user's cache


@pytest.fixture()
def small_pairs_card(tmp_path):
    """The shipped sharegpt-pairs-smol card with a smaller build (8 train / 6 test prompts, short replies)."""
    card = yaml.safe_load(load_card("sharegpt-pairs-smol").path.read_text())
    card["name"] = "sharegpt-pairs-e2e"
    card["source"]["args"].update(n_train=8, n_test=6, max_new_tokens=24, batch_size=8)
    path = tmp_path / "sharegpt-pairs-e2e.yaml"
    path.write_text(yaml.safe_dump(card))
    return path


@pytest.fixture()
def small_suite(tmp_path, small_pairs_card):
    suite = {
        "name": "e2e",
        "description": "tiny smol suite for the end-to-end test",
        "prompt_sets": [
            {"name": "chat", "card": "sharegpt-sft-smol", "split": "test", "max_prompts": 4},
            {"name": "arith", "card": "arith-smol", "split": "test", "max_prompts": 4, "grader": "math_answer"},
        ],
        "generation": {"max_new_tokens": 16, "do_sample": False, "batch_size": 4},
        "metrics": {
            "perplexity": {
                "heldout": {"card": "sharegpt-sft-smol", "split": "test", "max_samples": 4},
                "reference_model": "base",
                "batch_size": 4,
            },
            "diversity": {},
            "preference": {"card": str(small_pairs_card), "split": "test", "max_pairs": 4, "batch_size": 4},
            "win_rate": {"judges": ["grader"]},
        },
        "samples": 2,
    }
    path = tmp_path / "e2e-suite.yaml"
    path.write_text(yaml.safe_dump(suite))
    return path


def test_dpo_smol_trains_and_evaluates_on_the_embedded_model(
    tmp_path, small_pairs_card, small_suite, capsys, own_dataset_cache
):
    out = tmp_path / "runs" / "dpo-smol"
    code = main(
        [
            "train",
            "dpo-smol",
            f"dataset={small_pairs_card}",
            f"eval_suite={small_suite}",
            f"output_dir={out}",
            "max_steps=3",
            "per_device_train_batch_size=2",
            "gradient_accumulation_steps=1",
            "max_length=192",
            "save_steps=3",
            "logging_steps=1",
        ]
    )
    assert code == 0
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["global_step"] == 3
    assert run["model_name_or_path"] == "smollm2-135m-instruct"
    logs = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert any("loss" in entry for entry in logs)

    metrics = json.loads((out / "metrics.json").read_text())
    report = (out / "report.md").read_text()
    assert "base vs dpo-smol" in report and "Sample generations" in report
    # metrics.json is flat per role: base vs trained, keys joined with '/'
    assert metrics["models"] == {"base": "base", "trained": "dpo-smol"}
    assert any(key.startswith("preference/length_normalized/") for key in metrics["base"]), sorted(metrics["base"])
    assert any(key.startswith("preference/implicit_reward/") for key in metrics["trained"]), sorted(metrics["trained"])
    assert any(key.startswith("arith/grader/") for key in metrics["win_rate"]), sorted(metrics["win_rate"])
    printed = capsys.readouterr().out
    assert "report" in printed and str(out) in printed
    assert list((own_dataset_cache / "datasets").glob("*/*/manifest.json"))  # the pair set was built here
