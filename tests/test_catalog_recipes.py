"""The catalog's KTO and SimPO recipes: 2 steps each on the tiny model through `alignkit train`, the unpaired rows
KTO trains on, and SimPO's loss against its formula on hand-computed log-probs."""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from tiny_recipes import pair_card

from alignkit.cli import main
from alignkit.data.unpaired import unpair_rows
from alignkit.errors import AlignkitError

TINY = ["max_steps=2", "max_length=64", "logging_steps=1", "save_strategy=no", "warmup_steps=0", "learning_rate=0.01"]
TINY += ["bf16=false", "use_cpu=true", "max_train_samples=8"]


def _lora_b_moved(run_dir) -> bool:
    weights = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    return any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)  # B starts at zero


def _logs(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


def test_unpaired_rows_from_explicit_and_implicit_prompts():
    user, good, bad = (
        [{"role": "user", "content": "Hi"}],
        {"role": "assistant", "content": "Hello!"},
        {"role": "assistant", "content": "Go."},
    )
    explicit = {"prompt": user, "chosen": [good], "rejected": [bad]}
    implicit = {"chosen": user + [good], "rejected": user + [bad]}
    expected = [
        {"prompt": user, "completion": [good], "label": True},
        {"prompt": user, "completion": [bad], "label": False},
    ]
    assert unpair_rows([explicit], "x") == expected == unpair_rows([implicit], "x")
    with pytest.raises(AlignkitError, match="pair 0 has no 'prompt'"):
        unpair_rows([{"chosen": user + [good], "rejected": [{"role": "user", "content": "Other"}, bad]}], "x")


def test_kto_smol_trains_two_steps_on_unpaired_rows_made_from_pairs(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    pairs = pair_card(tmp_path)
    card = tmp_path / "tiny-kto.yaml"
    card.write_text(
        "name: tiny-kto\ndescription: t\n"
        f"source: {{package: alignkit, builder: 'alignkit.data.unpaired:build_unpaired', args: {{pairs: {pairs}}}}}\n"
        "format: {type: unpaired_preference, conversational: true}\n"
        "columns: {prompt: prompt, completion: completion, label: label}\nsplits: {train: train, test: test}\n"
        "license: t\nsize: t\nrebuild: t\n"
    )
    out = tmp_path / "runs" / "kto"
    args = ["train", "kto-smol", f"model_name_or_path={tiny_model}", f"dataset={card}", f"output_dir={out}"]
    assert main([*args, *TINY, "per_device_train_batch_size=4", "--no-eval"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["trainer"] == "kto" and run["global_step"] == 2 and run["train_samples"] == 8
    logs = _logs(out)
    assert all("kl" in entry and "rewards/margins" in entry for entry in logs[:2])
    assert _lora_b_moved(out)


def test_simpo_smol_trains_two_steps(tiny_model, tmp_path):
    out = tmp_path / "runs" / "simpo"
    args = ["train", "simpo-smol", f"model_name_or_path={tiny_model}", f"dataset={pair_card(tmp_path)}"]
    assert main([*args, f"output_dir={out}", *TINY, "per_device_train_batch_size=2", "--no-eval"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["trainer"] == "cpo" and run["global_step"] == 2
    assert all(entry["nll_loss"] == 0 for entry in _logs(out)[:2])  # cpo_alpha 0: no NLL term, pure SimPO
    assert _lora_b_moved(out)


class _FixedLogits(torch.nn.Module):
    """A 'model' whose every position has logits [ln 3, 0] over a 2-token vocabulary: p(0) = 3/4, p(1) = 1/4."""

    def forward(self, input_ids, attention_mask=None, **kwargs):
        logits = torch.tensor([math.log(3.0), 0.0]).expand(*input_ids.shape, 2)
        return SimpleNamespace(logits=logits)


def test_simpo_loss_is_the_simpo_formula_on_hand_computed_logprobs(tiny_model, tmp_path):
    from alignkit.models import load_tokenizer
    from alignkit.recipe import load_recipe
    from alignkit.train import build_trainer

    overrides = [f"model_name_or_path={tiny_model}", f"dataset={pair_card(tmp_path)}", f"output_dir={tmp_path / 'o'}"]
    recipe = load_recipe("simpo-smol", [*overrides, "bf16=false", "use_cpu=true", "max_train_samples=2"])
    trainer = build_trainer(recipe, tiny_model, load_tokenizer(tiny_model)).trainer
    beta, gamma = recipe.training_args.beta, recipe.training_args.simpo_gamma
    assert (beta, gamma) == (2.0, 1.0)
    # y_w = 2 tokens, both token 0: log pi(y_w|x) = 2 ln(3/4) = -0.57536, |y_w| = 2 -> mean -0.28768
    # y_l = 4 tokens, all token 1:  log pi(y_l|x) = 4 ln(1/4) = -5.54518, |y_l| = 4 -> mean -1.38629
    # z = beta/|y_w| log pi(y_w) - beta/|y_l| log pi(y_l) - gamma = 2(-0.28768) - 2(-1.38629) - 1 = 1.19722
    #   (= 2 ln 3 - 1); L = -log sigmoid(1.19722) = log(1 + e^-1.19722) = log(1.30203) = 0.263926
    # (without length normalization z would be 2(-0.57536) - 2(-5.54518) - 1 = 8.93964, L = 0.00013)
    batch = {
        "chosen_input_ids": torch.tensor([[5, 0, 0]]),
        "chosen_attention_mask": torch.ones(1, 3, dtype=torch.long),
        "chosen_labels": torch.tensor([[-100, 0, 0]]),
        "rejected_input_ids": torch.tensor([[5, 1, 1, 1, 1]]),
        "rejected_attention_mask": torch.ones(1, 5, dtype=torch.long),
        "rejected_labels": torch.tensor([[-100, 1, 1, 1, 1]]),
    }
    loss, metrics = trainer.get_batch_loss_metrics(_FixedLogits(), batch)
    assert metrics["logps/chosen"] == pytest.approx(math.log(0.75), abs=1e-6)
    assert metrics["logps/rejected"] == pytest.approx(math.log(0.25), abs=1e-6)
    z = beta * math.log(0.75) - beta * math.log(0.25) - gamma
    assert z == pytest.approx(1.19722, abs=1e-5)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-z)), abs=1e-6) == pytest.approx(0.263926, abs=1e-6)
