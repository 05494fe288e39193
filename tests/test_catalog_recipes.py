"""The catalog's KTO and SimPO recipes: 2 steps each on the tiny model through `alignkit train`, the unpaired rows
KTO trains on, and SimPO's loss against its formula on hand-computed log-probs."""

import json
import math
import shutil
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from tiny_recipes import pair_card, prompt_card

from alignkit.cli import main
from alignkit.data.cards import load_card
from alignkit.data.unpaired import unpair_rows
from alignkit.errors import AlignkitError
from alignkit.hardware import Hardware
from alignkit.recipe import list_recipes, load_recipe
from alignkit.train import reward_funcs_for, reward_model_needs

CPU = Hardware(device="cpu", cpu_count=2, cpu_bf16=False)
TINY = ["max_steps=2", "max_length=64", "logging_steps=1", "save_strategy=no", "warmup_steps=0", "learning_rate=0.01"]
TINY += ["bf16=false", "use_cpu=true", "max_train_samples=8"]


def _lora_b_moved(run_dir) -> bool:
    weights = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))
    return any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k)  # B starts at zero


def _logs(run_dir) -> list[dict]:
    """The trainer's own log entries (the reward-hacking monitor's monitor/* entries sit between them)."""
    entries = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    return [e for e in entries if not all(k.startswith("monitor/") or k in ("step", "epoch") for k in e)]


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


def _finished_run(run_dir, model_dir, trainer, base):
    """A finished run whose weights are a full model directory (what `alignkit train` leaves without LoRA)."""
    shutil.copytree(model_dir, run_dir / "model")
    meta = {"status": "finished", "trainer": trainer, "recipe": run_dir.name, "model_dir": "model", "base_model": base}
    (run_dir / "run.json").write_text(json.dumps(meta))


def test_ppo_smol_chat_starts_from_sft_and_is_rewarded_by_the_rm_run(tiny_model, tiny_rm, tmp_path, capsys):
    recipe = load_recipe("ppo-smol-chat")
    assert [(n.name, n.trainer) for n in reward_model_needs(recipe)] == [("rm-smol", "reward")]  # trained if missing
    runs = tmp_path / "runs"
    _finished_run(runs / "sft-smol", tiny_model, "sft", tiny_model)
    _finished_run(runs / "rm-smol", tiny_rm, "reward", tiny_rm)
    out = runs / "ppo-smol-chat"
    args = ["train", "ppo-smol-chat", f"dataset={prompt_card(tmp_path)}", f"output_dir={out}", "max_steps=2"]
    args += [
        "per_device_train_batch_size=2",
        "steps_per_generation=1",
        "max_completion_length=8",
        "learning_rate=0.01",
    ]
    assert main([*args, "bf16=false", "use_cpu=true", "save_strategy=no", "--no-eval"]) == 0
    assert "starts from ppo-smol-chat <- run:sft-smol" in capsys.readouterr().out
    run = json.loads((out / "run.json").read_text())
    assert run["global_step"] == 2 and run["base_model"] == str(runs / "sft-smol" / "model")
    logs = _logs(out)
    assert all("rewards/rm_score[rm-smol]/mean" in e and "kl_coef" in e for e in logs[:2])
    assert _lora_b_moved(out)


@pytest.mark.parametrize("name", sorted(list_recipes()))
def test_every_recipe_names_a_card_its_trainer_reads(name):
    recipe = load_recipe(name, hardware=CPU)
    from alignkit.preflight import TRAINER_FORMATS

    assert load_card(recipe.args.dataset).format in TRAINER_FORMATS[recipe.args.trainer], name


def test_qwen_catalog_recipes_validate(tmp_path):
    from alignkit.plugins.graders import MathAnswer
    from alignkit.run_start import start_needs

    for name in ("rm-qwen", "grpo-qwen", "kto-qwen", "simpo-qwen", "ppo-qwen-chat"):
        margs = load_recipe(name, hardware=CPU).model_args
        assert margs.load_in_4bit and margs.bnb_4bit_quant_type == "nf4" and margs.use_peft, name
    ppo = load_recipe("ppo-qwen-chat", hardware=CPU)
    assert [(n.name, n.trainer) for n in start_needs(ppo, tmp_path)] == [("sft-qwen", None)]
    assert [(n.name, n.trainer) for n in reward_model_needs(ppo)] == [("rm-qwen", "reward")]
    assert load_recipe("rm-qwen", hardware=CPU).model_args.lora_modules_to_save == ["score"]
    grpo = load_recipe("grpo-qwen", hardware=CPU)
    assert [type(f) for f in reward_funcs_for(grpo)] == [MathAnswer] and "answer" in load_card(
        "gsm8k"
    ).columns.values()
    simpo = load_recipe("simpo-qwen", hardware=CPU).training_args
    assert (simpo.loss_type, simpo.cpo_alpha) == ("simpo", 0.0)


def test_an_unknown_reward_is_one_line(tmp_path):
    recipe = load_recipe("ppo-smol-chat", ["reward_funcs=[run:rm-smol, no_such_reward]"], hardware=CPU)
    recipe.training_args.output_dir = str(tmp_path / "runs" / "x.partial")
    with pytest.raises(AlignkitError, match="reward_funcs: .*not a finished run"):
        reward_funcs_for(recipe)
    recipe.args.reward_funcs = ["no_such_reward"]
    with pytest.raises(AlignkitError, match="unknown reward function 'no_such_reward'"):
        reward_funcs_for(recipe)


def test_list_prints_every_recipe_with_hardware_and_the_readme_table_lists_every_recipe(capsys):
    import re
    from pathlib import Path

    from alignkit.recipe import recipe_description, recipe_hardware

    assert main(["list"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(lines) == set(list_recipes())
    for name, path in list_recipes().items():
        hardware = recipe_hardware(path)
        assert ("GPU" in hardware or "CPU" in hardware) and hardware in lines[name], name  # from the header
        assert lines[name].rstrip().endswith(recipe_description(path)), name
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    table = readme[readme.index("| recipe | what |") :].split("\n\n", 1)[0]
    listed = {name for row in table.splitlines()[2:] for name in re.findall(r"`([\w-]+)`", row.split("|")[1])}
    assert listed == set(list_recipes())
