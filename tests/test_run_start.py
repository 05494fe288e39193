"""`model_name_or_path: run:NAME`: a recipe starts from a finished run (its adapter merged into its base), which is
also the reference model; a missing start is trained first, once, and says so; an interrupted or broken one is a
one-line error; config.yaml records the chain of starts."""

import json
import math
import shutil
from pathlib import Path

import pytest
import yaml
from tiny_recipes import pair_card, sft_card, use_recipe_dir, write_recipe

from alignkit.cli import main
from alignkit.eval.model_spec import run_specs


@pytest.fixture
def recipes(tmp_path, tiny_model, monkeypatch):
    folder = tmp_path / "recipes"
    folder.mkdir()
    sft, pairs = sft_card(folder), pair_card(folder)
    write_recipe(folder, "sft-tiny", "sft", tiny_model, sft)
    write_recipe(folder, "dpo-tiny", "dpo", "run:sft-tiny", pairs)
    write_recipe(folder, "dpo-again", "dpo", "run:dpo-tiny", pairs)
    write_recipe(folder, "dpo-self", "dpo", "run:dpo-self", pairs)
    use_recipe_dir(monkeypatch, folder)
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    return folder


def _train(name, runs):
    return main(["train", name, f"output_dir={runs / name}", "--no-eval"])


def test_a_missing_start_is_trained_once_merged_and_is_the_reference(recipes, tmp_path, tiny_model, capsys):
    from safetensors.torch import load_file

    runs = tmp_path / "runs"
    assert _train("dpo-tiny", runs) == 0
    out = capsys.readouterr().out
    assert out.count("needs run:sft-tiny, which is missing; training recipe sft-tiny") == 1
    assert "starts from dpo-tiny <- run:sft-tiny" in out

    run = json.loads((runs / "dpo-tiny" / "run.json").read_text())
    config = yaml.safe_load((runs / "dpo-tiny" / "config.yaml").read_text())
    assert [link["run"] for link in config["start_chain"]] == ["sft-tiny"] == [r["run"] for r in run["start_chain"]]
    merged = run["base_model"]
    assert merged == config["start_chain"][0]["merged_into"] and str(tmp_path / "cache") in merged
    # the start is the SFT weights, not the tiny base: its LoRA moved q_proj/v_proj at lr 1e-2
    start_w, base_w = load_file(f"{merged}/model.safetensors"), load_file(f"{tiny_model}/model.safetensors")
    key = "model.layers.0.self_attn.q_proj.weight"
    assert not start_w[key].equal(base_w[key])
    # DPO's first loss is ln 2 exactly when policy and reference are the same model: the merged start
    first = json.loads((runs / "dpo-tiny" / "train_log.jsonl").read_text().splitlines()[0])
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-4)

    # the eval finds the start again when the merged cache is gone: it merges it anew, to the same key
    shutil.rmtree(merged)
    base, _ = run_specs(runs / "dpo-tiny")
    assert base.base == merged and (Path(merged) / "config.json").is_file()

    # the start is reused (not retrained), and a chain of two starts is recorded, nearest first
    assert _train("dpo-again", runs) == 0
    out = capsys.readouterr().out
    assert "training recipe" not in out and "starts from dpo-again <- run:dpo-tiny <- run:sft-tiny" in out
    chain = yaml.safe_load((runs / "dpo-again" / "config.yaml").read_text())["start_chain"]
    assert [link["run"] for link in chain] == ["dpo-tiny", "sft-tiny"]


def test_an_interrupted_unfinished_or_broken_start_is_a_one_line_error(recipes, tmp_path, capsys):
    runs = tmp_path / "runs"
    (runs / "sft-tiny.partial").mkdir(parents=True)
    assert _train("dpo-tiny", runs) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "interrupted" in err and "alignkit train sft-tiny --resume" in err
    (runs / "sft-tiny.partial").rmdir()

    (runs / "sft-tiny").mkdir()
    (runs / "sft-tiny" / "run.json").write_text(json.dumps({"status": "running"}))
    assert _train("dpo-tiny", runs) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "has not finished" in err

    (runs / "sft-tiny" / "run.json").write_text(json.dumps({"status": "finished", "adapter_dir": "adapter"}))
    assert _train("dpo-tiny", runs) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "adapter_dir 'adapter' does not exist" in err

    assert _train("dpo-self", runs) == 2
    assert "cannot start from itself" in capsys.readouterr().err
    assert sorted(p.name for p in runs.iterdir()) == ["sft-tiny"]  # nothing of the failed runs is left behind
