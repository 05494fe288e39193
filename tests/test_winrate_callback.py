"""WinRateCallback on a stock trl.DPOTrainer with the tiny model: the start is generated once, every N steps the
policy is judged against it, the entries reach the trainer's loggers (every callback's on_log, log_history), and
winrate.png is drawn."""

import pytest
from datasets import Dataset
from plugin_runs import TINY_RUN
from transformers import TrainerCallback

from alignkit.errors import AlignkitError
from alignkit.eval.judges import RewardModelJudge

PROMPTS = [[{"role": "user", "content": f"Tell me about {x}."}] for x in ("cats", "rain", "tea", "maps")]


def pairs():
    return Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": f"Say something about {i}."}],
                "chosen": [{"role": "assistant", "content": f"{i} is a fine number."}],
                "rejected": [{"role": "assistant", "content": "no no no"}],
            }
            for i in range(8)
        ]
    )


class Recorder(TrainerCallback):
    """What a reporting integration (TensorBoard, wandb) sees: every on_log payload, in order."""

    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))


class CountingScorer:
    """A TRL-style reward function that counts its calls: reply length in characters."""

    __name__ = "length"

    def __init__(self):
        self.calls = 0
        self.scored = []  # every (prompt, completion) scored

    def __call__(self, prompts, completions):
        self.calls += 1
        self.scored += [(str(p), c) for p, c in zip(prompts, completions, strict=True)]
        return [float(len(c)) for c in completions]


def test_winrate_callback_on_stock_dpo_trainer(tiny_model, tmp_path):
    import trl

    from alignkit.eval import WinRateCallback
    from alignkit.eval.generation import GenerationConfig

    scorer = CountingScorer()
    recorder = Recorder()
    callback = WinRateCallback(
        PROMPTS, RewardModelJudge(scorer), every_n_steps=2, generation=GenerationConfig(max_new_tokens=8)
    )
    args = trl.DPOConfig(output_dir=str(tmp_path), **{**TINY_RUN, "max_steps": 3})
    trainer = trl.DPOTrainer(model=tiny_model, args=args, train_dataset=pairs(), callbacks=[recorder, callback])
    trainer.train()

    # measured at step 2 and at the last step (3); the start's replies were generated once, not per call
    assert [h["step"] for h in callback.history] == [2, 3]
    # a reward-model judge's scores are memoized: no (prompt, reply) is scored twice, so the start's replies once
    assert scorer.calls >= 2 and len(scorer.scored) == len(set(scorer.scored))
    assert {(str(p), r) for p, r in zip(PROMPTS, callback.start, strict=True)} <= set(scorer.scored)
    assert callback.trainer is trainer  # found on the call stack, so the entries went through trainer.log
    logged = [entry for entry in recorder.logs if "winrate/win_rate" in entry]
    assert len(logged) == 2
    for entry in logged:
        assert 0.0 <= entry["winrate/ci_low"] <= entry["winrate/win_rate"] <= entry["winrate/ci_high"] <= 1.0
        assert {"winrate/lc_win_rate", "winrate/length", "winrate/start_length", "winrate/distinct_2"} <= set(entry)
    history = [e for e in trainer.state.log_history if "winrate/win_rate" in e]
    assert [e["step"] for e in history] == [2, 3]
    # the regular log entry of every step is still written (logging_steps=1), with TRL's running metrics in it (our
    # entries bypass TRL's log, which would clear them, and leave the step's should_log flag as they found it)
    regular = [e for e in trainer.state.log_history if "loss" in e]
    assert [e["step"] for e in regular] == [1, 2, 3] and all("rewards/margins" in e for e in regular)
    assert (tmp_path / "winrate.png").stat().st_size > 1000


def test_bad_arguments_are_one_line_errors():
    from alignkit.eval import WinRateCallback

    judge = RewardModelJudge(CountingScorer())
    with pytest.raises(AlignkitError, match="every_n_steps"):
        WinRateCallback(PROMPTS, judge, every_n_steps=0)
    with pytest.raises(AlignkitError, match="prompts"):
        WinRateCallback([], judge)
    with pytest.raises(AlignkitError, match="judge"):
        WinRateCallback(PROMPTS, object())
    with pytest.raises(AlignkitError, match="references: has 1 rows"):
        WinRateCallback(PROMPTS, judge, references=["x"])


def test_recipe_key_turns_it_on(tiny_model, tmp_path):
    """`winrate_steps` in a recipe: the callback is built from the eval suite (its first prompt set and its judge,
    here the grader of a graded set) and its entries land in train_log.jsonl, with winrate.png in the run; the
    monitor, on by default, logs there too."""
    import json

    from alignkit.cli import main

    rows = [{"prompt": [{"role": "user", "content": f"What is {i} + 1?"}], "answer": str(i + 1)} for i in range(3)]
    (tmp_path / "arith.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        f"name: tiny\nprompt_sets:\n  - {{name: arith, card: '{tmp_path / 'arith.jsonl'}', grader: math_answer}}\n"
        "metrics:\n  win_rate: {judges: [grader]}\n"
    )
    pairs().to_json(tmp_path / "pairs.jsonl")
    card = tmp_path / "pairs.yaml"
    card.write_text(
        "name: tiny-pairs\ndescription: d\nsource: {file: 'pairs.jsonl'}\nformat: {type: preference, "
        "conversational: true}\ncolumns: {prompt: prompt, chosen: chosen, rejected: rejected}\n"
        "splits: {train: train, test: train}\nlicense: test\nsize: 8 rows\nrebuild: test\n"
    )
    out = tmp_path / "runs" / "dpo-wr"
    args = ["train", "dpo-smol", f"model_name_or_path={tiny_model}", f"dataset={card}", f"output_dir={out}",
            f"eval_suite={suite}", "winrate_steps=1", "winrate_max_new_tokens=4", "max_steps=2", "logging_steps=1",
            "per_device_train_batch_size=2", "max_length=64", "save_steps=10", "--no-eval"]  # fmt: skip
    assert main(args) == 0
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "winrate/win_rate" in e] == [1, 2]
    assert (out / "winrate.png").is_file()
    # the reward-hacking monitor is on by default in recipes: its entries (DPO: entropy, the implicit reward margin,
    # β) reach train_log.jsonl, and training.png is drawn
    monitor = [e for e in log if "monitor/entropy" in e]
    assert monitor and all("monitor/reward" in e for e in monitor)
    assert (out / "training.png").is_file()


def test_readme_block_runs_as_written(tiny_model, tmp_path):
    """The README's three-line example on a stock trl.DPOTrainer runs as written (one step: measured at the end)."""
    import re
    from pathlib import Path

    import trl

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## Watch training, share the result") :]
    block = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
    assert block.count("\n") <= 4  # two imports and the trainer call (the call wraps onto a second line)
    namespace = {
        "trl": trl,
        "model": tiny_model,
        "args": trl.DPOConfig(output_dir=str(tmp_path), **{**TINY_RUN, "max_steps": 1}),
        "ds": pairs(),
        "prompts": PROMPTS[:2],
        "scorer": CountingScorer(),
    }
    exec(block, namespace)
    namespace["trainer"].train()
    assert [e["step"] for e in namespace["trainer"].state.log_history if "winrate/win_rate" in e] == [1]
    assert (tmp_path / "winrate.png").is_file()
