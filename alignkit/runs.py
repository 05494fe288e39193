"""Run directories: ``runs/<recipe>/`` is only ever replaced by a finished run.

Training writes into ``runs/<recipe>.partial/``. Only when training and saving succeed is the staging directory
swapped into place, so a crash, Ctrl-C or bad input never leaves a half-written run where a finished one was.

- a finished run is never silently overwritten: ``--overwrite`` (``OVERWRITE=1``) replaces it;
- ``--resume`` (``RESUME=1``) continues an interrupted ``.partial`` run, or a finished run from its last checkpoint.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from alignkit import run_lock
from alignkit.errors import AlignkitError

RUN_FILE = "run.json"


@dataclass
class RunPaths:
    final: Path
    staging: Path
    resume_from: str | None  # checkpoint dir to resume from, if any


def read_run(run_dir: Path) -> dict | None:
    """``run_dir/run.json`` as a dict, or ``None`` when there is none (a run that never started)."""
    path = Path(run_dir) / RUN_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise AlignkitError(f"{path}: run metadata is not valid JSON") from None


def run_is_finished(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a finished run (its ``run.json`` says ``status: finished``)."""
    return (read_run(run_dir) or {}).get("status") == "finished"


def read_finished_run(run_dir: str | Path) -> dict:
    """``run.json`` of a run that can be used: the directory exists, the run finished, its weights are present.
    Anything else is a one-line error that says what to do."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise AlignkitError(f"run directory '{run_dir}' does not exist")
    meta_path = run_dir / RUN_FILE
    if not meta_path.is_file():
        raise AlignkitError(f"'{run_dir}' is not a run directory (no run.json); train it first with `alignkit train`")
    meta = read_run(run_dir)
    if meta.get("status") != "finished":
        raise AlignkitError(
            f"run '{run_dir}' has not finished (status: {meta.get('status', 'missing')}); evaluate it after training"
        )
    for key in ("adapter_dir", "model_dir"):
        if meta.get(key) and not (run_dir / meta[key]).is_dir():
            raise AlignkitError(f"{meta_path}: {key} '{meta[key]}' does not exist in the run directory")
    if not meta.get("adapter_dir") and not meta.get("model_dir"):
        raise AlignkitError(f"{meta_path}: has neither adapter_dir nor model_dir; nothing to evaluate")
    return meta


# The Trainer writes this file last into a checkpoint directory: without it, the save was cut off (a full disk, a kill)
CHECKPOINT_COMPLETE_MARKER = "trainer_state.json"


def last_checkpoint(directory: Path) -> str | None:
    """The newest complete ``checkpoint-N`` in ``directory`` (a half-written one is passed over), or None."""
    checkpoints = sorted(
        (
            p
            for p in directory.glob("checkpoint-*")
            if p.name.split("-")[-1].isdigit() and checkpoint_step(p) is not None
        ),
        key=lambda p: int(p.name.split("-")[-1]),
    )
    return str(checkpoints[-1]) if checkpoints else None


def checkpoint_step(checkpoint: str | Path) -> int | None:
    """The optimizer step a complete checkpoint was saved at; None when its marker is missing or cut short (the
    Trainer writes it in place, so a kill can leave half of it)."""
    try:
        return int(json.loads((Path(checkpoint) / CHECKPOINT_COMPLETE_MARKER).read_text())["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def prepare(final: Path, overwrite: bool = False, resume: bool = False) -> RunPaths:
    """Decide where a train writes (see the module docstring) and lock the staging directory for this process
    (:mod:`alignkit.run_lock`); :func:`promote` or :func:`abandon` releases it."""
    if overwrite and resume:
        raise AlignkitError("OVERWRITE=1 and RESUME=1 contradict each other; choose one")
    final = Path(final)
    staging = final.with_name(final.name + ".partial")
    run_lock.check_free(staging)  # a live train on this run is never disturbed, whatever the flags say
    paths = _choose(final, staging, overwrite, resume)
    run_lock.acquire(staging)
    return paths


def _choose(final: Path, staging: Path, overwrite: bool, resume: bool) -> RunPaths:
    finished = run_is_finished(final)
    if resume:
        if staging.exists():
            return RunPaths(final, staging, last_checkpoint(staging))
        if finished:
            _make_dirs(lambda: shutil.copytree(final, staging), staging)
            checkpoint = last_checkpoint(staging)
            if checkpoint is None:
                shutil.rmtree(staging)
                raise AlignkitError(f"{final} has no checkpoint to resume from (set save_steps in the recipe)")
            return RunPaths(final, staging, checkpoint)
        raise AlignkitError(f"nothing to resume: neither {final} nor {staging} exists")
    if finished and not overwrite:
        raise AlignkitError(f"{final} already holds a finished run; OVERWRITE=1 replaces it, RESUME=1 continues it")
    if staging.exists():
        if not overwrite:
            raise AlignkitError(f"an interrupted run is in {staging}; RESUME=1 continues it, OVERWRITE=1 discards it")
        shutil.rmtree(staging)
    if final.exists() and not finished and not overwrite:
        raise AlignkitError(f"{final} exists but holds no finished run; OVERWRITE=1 replaces it")
    _make_dirs(lambda: staging.mkdir(parents=True), staging)
    return RunPaths(final, staging, None)


def _make_dirs(make, staging: Path) -> None:
    try:
        make()
    except OSError as exc:
        raise AlignkitError(
            f"cannot create run directory {staging} ({exc.strerror or exc}); set output_dir to a writable place"
        ) from None


def abandon(paths: RunPaths) -> None:
    """After a failed or interrupted train: keep the staging directory only if it has a checkpoint to resume from
    (or was itself resumed), otherwise remove it; either way release the lock."""
    if last_checkpoint(paths.staging) is None and paths.resume_from is None:
        shutil.rmtree(paths.staging, ignore_errors=True)
    else:
        run_lock.release(paths.staging)


def promote(paths: RunPaths) -> Path:
    """Swap the finished staging directory into place (the old run is removed only after the swap)."""
    old = None
    if paths.final.exists():
        old = paths.final.with_name(f".{paths.final.name}.old-{int(time.time())}")
        paths.final.rename(old)
    paths.staging.rename(paths.final)
    run_lock.release(paths.final)  # the lock moved with the directory
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return paths.final
