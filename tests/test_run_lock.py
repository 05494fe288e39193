"""The run-directory lock (alignkit/run_lock.py): a live train's run is never touched by a second train, and a lock
left by a dead process is taken over with one warning line."""

import json
import os
import subprocess
import sys
import time

import pytest

from alignkit import run_lock
from alignkit.cli import main
from alignkit.errors import AlignkitError
from alignkit.recipe import load_recipe

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
    card = tmp_path / "pairs.yaml"
    card.write_text(
        "name: pairs\ndescription: d\nsource: {file: 'pairs-{split}.jsonl'}\n"
        "format: {type: preference, conversational: true}\n"
        "columns: {prompt: prompt, chosen: chosen, rejected: rejected}\nsplits: {train: train, test: test}\n"
        "license: x\nsize: x\nrebuild: x\n"
    )
    return card


def _train_args(tiny_model, card, out, steps):
    return [
        "train",
        "dpo-smol",
        f"model_name_or_path={tiny_model}",
        f"dataset={card}",
        f"output_dir={out}",
        f"max_steps={steps}",
        "per_device_train_batch_size=2",
        "gradient_accumulation_steps=1",
        "max_length=64",
        "save_steps=1000",
        "logging_steps=1000",
        "--no-eval",
    ]


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_lock_records_this_process_and_release_only_drops_our_own(tmp_path):
    run_lock.acquire(tmp_path)
    record = json.loads((tmp_path / run_lock.LOCK_FILE).read_text())
    assert record["pid"] == os.getpid() and record["start_ticks"] is not None
    run_lock.release(tmp_path)
    assert not (tmp_path / run_lock.LOCK_FILE).exists()
    # a lock of another live process (our parent) is refused, and release leaves it alone
    (tmp_path / run_lock.LOCK_FILE).write_text(json.dumps({"pid": os.getppid(), "host": os.uname().nodename}))
    with pytest.raises(AlignkitError, match=rf"in use by process {os.getppid()}"):
        run_lock.acquire(tmp_path)
    run_lock.release(tmp_path)
    assert (tmp_path / run_lock.LOCK_FILE).exists()


def test_a_reused_pid_is_not_mistaken_for_the_owner(tmp_path, caplog):
    # same pid (our parent, alive) but another start time: the process that wrote the lock is gone
    lock = {"pid": os.getppid(), "host": os.uname().nodename, "start_ticks": 1}
    (tmp_path / run_lock.LOCK_FILE).write_text(json.dumps(lock))
    assert run_lock.holder(tmp_path) is None
    assert "stale lock" in caplog.text and not (tmp_path / run_lock.LOCK_FILE).exists()


def test_stale_lock_of_a_killed_train_is_taken_over_with_one_warning(tiny_model, pair_card, tmp_path, caplog):
    out = tmp_path / "runs" / "locked"
    staging = out.with_name("locked.partial")
    staging.mkdir(parents=True)
    pid = _dead_pid()
    (staging / run_lock.LOCK_FILE).write_text(json.dumps({"pid": pid, "host": os.uname().nodename}))
    assert main(_train_args(tiny_model, pair_card, out, 1) + ["--resume"]) == 0
    warnings = [r.getMessage() for r in caplog.records if "stale lock" in r.getMessage()]
    assert len(warnings) == 1 and f"process {pid}" in warnings[0], warnings
    assert json.loads((out / "run.json").read_text())["status"] == "finished"
    assert not (out / run_lock.LOCK_FILE).exists() and not staging.exists()


def test_second_train_on_a_live_run_refuses_and_the_first_finishes(tiny_model, pair_card, tmp_path, capsys):
    out = tmp_path / "runs" / "busy"
    lock = out.with_name("busy.partial") / run_lock.LOCK_FILE
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    load_recipe("dpo-smol")  # import TRL before the first train starts, so the second is tried while it runs
    first = subprocess.Popen(
        [sys.executable, "-m", "alignkit", *_train_args(tiny_model, pair_card, out, 25)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not lock.exists() and first.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert lock.exists(), first.communicate()[1][-2000:]
        for flags in ([], ["--resume"], ["--overwrite"]):  # no flag lets a second train touch a live run
            assert main(_train_args(tiny_model, pair_card, out, 1) + flags) == 2
            err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
            assert len(err) == 1 and f"in use by process {first.pid}" in err[0], err
        assert first.poll() is None, "the first train finished before the second one was tried; give it more steps"
        _, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr[-2000:]
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "finished" and meta["global_step"] == 25
