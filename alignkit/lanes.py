"""Side lane: runs that only the eval needs are trained in a second process while this one trains, a core each.

Why: on a 2-core CPU one process at 2 threads runs a training step only ~1.45x faster than at 1 thread (dpo-smol, 12
steps: 34.2 s at 2 threads vs 49.4 s at 1 in run.json's train_seconds, AMD EPYC, 2026-12-03, from
``alignkit train dpo-smol max_steps=12 --no-eval`` with and without ``OMP_NUM_THREADS=1``) and a greedy decode
1.36-1.83x (PASSIVE / default waiting, bench/results/omp_wait.md, Intel Xeon with AMX, 2026-12-04), so two
independent jobs at one thread each finish sooner than one after the other at two. Measured on ``make``
(bench/make_time.py, 2026-12-03, AMD EPYC): 870 s with the judge in a side lane, 981 s the hour before without it
(and with slower pair cards).

``alignkit train R`` (with its eval) uses this for the runs R's eval suite needs and R's own training does not: for
``make``, the held-out judge ``rm-judge-smol``, while ``dpo-smol`` builds its pairs and trains. It also sends the runs
R's data needs only after a first part of its build (``early``, :func:`alignkit.pipeline.deferrable_runs`): for
``make``, the proxy ``rm-smol``, which the on-policy card needs only to score the replies it samples first. Those go
first in the child, this process samples meanwhile (:func:`alignkit.pipeline.presample`) and then waits for them
(:func:`wait_for`); if one fails, this process trains it, as it would without a side lane.

After its runs the child also computes the start model's half of the run's eval (:class:`BaselineEval`,
:mod:`alignkit.eval.baseline_warmup`: the start model's replies, their scores and perplexities, into the eval's
caches), so the eval after training computes only the trained model's half: while the main process trains at one
thread, instead of the eval doing it afterwards at two. Measured on dpo-smol's finished run (Intel Xeon with AMX,
2026-12-03): eval 144.8 s from cold caches; 84.2 s after the warm-up, which took 116.3 s at one thread.

How: :func:`start` launches ``alignkit train <recipe> output_dir=<run> --no-eval`` for each such missing run, one
after another in one child process with half of this process's threads (``OMP_NUM_THREADS``; 1 of 2 on the 2-core
machines alignkit's defaults are sized for), and this process keeps the rest. It takes them back at the next
:func:`checkpoint` after the child ends (each training step, each on-policy chunk, the join) — torch's thread count
is per calling thread, so the main thread itself must set it — and :meth:`SideLane.join` waits for the child before
the eval. The child's output goes to ``<runs_root>/.side-lane/<name>.log``. A failed side run is reported in one
line naming that log, and the eval then trains the run itself, as it would without a side lane
(:func:`alignkit.pipeline.ensure_runs`). If this process fails, the child is stopped (its run stays
``.partial``, which the next attempt resumes).

Off when there is nothing to split: fewer than 2 torch threads (``OMP_NUM_THREADS=1``, as benches pinning one core
per job set), a GPU, a distributed launch, or ``ALIGNKIT_SIDE_LANE=0``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignkit.pipeline import PendingRun

LOG_DIR = ".side-lane"
_active: SideLane | None = None


def child_env(threads: int) -> dict[str, str]:
    """The environment of a lane's child process: its share of the threads, and no side lane of its own."""
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "ALIGNKIT_SIDE_LANE": "0"}


@dataclass(frozen=True)
class BaselineEval:
    """The start model's half of a run's eval, run in the child after its runs (:mod:`alignkit.eval.baseline_warmup`):
    it only fills caches, so its failure costs time, not a result."""

    model_path: str
    suite: str
    max_eval_samples: int | None = None
    trust_remote_code: bool = False
    name = "baseline-eval"

    def command(self, runs_root: Path) -> list[str]:
        argv = [sys.executable, "-m", "alignkit.eval.baseline_warmup", self.model_path, "--suite", self.suite]
        argv += ["--runs-root", str(runs_root)]
        if self.max_eval_samples:
            argv += ["--max-eval-samples", str(self.max_eval_samples)]
        return argv + (["--trust-remote-code"] if self.trust_remote_code else [])


