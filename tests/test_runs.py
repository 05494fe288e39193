"""Run directories: a finished run is never silently overwritten, and failures leave nothing half-written."""

import json

import pytest

from alignkit.errors import AlignkitError
from alignkit.runs import prepare, promote


def _finish(paths, marker):
    (paths.staging / "run.json").write_text(json.dumps({"status": "finished", "marker": marker}))
    return promote(paths)


def test_fresh_run_trains_in_staging_then_promotes(tmp_path):
    final = tmp_path / "runs" / "r"
    paths = prepare(final)
    assert paths.staging.name == "r.partial" and not final.exists()
    _finish(paths, 1)
    assert json.loads((final / "run.json").read_text())["marker"] == 1
    assert not paths.staging.exists()


def test_finished_run_is_not_overwritten_without_flag(tmp_path):
    final = tmp_path / "r"
    _finish(prepare(final), 1)
    with pytest.raises(AlignkitError, match="OVERWRITE=1"):
        prepare(final)
    paths = prepare(final, overwrite=True)
    # the old run stays intact until the new one is promoted
    assert json.loads((final / "run.json").read_text())["marker"] == 1
    _finish(paths, 2)
    assert json.loads((final / "run.json").read_text())["marker"] == 2


def test_interrupted_run_needs_resume_or_overwrite(tmp_path):
    final = tmp_path / "r"
    paths = prepare(final)
    for step in (5, 10, 15, 20):
        (paths.staging / f"checkpoint-{step}").mkdir()
        if step < 15:  # checkpoint-15 was cut off before the Trainer wrote its state (written last)
            (paths.staging / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    # checkpoint-20 was killed while the Trainer wrote that state (in place): half a file is no marker
    (paths.staging / "checkpoint-20" / "trainer_state.json").write_text('{"best_metric": null, "global_st')
    with pytest.raises(AlignkitError, match="RESUME=1"):
        prepare(final)
    resumed = prepare(final, resume=True)
    assert resumed.resume_from.endswith("checkpoint-10")


def test_resume_finished_run_without_checkpoint_fails_cleanly(tmp_path):
    final = tmp_path / "r"
    _finish(prepare(final), 1)
    with pytest.raises(AlignkitError, match="no checkpoint"):
        prepare(final, resume=True)
    assert not (tmp_path / "r.partial").exists()


def test_overwrite_and_resume_conflict(tmp_path):
    with pytest.raises(AlignkitError, match="contradict"):
        prepare(tmp_path / "r", overwrite=True, resume=True)
