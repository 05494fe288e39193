"""Two CPU processes (gloo) through ``accelerate launch``, on the tiny model, 3 SFT steps each.

The runs start together in one module fixture (they share the CPU; each is mostly imports):

- ``one``: 1 process, per-device batch 2 (the reference);
- ``ddp`` and ``fsdp``: 2 processes, per-device batch 1, with recipes/accelerate/ddp.yaml and fsdp.yaml; the same
  global batch of 2. Both ranks draw from the same seeded permutation and rank r takes row r of each global batch,
  so the rows of a step are the reference's. Dropout is 0 in the tiny model, and every row has the same number of
  tokens, so the mean over a rank's tokens averaged over ranks equals the reference's mean over all tokens;
- ``fail``: the DDP launch with rank 1 alone hitting a bad input;
- ``grpo`` and ``ppo``: 2 processes under DDP, 3 steps of GRPO (groups of 4 completions, each group split over the
  two ranks) and of PPO, with the adaptive KL controller on. Their checks are the documented global statistics:
  GRPO normalizes each group over the rewards gathered from every rank, then hands each rank its slice; PPO whitens
  advantages with the mean and variance of every rank's valid tokens; β is one number on every rank.

tests/distributed_worker.py makes every rank write the full weights it ends with, so "both ranks identical" is
checked on what each rank holds, not only on what rank 0 saved.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from tiny_recipes import TINY_KEYS, prompt_card, sft_card

from alignkit.plugins.common.advantage_methods import normalize

ROOT = Path(__file__).resolve().parent.parent
ACCELERATE = Path(sys.executable).with_name("accelerate")
WORKER = ROOT / "tests" / "distributed_worker.py"
LAUNCH_TIMEOUT = 240  # seconds; a hang fails the test instead of blocking make test
# DeepSpeed is the optional extra alignkit[deepspeed]; make setup leaves it out, and then its runs are skipped
HAS_DEEPSPEED = importlib.util.find_spec("deepspeed") is not None
NO_DEEPSPEED = "deepspeed is not installed (optional extra: pip install 'alignkit[deepspeed]')"

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()) or not ACCELERATE.exists(),
    reason="needs torch.distributed with the gloo backend and accelerate's launcher in the venv",
)

# Full fine-tuning (FSDP shards the weights themselves), fp32, no checkpoints, eval off.
RECIPE = """description: distributed test
trainer: sft
model_name_or_path: {model}
dataset: {card}
max_steps: 3
seed: 0
use_peft: false
max_length: 64
per_device_train_batch_size: {batch}
gradient_accumulation_steps: 1
learning_rate: 0.001
logging_steps: 1
save_strategy: 'no'
bf16: false
use_cpu: true
gradient_checkpointing: false
eval_suite: null
"""

# GRPO/PPO on the prompt card with a LoRA (TINY_KEYS; their lengths are max_completion_length, not max_length).
# Per-device batch 2 on 2 ranks: each generation batch is 4 completions, one GRPO group of 4 split 2 + 2.
RL_GROUP = 4
RL_RECIPE = """description: distributed {trainer} test
trainer: {trainer}
model_name_or_path: {model}
dataset: {card}
max_steps: 3
seed: 0
reward_funcs: ['kill_resume_rewards:char_reward']
max_completion_length: 6
beta: 0.1
kl_target: 0.05
kl_horizon: 10
{extra}"""
RL_EXTRA = {
    "grpo": f"num_generations: {RL_GROUP}\nsteps_per_generation: 1\nadvantage_method: rloo\n",
    "ppo": "",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(name: str, tmp: Path, nproc: int, accel: str | None, env: dict) -> dict:
    dump = tmp / f"dump-{name}"
    dump.mkdir()
    runs = tmp / f"runs-{name}"
    recipe = tmp / f"{name}.yaml"
    train = ["train", str(recipe), f"output_dir={runs / name}"]
    if accel is None:
        cmd = [sys.executable, str(WORKER), str(dump), *train]
    else:
        config = ROOT / "recipes" / "accelerate" / f"{accel}.yaml"
        cmd = [str(ACCELERATE), "launch", "--config_file", str(config), "--num_processes", str(nproc)]
        cmd += ["--main_process_port", str(_free_port()), str(WORKER), str(dump), *train]
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return {"proc": proc, "dump": dump, "runs": runs, "run": runs / name, "cmd": shlex.join(cmd)}


@pytest.fixture(scope="module")
def launches(tmp_path_factory, tiny_model) -> dict[str, dict]:
    tmp = tmp_path_factory.mktemp("distributed")
    card = sft_card(tmp)
    # one-digit numbers: every row has the same token count (see the module docstring)
    for name, batch in (("one", 2), ("ddp", 1), ("fsdp", 1), ("fail", 1), ("zero2", 1), ("zero3", 1)):
        (tmp / f"{name}.yaml").write_text(RECIPE.format(model=tiny_model, card=card, batch=batch))
    prompts = prompt_card(tmp)
    for trainer, extra in RL_EXTRA.items():
        keys = TINY_KEYS.replace("max_length: 64\n", "")
        recipe = RL_RECIPE.format(trainer=trainer, model=tiny_model, card=prompts, extra=extra)
        (tmp / f"{trainer}.yaml").write_text(recipe + keys)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    started = time.time()
    runs = {
        "one": _launch("one", tmp, 1, None, env),
        "ddp": _launch("ddp", tmp, 2, "ddp", env),
        "fsdp": _launch("fsdp", tmp, 2, "fsdp", env),
        "fail": _launch("fail", tmp, 2, "ddp", {**env, "ALIGNKIT_TEST_FAIL_RANK": "1"}),
        "grpo": _launch("grpo", tmp, 2, "ddp", env),
        "ppo": _launch("ppo", tmp, 2, "ddp", env),
    }
    if HAS_DEEPSPEED:  # its first launch JIT-compiles DeepSpeed's CPU comm op (minutes); later ones reuse it
        runs.update({stage: _launch(stage, tmp, 2, stage, env) for stage in ("zero2", "zero3")})
    for run in runs.values():
        try:
            run["stdout"], run["stderr"] = run["proc"].communicate(
                timeout=max(1, LAUNCH_TIMEOUT - (time.time() - started))
            )
        except subprocess.TimeoutExpired:
            run["proc"].kill()
            run["stdout"], run["stderr"] = run["proc"].communicate()
            run["timed_out"] = True
        run["seconds"] = time.time() - started
    return runs


def _finished(run: dict) -> None:
    assert not run.get("timed_out"), f"{run['cmd']} hung"
    assert run["proc"].returncode == 0, f"{run['cmd']} failed:\n{run['stderr'][-3000:]}"


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def _max_diff(a: dict, b: dict) -> float:
    assert set(a) <= set(b), sorted(set(a) - set(b))
    return max((a[k] - b[k]).abs().max().item() for k in a)


def _check_two_ranks(launches: dict, name: str, tiny_model: str) -> dict:
    one, two = launches["one"], launches[name]
    _finished(one)
    _finished(two)
    rank0, rank1 = _weights(two["dump"] / "rank-0.safetensors"), _weights(two["dump"] / "rank-1.safetensors")
    assert _max_diff(rank0, rank1) == 0.0  # the same all-reduced (or reduce-scattered) update on both ranks
    reference = _weights(one["dump"] / "rank-0.safetensors")
    start = _weights(Path(tiny_model) / "model.safetensors")
    moved = _max_diff(reference, start)
    # 3 AdamW steps at lr 1e-3 move weights by ~3e-3; a wrong global batch or data order shows up far above 1e-5
    assert moved > 1e-3
    assert _max_diff(rank0, reference) < 1e-5, "2 processes x batch 1 should equal 1 process x batch 2"
    saved = _weights(two["run"] / "model" / "model.safetensors")
    assert _max_diff(rank0, saved) < 1e-6  # what rank 0 wrote is what the ranks trained
    return {r: json.loads((two["dump"] / f"rank-{r}.json").read_text()) for r in (0, 1)}


def test_ddp_ranks_identical_and_equal_to_one_process(launches, tiny_model):
    info = _check_two_ranks(launches, "ddp", tiny_model)
    assert [i["world_size"] for i in info.values()] == [2, 2] and not info[0]["sharded"]


def test_fsdp_ranks_identical_and_equal_to_one_process(launches, tiny_model):
    info = _check_two_ranks(launches, "fsdp", tiny_model)
    # the weights really were sharded (accelerate alone would have trained plain DDP on CPUs)
    assert info[0]["sharded"] and info[1]["sharded"] and info[0]["global_step"] == 3


@pytest.mark.skipif(not HAS_DEEPSPEED, reason=NO_DEEPSPEED)
@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_deepspeed_ranks_identical_and_equal_to_one_process(launches, tiny_model, stage):
    info = _check_two_ranks(launches, stage, tiny_model)
    assert info[0]["optimizer"] == "DeepSpeedOptimizerWrapper"  # DeepSpeed's engine stepped, not plain DDP
    assert info[0]["zero3_partitioned"] == (stage == "zero3")


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_configs_load_through_accelerate(stage, monkeypatch):
    """accelerate's own launcher reads the config and turns it into DeepSpeed's environment, and the plugin the
    trainer builds from that environment has the stage and the save option the header promises."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin, DistributedType
    from accelerate.utils.launch import prepare_deepspeed_cmd_env

    config = ROOT / "recipes" / "accelerate" / f"zero{stage}.yaml"
    argv = ["--config_file", str(config), "--num_processes", "2", "-m", "alignkit", "train", "sft-qwen"]
    args, defaults, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    assert defaults.distributed_type == DistributedType.DEEPSPEED and args.use_deepspeed
    args.deepspeed_fields_from_accelerate_config = ",".join(defaults.deepspeed_config)
    _, env = prepare_deepspeed_cmd_env(args)
    assert env["ACCELERATE_USE_DEEPSPEED"] == "true" and env["ACCELERATE_DEEPSPEED_ZERO_STAGE"] == str(stage)
    for key, value in env.items():
        if key.startswith("ACCELERATE_"):
            monkeypatch.setenv(key, value)
    zero = DeepSpeedPlugin().deepspeed_config["zero_optimization"]
    assert zero["stage"] == stage and zero["stage3_gather_16bit_weights_on_model_save"] == (stage == 3)


