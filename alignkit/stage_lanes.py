"""Run ``alignkit`` jobs with dependencies in N lanes (child processes), a share of the cores each.

Why: on a 2-core CPU one process at 2 threads trains only ~1.45x faster than at 1 thread (:mod:`alignkit.lanes`),
so two independent stages at one thread each finish sooner than the same two one after the other at two threads.
``alignkit pipeline`` uses this for its stages: SFT beside the reward models, then PPO beside DPO, and so on.

Scheduling is list scheduling: whenever a lane is free it starts the first job, in the given order, whose ``after``
jobs have all finished. Put the longest chains first. A job is ``alignkit <argv>`` (``python <argv>`` when argv
starts with a flag, e.g. ``-m``) in a child with ``OMP_NUM_THREADS`` = this process's threads // lanes (at least 1);
its output goes to ``<log_dir>/<name>.log``.

A failed job stops the run (an ``optional`` one, a cache warm-up, is only reported): the jobs still running are
terminated (an interrupted training run stays ``.partial`` and the next attempt resumes it) and nothing new starts.
The returned :class:`LaneResult` names the failed job and its exit status.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from alignkit.errors import AlignkitError
from alignkit.lanes import child_env


@dataclass(frozen=True)
class Job:
    """``alignkit <argv>`` once every job named in ``after`` has finished."""

    name: str
    argv: tuple[str, ...]
    after: tuple[str, ...] = ()
    optional: bool = False  # a cache warm-up: its failure is reported and the rest goes on


@dataclass
class LaneResult:
    seconds: dict[str, float] = field(default_factory=dict)  # finished jobs: wall seconds each
    failed: str | None = None
    exit_code: int = 0
    stopped: list[str] = field(default_factory=list)  # jobs terminated because another failed
    skipped: list[str] = field(default_factory=list)  # optional jobs that failed


def check_jobs(jobs: list[Job], done: set[str] = frozenset()) -> None:
    """Every ``after`` names a job in ``jobs`` or one already ``done``; names are unique; no job waits on itself
    through a cycle (a job may wait only on jobs listed before it)."""
    seen: set[str] = set()
    for job in jobs:
        if job.name in seen:
            raise AlignkitError(f"lane jobs: '{job.name}' is listed twice")
        for dep in job.after:
            if dep not in seen and dep not in done:
                known = dep in {j.name for j in jobs}
                raise AlignkitError(
                    f"lane jobs: '{job.name}' waits for '{dep}', which "
                    + ("is listed after it" if known else "is neither a job nor finished")
                )
        seen.add(job.name)


def next_ready(jobs: list[Job], finished: set[str], started: set[str]) -> Job | None:
    """The first job not yet started whose dependencies have all finished."""
    return next((j for j in jobs if j.name not in started and set(j.after) <= finished), None)


def lane_threads(lanes: int, threads: int | None = None) -> int:
    """Threads per lane: this process's torch threads split evenly, at least 1."""
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    return max(1, threads // max(1, lanes))


def _spawn(job: Job, log_dir: Path, threads: int) -> subprocess.Popen:
    log_dir.mkdir(parents=True, exist_ok=True)
    env = child_env(threads)
    python_flag = job.argv[0].startswith("-")  # "-m module ..." (or "-c code") runs as is, else an alignkit command
    cmd = [sys.executable, *job.argv] if python_flag else [sys.executable, "-m", "alignkit", *job.argv]
    with open(log_dir / f"{job.name}.log", "w") as log:
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def run_lanes(
    jobs: list[Job],
    lanes: int,
    log_dir: Path,
    done: set[str] = frozenset(),
    spawn: Callable[[Job], subprocess.Popen] | None = None,
    say: Callable[[str], None] = lambda line: print(line, flush=True),
    poll_seconds: float = 1.0,
) -> LaneResult:
    """Run ``jobs`` at most ``lanes`` at a time (see the module docstring); ``done`` are jobs already finished."""
    check_jobs(jobs, set(done))
    threads = lane_threads(lanes)
    spawn = spawn or (lambda job: _spawn(job, log_dir, threads))
    finished, started = set(done), set()
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    result = LaneResult()
    while len(finished) < len(done) + len(jobs) and result.failed is None:
        while len(running) < lanes and (job := next_ready(jobs, finished, started)) is not None:
            started.add(job.name)
            say(f"alignkit pipeline: start {job.name} ({threads} thread(s), log {log_dir / (job.name + '.log')})")
            running[job.name] = (spawn(job), time.monotonic())
        if not running:  # nothing runs and nothing is ready: check_jobs makes this unreachable
            raise AlignkitError(f"lane jobs: nothing can start; waiting: {sorted(started ^ {j.name for j in jobs})}")
        time.sleep(poll_seconds)
        for name, (proc, t0) in list(running.items()):
            code = proc.poll()
            if code is None:
                continue
            del running[name]
            optional = next(j.optional for j in jobs if j.name == name)
            if code == 0 or optional:
                finished.add(name)
                result.seconds[name] = time.monotonic() - t0
                if code == 0:
                    say(f"alignkit pipeline: {name} done in {result.seconds[name]:.0f} s")
                else:
                    result.skipped.append(name)
                    say(f"alignkit pipeline: {name} failed (exit {code}), not needed: the eval computes it later")
            elif result.failed is None:
                result.failed, result.exit_code = name, code
    for name, (proc, _) in running.items():  # only after a failure
        proc.terminate()
        proc.wait()
        result.stopped.append(name)
    return result
