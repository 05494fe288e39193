"""Trains recipes with ``alignkit train`` in child processes that tests/test_kill_resume.py kills with SIGKILL.

Usage: python tests/kill_resume_worker.py JOBS.json, where JOBS.json lists ``{"name", "argv", "stop_step"}``.

The worker imports alignkit, transformers and TRL once, then forks one child per job, one after the other (a fresh
interpreter per job would spend most of its time importing). Each child runs ``alignkit.cli.main(argv)`` with one
extra callback: once the step ``stop_step`` has been logged to train_log.jsonl, it prints ``KILLME <name> <pid>``
on the worker's stdout (the training's own output goes to stderr) and waits. The test then kills it with SIGKILL,
mid-run: the log holds that step, the checkpoints only earlier ones. The worker reaps each child and prints
``EXIT <name> <signal or code>`` before it starts the next. The worker runs no torch computation before forking, so
the children start with a fresh OpenMP runtime.
"""

from __future__ import annotations

import json
import os
import sys
import time


def _stop_callback(name: str, stop_step: int, marker):
    from transformers import TrainerCallback

    class WaitForTheKill(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.global_step == stop_step and logs and "loss" in logs:
                print(f"KILLME {name} {os.getpid()}", file=marker, flush=True)
                time.sleep(300)
                os._exit(3)  # never killed: the test has gone

    return WaitForTheKill()


def _child(job: dict, marker) -> int:
    import alignkit.train
    from alignkit.cli import main

    os.dup2(2, 1)  # the training's own output goes to the worker's stderr file, not into the test's pipe
    callbacks = alignkit.train.recipe_callbacks
    stop = _stop_callback(job["name"], job["stop_step"], marker)
    alignkit.train.recipe_callbacks = lambda recipe, root: [*callbacks(recipe, root), stop]
    return main(job["argv"])


def main() -> int:
    import alignkit.cli  # noqa: F401  (imported once, before the forks)
    import alignkit.train  # noqa: F401
    from alignkit.plugins import DPOTrainer, GRPOTrainer, PPOTrainer, SFTTrainer  # noqa: F401

    jobs = json.loads(open(sys.argv[1]).read())
    marker = os.fdopen(os.dup(1), "w")  # the test's pipe: KILLME, FINISHED and EXIT lines only
    for job in jobs:
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = _child(job, marker)
                print(f"FINISHED {job['name']} {code} (the kill point was never reached)", file=marker, flush=True)
            finally:
                marker.flush()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code if code else 4)
        _, status = os.waitpid(pid, 0)
        how = f"signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"code {os.WEXITSTATUS(status)}"
        print(f"EXIT {job['name']} {how}", file=marker, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