@pytest.mark.parametrize("name", ["ddp", "fsdp"])
def test_only_rank_zero_writes(launches, name):
    run = launches[name]
    _finished(run)
    assert sorted(p.name for p in run["runs"].iterdir()) == [name]  # no .partial left by any rank
    log = [json.loads(line) for line in (run["run"] / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3]  # one writer, not one per rank
    assert run["stdout"].count("alignkit: trained run in") == 1
    assert run["stdout"].count("alignkit: recipe ") == 1
    info = [json.loads((run["dump"] / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [i["progress_bars"] for i in info] == [True, False]  # dataset-map and download bars: rank 0's only
    assert json.loads((run["run"] / "run.json").read_text())["status"] == "finished"


def test_one_rank_failing_stops_every_rank_with_one_line(launches):
    run = launches["fail"]
    assert not run.get("timed_out"), "a failure on rank 1 hung the job"
    assert run["proc"].returncode != 0
    errors = [line for line in run["stderr"].splitlines() if line.startswith("alignkit: error")]
    assert errors == ["alignkit: error on rank 1 of 2: injected by the test on rank 1"], run["stderr"][-3000:]
    assert "[rank0]: Traceback" not in run["stderr"] and "[rank1]: Traceback" not in run["stderr"]
    assert "rank      : 1 (local_rank: 1)\n  exitcode  : 2" in run["stderr"]  # torchrun's summary: rank 1, bad input
    assert not run["runs"].exists() or not any(run["runs"].iterdir())  # rank 0 removed its .partial


@pytest.mark.parametrize("args", ["NPROC=0", "NPROC=two", "NPROC=2 ACCEL=zero4"])
def test_make_rejects_bad_launch_args(args):
    result = subprocess.run(["make", "-n", "recipe=sft-smol", *args.split()], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and ("NPROC" in result.stderr or "ACCEL" in result.stderr)


def test_make_launches_through_accelerate():
    out = subprocess.run(
        ["make", "-n", "recipe=sft-smol", "NPROC=2", "ACCEL=fsdp"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    launch = (
        "accelerate launch --config_file recipes/accelerate/fsdp.yaml --num_processes 2 -m alignkit train sft-smol"
    )
    assert launch in out


def _rank_dumps(run: dict) -> tuple[list, list]:
    """Per rank: its rank-N.json and the rollouts it trained on (tests/distributed_worker.py). Both ranks end with the
    same weights: the policy's LoRA, and for PPO the critic too (its adapter and head, which DDP does not see)."""
    _finished(run)
    rank0, rank1 = _weights(run["dump"] / "rank-0.safetensors"), _weights(run["dump"] / "rank-1.safetensors")
    assert set(rank0) == set(rank1) and _max_diff(rank0, rank1) == 0.0
    info = [json.loads((run["dump"] / f"rank-{r}.json").read_text()) for r in (0, 1)]
    rollouts = [torch.load(run["dump"] / f"rank-{r}.rollouts.pt", weights_only=True) for r in (0, 1)]
    assert len(rollouts[0]) == len(rollouts[1]) == 3  # one rollout per step on each rank
    return info, rollouts


def _one_beta_on_every_rank(info: list) -> None:
    """β is logged at each step; both ranks log the same numbers, and the controller really moved it."""
    assert len(info[0]["kl_coefs"]) == 3 and info[0]["kl_coefs"] == info[1]["kl_coefs"]
    first, last = info[0]["kl_coefs"][0], info[0]["kl_coefs"][-1]
    assert abs(first - 0.1) < 1e-9 and abs(last - 0.1) > 1e-4  # the recipe's β, then the controller's


def test_grpo_ddp_normalizes_groups_over_every_rank_and_shares_beta(launches):
    info, (rank0, rank1) = _rank_dumps(launches["grpo"])
    told_apart = 0
    for mine, theirs in zip(rank0, rank1, strict=True):
        gathered = mine["rewards_per_func"]
        assert torch.equal(gathered, theirs["rewards_per_func"])  # both ranks hold the whole batch's rewards
        rewards = (gathered * mine["reward_weights"]).nansum(1)
        assert rewards.shape == (RL_GROUP,)
        expected = normalize(rewards, RL_GROUP, "rloo")  # the documented global group statistic
        got = torch.cat([mine["advantages"], theirs["advantages"]])  # rank r trains on slice r
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)
        half = RL_GROUP // 2
        per_rank = torch.cat([normalize(rewards[:half], half, "rloo"), normalize(rewards[half:], half, "rloo")])
        told_apart += not torch.allclose(per_rank, expected, atol=1e-4)
    assert told_apart > 0, "every group was degenerate: the check could not tell global from per-rank statistics"
    _one_beta_on_every_rank(info)


def test_ppo_ddp_whitens_over_every_rank_and_shares_beta(launches):
    info, (rank0, rank1) = _rank_dumps(launches["ppo"])
    names = _weights(launches["ppo"]["dump"] / "rank-0.safetensors")
    critic = [k for k in names if "ppo_critic" in k or ".value." in k]
    assert critic  # the critic's weights were among those compared across ranks
    off_zero = 0.0
    for mine, theirs in zip(rank0, rank1, strict=True):
        assert torch.equal(mine["rewards_per_func"], theirs["rewards_per_func"])
        valid = [r["advantages"][r["completion_mask"].bool()] for r in (mine, theirs)]
        both = torch.cat(valid).double()
        # whitened with the moments of both ranks' valid tokens (population variance, see masked_whiten)
        assert abs(both.mean().item()) < 1e-5 and abs(both.var(unbiased=False).item() - 1) < 1e-4
        off_zero = max(off_zero, *(abs(v.double().mean().item()) for v in valid))
    # each rank alone is not centred: per-rank moments would have made every rank's mean 0
    assert off_zero > 1e-3
    _one_beta_on_every_rank(info)


ENGINES = [  # a DeepSpeed environment makes TrainingArguments import deepspeed, so that case needs the extra
    ("FSDP", "ACCELERATE_USE_FSDP"),
    pytest.param(
        "DeepSpeed", "ACCELERATE_USE_DEEPSPEED", marks=pytest.mark.skipif(not HAS_DEEPSPEED, reason=NO_DEEPSPEED)
    ),
]


@pytest.mark.parametrize("engine, variable", ENGINES)
def test_ppo_under_a_sharding_engine_stops_with_one_line(engine, variable, tiny_model, tmp_path, monkeypatch, capsys):
    """PPO's critic runs outside the wrapped forward (see plugins/ppo/ppo_critic.py): under FSDP it crashed in the
    first backward with a traceback; now the launch stops before anything is written."""
    import alignkit.train
    from alignkit.cli import main

    monkeypatch.setenv(variable, "true")
    monkeypatch.setattr(alignkit.train, "is_distributed", lambda: True)  # as under `accelerate launch`, rank 0
    recipe = tmp_path / "ppo.yaml"
    body = RL_RECIPE.format(trainer="ppo", model=tiny_model, card=prompt_card(tmp_path), extra=RL_EXTRA["ppo"])
    recipe.write_text(body + TINY_KEYS.replace("max_length: 64\n", ""))
    assert main(["train", str(recipe), f"output_dir={tmp_path / 'runs' / 'ppo'}"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and "trainer ppo" in errors[0] and engine in errors[0] and "ACCEL=ddp" in errors[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
