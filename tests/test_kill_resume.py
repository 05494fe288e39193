"""Kill and resume, for SFT, DPO, GRPO and PPO (issue 15): ``alignkit train`` killed with SIGKILL mid-run, then
``alignkit train ... --resume``, ends with the weights of an uninterrupted run (within 1e-5, CPU, fixed seeds) and a
train_log.jsonl that continues without a gap or a repeated step.

Each recipe trains 3 steps and saves every 2. The killed run is a real process (a child of
tests/kill_resume_worker.py, forked so that it does not pay the imports again) that the test kills once step 3 is
logged and before it is checkpointed: the run directory then holds checkpoint-2 and a log that already has step 3.
The resume (step 3) and the uninterrupted reference run in this process. What each trainer exercises besides the
weights, optimizer, scheduler, RNG and data order: DPO its adaptive-KL controller; GRPO a checkpoint inside a rollout
(steps_per_generation 3: step 3 trains on the rollout sampled at step 1); PPO its critic, adaptive-KL controller and
one-time forward checks. GRPO and PPO score with a reward function named by import path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_recipes import TINY_KEYS, pair_card, prompt_card, sft_card

from alignkit.cli import main

STEPS, SAVE_STEPS = 3, 2
REWARD = "reward_funcs: ['kill_resume_rewards:char_reward']\nmax_completion_length: 6\n"
TRAINERS = {  # trainer -> (card, extra recipe keys)
    "sft": (sft_card, ""),
    "dpo": (pair_card, "kl_target: 1.0\nkl_horizon: 1.0\n"),
    "grpo": (prompt_card, REWARD + "num_generations: 2\nsteps_per_generation: 3\n"),
    "ppo": (prompt_card, REWARD + "kl_target: 0.5\nkl_horizon: 10\n"),
}
# log keys that measure time, and the end-of-run average over the steps this process trained
NOT_REPRODUCIBLE = {"train_runtime", "train_samples_per_second", "train_steps_per_second", "step_time", "train_loss"}


def _recipe(folder: Path, trainer: str, model: str) -> Path:
    card, extra = TRAINERS[trainer]
    keys = TINY_KEYS.replace("save_strategy: 'no'\n", f"save_steps: {SAVE_STEPS}\n")
    if trainer in ("grpo", "ppo"):
        keys = keys.replace("max_length: 64\n", "")  # GRPO's lengths are max_prompt/completion_length
    path = folder / f"{trainer}-tiny.yaml"
    path.write_text(
        f"trainer: {trainer}\nmodel_name_or_path: {model}\ndataset: {card(folder)}\nmax_steps: {STEPS}\n{extra}{keys}"
    )
    return path


class Killer:
    """Runs the worker (the killed trainings, one after the other) and kills each child when it is ready."""

    def __init__(self, folder: Path, jobs: list[dict]):
        (folder / "jobs.json").write_text(json.dumps(jobs))
        self.stderr = folder / "worker.stderr"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        worker = Path(__file__).with_name("kill_resume_worker.py")
        self.proc = subprocess.Popen(
            [sys.executable, str(worker), str(folder / "jobs.json")],
            stdout=subprocess.PIPE,
            stderr=open(self.stderr, "w"),
            text=True,
            env=env,
        )
        self.done: dict[str, str] = {}

    def killed(self, name: str, timeout: float = 600) -> str:
        """Wait for job ``name`` to reach its kill point, SIGKILL it, wait until it is reaped; how it ended."""
        deadline = time.time() + timeout
        while name not in self.done:
            line = self.proc.stdout.readline()
            if not line:
                pytest.fail(f"worker ended before {name} was killed:\n{self.stderr.read_text()[-3000:]}")
            words = line.split()
            if words[:1] == ["KILLME"]:
                os.kill(int(words[2]), signal.SIGKILL)
            elif words[:1] == ["EXIT"]:
                self.done[words[1]] = " ".join(words[2:])
            elif words[:1] == ["FINISHED"]:
                pytest.fail(f"{line.strip()}\n{self.stderr.read_text()[-3000:]}")
            assert time.time() < deadline, f"{name} was not killed within {timeout} s"
        return self.done[name]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


@pytest.fixture(scope="module")
def killer(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("kill-resume")
    jobs = []
    for trainer in TRAINERS:
        recipe = _recipe(folder, trainer, tiny_model)
        out = folder / "runs" / f"{trainer}-killed"
        argv = ["train", str(recipe), f"output_dir={out}", "--no-eval"]
        jobs.append({"name": trainer, "argv": argv, "stop_step": STEPS})
    k = Killer(folder, jobs)
    k.folder = folder
    yield k
    k.close()


def _log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]


def _same_metrics(resumed: list[dict], reference: list[dict]) -> None:
    assert [e["step"] for e in resumed] == [e["step"] for e in reference]
    for got, want in zip(resumed, reference, strict=True):
        assert got.keys() == want.keys(), (got, want)
        for key, value in want.items():
            if key not in NOT_REPRODUCIBLE and isinstance(value, (int, float)):
                assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-6), (key, got, want)


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


@pytest.mark.parametrize("trainer", list(TRAINERS))
def test_killed_run_resumes_to_the_uninterrupted_result(trainer, killer):
    folder = killer.folder
    recipe = folder / f"{trainer}-tiny.yaml"
    killed = folder / "runs" / f"{trainer}-killed"
    partial = killed.with_name(killed.name + ".partial")
    reference = folder / "runs" / f"{trainer}-reference"  # first: it runs while the worker trains the killed run
    assert main(["train", str(recipe), f"output_dir={reference}", "--no-eval"]) == 0
    assert killer.killed(trainer) == f"signal {signal.SIGKILL}"
    # killed mid-run: after step 3 was logged, before it was checkpointed
    assert sorted(p.name for p in partial.glob("checkpoint-*")) == ["checkpoint-2"]
    assert STEPS in [e["step"] for e in _log(partial)]

    assert main(["train", str(recipe), f"output_dir={killed}", "--no-eval", "--resume"]) == 0

    final = load_file(str(killed / "adapter" / "adapter_model.safetensors"))
    want = load_file(str(reference / "adapter" / "adapter_model.safetensors"))
    assert _max_diff(final, want) <= 1e-5
    resumed_from = load_file(str(killed / "checkpoint-2" / "adapter_model.safetensors"))
    assert _max_diff(want, resumed_from) > 1e-4  # step 3 moved the weights: the comparison above can fail
    _same_metrics(_log(killed), _log(reference))
    if trainer == "ppo":  # the critic and β at the end agree too
        critic = torch.load(killed / "checkpoint-3" / "ppo_critic.pt", weights_only=True)["critic"]
        want_critic = torch.load(reference / "checkpoint-3" / "ppo_critic.pt", weights_only=True)["critic"]
        assert _max_diff(critic, want_critic) <= 1e-5
        kl = [json.loads((run / "checkpoint-3" / "kl_controller.json").read_text()) for run in (killed, reference)]
        assert kl[0]["value"] == pytest.approx(kl[1]["value"], rel=1e-6) and kl[0]["value"] != pytest.approx(0.05)
