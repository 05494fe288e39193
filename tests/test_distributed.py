"""Two CPU processes (gloo) through ``accelerate launch``, on the tiny model, 3 SFT steps each.

The runs start together in one module fixture (they share the CPU; each is mostly imports):

- ``one``: 1 process, per-device batch 2 (the reference);
- ``ddp`` and ``fsdp``: 2 processes, per-device batch 1, with recipes/accelerate/ddp.yaml and fsdp.yaml; the same
  global batch of 2. Both ranks draw from the same seeded permutation and rank r takes row r of each global batch,
  so the rows of a step are the reference's. Dropout is 0 in the tiny model, and every row has the same number of
  tokens, so the mean over a rank's tokens averaged over ranks equals the reference's mean over all tokens;
- ``fail``: the DDP launch with rank 1 alone hitting a bad input.

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
import torch.distributed as dist
from tiny_recipes import sft_card

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
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    started = time.time()
    runs = {
        "one": _launch("one", tmp, 1, None, env),
        "ddp": _launch("ddp", tmp, 2, "ddp", env),
        "fsdp": _launch("fsdp", tmp, 2, "fsdp", env),
        "fail": _launch("fail", tmp, 2, "ddp", {**env, "ALIGNKIT_TEST_FAIL_RANK": "1"}),
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
