"""`alignkit train` end to end on the tiny model: run layout, no silent overwrite, clean one-line errors."""

import json
import subprocess
import sys

import pytest

from alignkit.cli import main
from alignkit.hardware import detect

PAIRS = [
    {
        "prompt": [{"role": "user", "content": f"Say something about the number {i}."}],
        "chosen": [{"role": "assistant", "content": f"The number {i} is a fine number."}],
        "rejected": [{"role": "assistant", "content": "no no no no no"}],
    }
    for i in range(12)
]


@pytest.fixture()
def pair_card(tmp_path):
    for split, rows in (("train", PAIRS[:8]), ("test", PAIRS[8:])):
        (tmp_path / f"pairs-{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    card = tmp_path / "tiny-pairs.yaml"
    card.write_text(
        "name: tiny-pairs\ndescription: test pairs\nsource: {file: 'pairs-{split}.jsonl'}\n"
        "format: {type: preference, conversational: true}\n"
        "columns: {prompt: prompt, chosen: chosen, rejected: rejected}\nsplits: {train: train, test: test}\n"
        "license: test\nsize: 12 rows\nrebuild: written by the test\n"
    )
    return card


def _train_args(tiny_model, pair_card, out):
    return [
        "train",
        "dpo-smol",
        f"model_name_or_path={tiny_model}",
        f"dataset={pair_card}",
        f"output_dir={out}",
        "max_steps=2",
        "per_device_train_batch_size=2",
        "gradient_accumulation_steps=1",
        "max_length=64",
        "save_steps=1",
        "logging_steps=1",
        "--no-eval",
    ]


def test_train_writes_a_complete_run_and_refuses_silent_overwrite(tiny_model, pair_card, tmp_path, capsys):
    out = tmp_path / "runs" / "dpo-tiny"
    assert main(_train_args(tiny_model, pair_card, out)) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["trainer"] == "dpo" and run["global_step"] == 2
    # chosen from the hardware, recorded: bf16 autocast exactly where the CPU has native bf16
    assert run["hardware_choices"]["bf16"] is detect().cpu_bf16
    assert run["hardware_choices"]["dtype"] == "float32"
    assert (out / "adapter" / "adapter_config.json").exists()
    assert (out / "config.yaml").exists() and (out / "resolved_config.json").exists()
    logs = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert any("loss" in entry for entry in logs)
    assert not (tmp_path / "runs" / "dpo-tiny.partial").exists()
    capsys.readouterr()

    # a finished run is not overwritten silently: exit 2, one line, run untouched
    before = (out / "run.json").read_text()
    assert main(_train_args(tiny_model, pair_card, out)) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "OVERWRITE=1" in err
    assert (out / "run.json").read_text() == before

    # RESUME=1 continues from the last checkpoint to a larger max_steps
    args = _train_args(tiny_model, pair_card, out)
    args[args.index("max_steps=2")] = "max_steps=3"
    assert main(args + ["--resume"]) == 0
    assert json.loads((out / "run.json").read_text())["global_step"] == 3


def test_missing_column_is_one_line_and_writes_nothing(tiny_model, tmp_path):
    (tmp_path / "bad-train.jsonl").write_text(json.dumps({"prompt": "p", "chosen": "c"}) + "\n")
    (tmp_path / "bad-test.jsonl").write_text(json.dumps({"prompt": "p", "chosen": "c"}) + "\n")
    card = tmp_path / "bad.yaml"
    card.write_text(
        "name: bad\ndescription: d\nsource: {file: 'bad-{split}.jsonl'}\nformat: {type: preference, "
        "conversational: false}\ncolumns: {prompt: prompt, chosen: chosen, rejected: rejected}\n"
        "splits: {train: train, test: test}\nlicense: x\nsize: x\nrebuild: x\n"
    )
    out = tmp_path / "runs" / "bad"
    result = subprocess.run(
        [sys.executable, "-m", "alignkit", *_train_args(tiny_model, card, out)], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "rejected" in result.stderr and "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if line.startswith("alignkit: error")]) == 1
    assert not out.exists() and not (tmp_path / "runs" / "bad.partial").exists()


def test_offline_hub_model_exits_2_with_one_line_naming_model_and_twin():
    result = subprocess.run(
        [sys.executable, "-m", "alignkit", "train", "dpo-qwen"],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [lines[-1]] and "Qwen/Qwen2.5-0.5B-Instruct" in lines[-1] and "dpo-smol" in lines[-1], lines


def test_list_shows_every_recipe(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "dpo-smol" in out and "DPO" in out


def test_overrides_after_options_are_still_overrides(capsys):
    # `train R --no-eval key=value` must treat key=value as an override (here an unknown key: one line, exit 2)
    assert main(["train", "dpo-smol", "--no-eval", "max_stepz=3"]) == 2
    err = capsys.readouterr().err
    assert "max_stepz" in err and "unrecognized arguments" not in err
    with pytest.raises(SystemExit) as exc:  # a stray option is still an argparse error
        main(["train", "dpo-smol", "--no-eval", "--bogus"])
    assert exc.value.code == 2 and "unrecognized arguments: --bogus" in capsys.readouterr().err