class SideLane:
    """A child process training ``pending`` runs one after another on half of ``threads``; this process keeps the
    rest until the child ends."""

    def __init__(
        self, pending: list[PendingRun], runs_root: Path, threads: int, after: list[BaselineEval] | None = None
    ) -> None:
        self.pending, self.runs_root, self.threads = pending, runs_root, threads
        self.after = list(after or [])  # run once every pending run has finished
        self.after_failed: tuple[str, int, Path] | None = None
        self.side_threads = threads // 2  # the rest stay here: 1 and 1 on 2 cores
        self.log_dir = runs_root / LOG_DIR
        self.failed: tuple[str, int, Path] | None = None  # (run name, exit status, log) of the first failure
        self.finished: set[str] = set()  # side runs the child has finished so far
        self._progress = threading.Condition()
        self.restored = False
        self._proc: subprocess.Popen | None = None
        self._stopped = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alignkit-side-lane", daemon=True)

    def command(self, run: PendingRun) -> list[str]:
        argv = [sys.executable, "-m", "alignkit", "train", run.need.recipe, f"output_dir={run.final}", "--no-eval"]
        return argv + (["--resume"] if run.interrupted else [])

    def _run(self) -> None:
        env = child_env(self.side_threads)
        try:
            for run in self.pending:
                if self._stopped:  # stop() came between two runs: start no other
                    return
                log = self.log_dir / f"{run.need.name}.log"
                code = self._run_child(self.command(run), log, env)
                if code != 0 or self._stopped:
                    self.failed = (run.need.name, code, log)
                    return
                with self._progress:
                    self.finished.add(run.need.name)
                    self._progress.notify_all()
            for job in self.after:
                if self._stopped:
                    return
                log = self.log_dir / f"{job.name}.log"
                code = self._run_child(job.command(self.runs_root), log, env)
                if code != 0 and not self._stopped:
                    self.after_failed = (job.name, code, log)
        finally:
            with self._progress:
                self._done.set()
                self._progress.notify_all()

    def _run_child(self, argv: list[str], log: Path, env: dict[str, str]) -> int:
        """Run one child command with its output in ``log``; its exit status (kept in ``_proc`` for :meth:`stop`)."""
        with open(log, "w", encoding="utf-8") as out:
            self._proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
            return self._proc.wait()

    def start(self) -> None:
        import torch

        self.log_dir.mkdir(parents=True, exist_ok=True)
        jobs = [f"training {', '.join(f'run:{r.need.name} ({r.need.purpose})' for r in self.pending)}"]
        jobs = (jobs if self.pending else []) + [f"the start model's eval ({job.suite})" for job in self.after]
        print(
            f"alignkit: side lane: {', then '.join(jobs)} in a second process at {self.side_threads} thread(s) "
            f"while this one runs at {self.threads - self.side_threads}; log in {self.log_dir}/",
            flush=True,
        )
        torch.set_num_threads(self.threads - self.side_threads)
        self._thread.start()

    def checkpoint(self) -> None:
        """In the main thread: once the child has ended, take its thread back (once) and report a failure."""
        if self.restored or not self._done.is_set():
            return
        import torch

        self.restored = True
        torch.set_num_threads(self.threads)
        if self._stopped:
            return
        if self.failed is not None:
            _report_failure(f"run:{self.failed[0]}", *self.failed[1:], "it will be trained here when needed")
        else:
            print(f"alignkit: side lane: done; back to {self.threads} threads", flush=True)
        if self.after_failed is not None:
            _report_failure(*self.after_failed, "the eval computes the start model's half itself")

    def wait_for(self, name: str) -> bool:
        """Wait until the child has finished run ``name`` (True) or has ended without it (False)."""
        with self._progress:
            self._progress.wait_for(lambda: name in self.finished or self._done.is_set())
        self.checkpoint()
        return name in self.finished

    def join(self) -> bool:
        """Wait for the child; True if every side run finished."""
        self._done.wait()
        self.checkpoint()
        return self.failed is None

    def stop(self) -> None:
        """Stop the child (this process failed): its run stays ``.partial`` and resumes next time."""
        self._stopped = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        self._done.wait(timeout=60)
        self.checkpoint()


def _report_failure(what: str, code: int, log: Path, then: str) -> None:
    """One line: what failed, its exit status, the last line of its log, the log, and what happens instead."""
    last = _last_line(log)
    detail = f": {last}" if last else ""
    print(f"alignkit: side lane: {what} failed (exit {code}){detail}; see {log}; {then}", flush=True)


def _last_line(log: Path) -> str:
    try:
        lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        return ""
    return next((line for line in reversed(lines) if line and "\r" not in line), "")[:300]


def enabled() -> bool:
    """Whether a side lane may run here: >= 2 torch threads, no GPU, one process, not switched off."""
    import torch

    from alignkit.distributed import is_distributed

    if os.environ.get("ALIGNKIT_SIDE_LANE", "1") == "0" or is_distributed():
        return False
    return torch.get_num_threads() >= 2 and not torch.cuda.is_available()


def start(
    side_needs: list,
    own_needs: list,
    runs_root: Path,
    early: list | None = None,
    after: list[BaselineEval] | None = None,
) -> SideLane | None:
    """Start training the missing runs of ``side_needs`` that are not in ``own_needs`` (the runs this process's
    training needs itself) in a side lane, after the ``early`` runs (own needs this process waits for later, with
    :func:`wait_for`), and then the ``after`` jobs; None when there is nothing to run or a side lane is off
    (:func:`enabled`)."""
    global _active
    from alignkit.pipeline import missing_runs

    early, after = list(early or []), list(after or [])
    if not (side_needs or early or after) or not enabled():
        return None
    own = {need.name for need in own_needs} - {need.name for need in early}
    pending = [run for run in missing_runs(early + list(side_needs), runs_root) if run.need.name not in own]
    if not (pending or after):
        return None
    import torch

    lane = SideLane(pending, Path(runs_root), torch.get_num_threads(), after)
    lane.start()
    _active = lane
    return lane


def checkpoint() -> None:
    """Called at safe points of long work (training steps, on-policy chunks): see :meth:`SideLane.checkpoint`."""
    if _active is not None:
        _active.checkpoint()


def training(name: str) -> bool:
    """Whether the active side lane is to train run ``name``."""
    return _active is not None and any(run.need.name == name for run in _active.pending)


def wait_for(name: str) -> bool:
    """Wait for the active side lane to finish run ``name``: see :meth:`SideLane.wait_for`; False without one."""
    return _active is not None and _active.wait_for(name)


def finish(ok: bool) -> None:
    """End the active side lane: wait for it (``ok``: this process succeeded) or stop it (``ok`` False)."""
    global _active
    lane, _active = _active, None
    if lane is None:
        return
    if ok:
        lane.join()
    else:
        lane.stop()


def trainer_callbacks() -> list[Any]:
    """A callback that runs :func:`checkpoint` at every step while a side lane is active, else ``[]``."""
    if _active is None:
        return []
    from transformers import TrainerCallback

    class SideLaneCheckpoint(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            checkpoint()

    return [SideLaneCheckpoint()]
