"""alignkit.stage_lanes: list scheduling of dependent jobs in N lanes, stopping at the first failure."""

from pathlib import Path

import pytest

import alignkit.stage_lanes as stage_lanes
from alignkit.errors import AlignkitError
from alignkit.stage_lanes import Job, check_jobs, next_ready, run_lanes


class _Proc:
    """A fake child that exits with ``code`` after ``polls`` polls; records when it was terminated."""

    def __init__(self, polls, code, clock):
        self.left, self.code, self.clock = polls, code, clock
        self.terminated = False

    def poll(self):
        if self.terminated:
            return -15
        self.left -= 1
        return self.code if self.left <= 0 else None

    def terminate(self):
        self.terminated = True

    def wait(self):
        return -15


def _run(jobs, lanes, durations, codes=None, done=()):
    """Run ``jobs`` with fake children; returns (result, events): ("start"|"end", name, tick)."""
    events, procs, tick = [], {}, [0]

    def spawn(job):
        optional = {j.name for j in jobs if j.optional}
        for name, proc in procs.items():  # a started job's predecessors have all exited (with 0 unless optional)
            if name in job.after:
                assert proc.left <= 0 and (proc.code == 0 or name in optional)
        events.append(("start", job.name, tick[0]))
        procs[job.name] = _Proc(durations[job.name], (codes or {}).get(job.name, 0), tick)
        return procs[job.name]

    def sleep(_):
        tick[0] += 1

    stage_lanes.time.sleep, saved = sleep, stage_lanes.time.sleep
    try:
        result = run_lanes(jobs, lanes, log_dir=Path("logs"), done=set(done), spawn=spawn, say=lambda line: None)
    finally:
        stage_lanes.time.sleep = saved
    return result, events, procs


def test_two_lanes_run_ready_jobs_side_by_side_in_list_order():
    jobs = [
        Job("sft", ("train", "sft")),
        Job("rm", ("train", "rm")),
        Job("ppo", ("train", "ppo"), after=("sft", "rm")),
        Job("dpo", ("train", "dpo"), after=("sft", "rm")),
        Job("kto", ("train", "kto"), after=("dpo",)),
    ]
    result, events, procs = _run(jobs, 2, {"sft": 3, "rm": 1, "ppo": 5, "dpo": 1, "kto": 1})
    assert result.failed is None and set(result.seconds) == {"sft", "rm", "ppo", "dpo", "kto"}
    started = [(name, t) for kind, name, t in events]
    # rm ends first, but ppo and dpo need sft too: nothing new starts until sft ends at tick 3
    assert started == [("sft", 0), ("rm", 0), ("ppo", 3), ("dpo", 3), ("kto", 4)]


def test_one_lane_runs_jobs_one_at_a_time():
    jobs = [Job("a", ("x",)), Job("b", ("y",)), Job("c", ("z",), after=("a",))]
    _, events, _ = _run(jobs, 1, {"a": 2, "b": 2, "c": 1})
    assert [(name, t) for _, name, t in events] == [("a", 0), ("b", 2), ("c", 4)]


def test_a_failure_stops_the_other_lane_and_starts_nothing_new():
    jobs = [Job("a", ("x",)), Job("b", ("y",)), Job("c", ("z",))]
    result, events, procs = _run(jobs, 2, {"a": 1, "b": 10, "c": 1}, codes={"a": 3})
    assert (result.failed, result.exit_code, result.stopped) == ("a", 3, ["b"])
    assert procs["b"].terminated and "c" not in procs


def test_an_optional_job_failing_is_reported_and_the_rest_goes_on():
    jobs = [Job("warm", ("-m", "w"), optional=True), Job("b", ("y",), after=("warm",))]
    result, _, procs = _run(jobs, 2, {"warm": 1, "b": 1}, codes={"warm": 1})
    assert result.failed is None and result.skipped == ["warm"] and "b" in result.seconds


def test_finished_jobs_count_as_done_dependencies():
    result, events, _ = _run([Job("dpo", ("t",), after=("sft",))], 2, {"dpo": 1}, done={"sft"})
    assert result.failed is None and events[0][1] == "dpo"


@pytest.mark.parametrize(
    "jobs, message",
    [
        ([Job("a", ("x",), after=("zz",))], "'a' waits for 'zz', which is neither a job nor finished"),
        ([Job("a", ("x",), after=("b",)), Job("b", ("y",))], "'a' waits for 'b', which is listed after it"),
        ([Job("a", ("x",)), Job("a", ("y",))], "'a' is listed twice"),
    ],
)
def test_bad_job_lists_fail_before_anything_runs(jobs, message):
    with pytest.raises(AlignkitError, match=message):
        check_jobs(jobs)


def test_next_ready_and_lane_threads():
    jobs = [Job("a", ("x",)), Job("b", ("y",), after=("a",))]
    assert next_ready(jobs, set(), set()).name == "a"
    assert next_ready(jobs, set(), {"a"}) is None
    assert next_ready(jobs, {"a"}, {"a"}).name == "b"
    assert stage_lanes.lane_threads(2, 2) == 1 and stage_lanes.lane_threads(2, 8) == 4
    assert stage_lanes.lane_threads(3, 1) == 1


def test_a_real_child_runs_with_its_share_of_threads_and_logs_its_output(tmp_path):
    job = Job("probe", ("-c", "import os, sys; print('threads', os.environ['OMP_NUM_THREADS'], sys.argv)"))
    assert stage_lanes._spawn(job, tmp_path / "logs", threads=1).wait() == 0
    assert "threads 1" in (tmp_path / "logs" / "probe.log").read_text()
    failing = Job("bad", ("-c", "import sys; print('boom'); sys.exit(3)"))
    assert stage_lanes._spawn(failing, tmp_path / "logs", threads=1).wait() == 3
    assert "boom" in (tmp_path / "logs" / "bad.log").read_text()
