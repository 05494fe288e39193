"""Side lane (alignkit.lanes): a run only the eval needs trains in a child process at one thread while this process
gives up one thread and takes it back when the child ends; a run training needs itself stays here; a failure is one
line naming the child's log; the child is stopped when this process fails; off with one thread or when asked."""

import json
import sys
import time

import pytest
import torch

from alignkit import lanes
from alignkit.pipeline import RunNeed, missing_runs


@pytest.fixture(autouse=True)
def two_threads(monkeypatch):
    monkeypatch.delenv("ALIGNKIT_SIDE_LANE", raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    lanes.finish(False)
    torch.set_num_threads(before)


def _need(recipe) -> RunNeed:
    return RunNeed("rm-tiny", str(recipe), "suite s.yaml: metrics.win_rate.rm_judge", trainer="reward")


def test_the_eval_only_run_trains_beside_and_the_thread_comes_back(rm_recipe, tmp_path, capsys):
    runs = tmp_path / "runs"
    lane = lanes.start([_need(rm_recipe)], [], runs)
    assert lane is not None and torch.get_num_threads() == 1  # one core left to the child
    lanes.finish(True)
    assert torch.get_num_threads() == 2
    assert json.loads((runs / "rm-tiny" / "run.json").read_text())["status"] == "finished"
    out = capsys.readouterr().out
    assert "side lane: training run:rm-tiny" in out and "side lane: done; back to 2 threads" in out
    assert "a second process at 1 thread(s) while this one runs at 1" in out
    log = (runs / lanes.LOG_DIR / "rm-tiny.log").read_text()
    assert "alignkit: recipe rm-tiny (reward)" in log  # the child's own output went to its log
    assert missing_runs([_need(rm_recipe)], runs) == []  # the eval finds it finished: nothing trains twice


def test_a_run_training_needs_itself_is_not_sent_beside(rm_recipe, tmp_path):
    assert lanes.start([_need(rm_recipe)], [_need(rm_recipe)], tmp_path / "runs") is None
    assert torch.get_num_threads() == 2 and not (tmp_path / "runs" / lanes.LOG_DIR).exists()


def test_off_with_one_thread_or_when_asked(rm_recipe, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    assert lanes.start([_need(rm_recipe)], [], tmp_path / "runs") is None  # OMP_NUM_THREADS=1: nothing to split
    torch.set_num_threads(2)
    monkeypatch.setenv("ALIGNKIT_SIDE_LANE", "0")
    assert lanes.start([_need(rm_recipe)], [], tmp_path / "runs") is None
    assert torch.get_num_threads() == 2


class _Scripted(lanes.SideLane):
    """A side lane whose child runs a Python snippet instead of `alignkit train`."""

    code = ""

    def command(self, run):
        return [sys.executable, "-c", self.code]


def _scripted(rm_recipe, tmp_path, code) -> lanes.SideLane:
    (pending,) = missing_runs([_need(rm_recipe)], tmp_path / "runs")
    lane = _Scripted([pending], tmp_path / "runs", 2)
    lane.code = code
    lane.start()
    return lane


def test_a_failed_side_run_is_one_line_naming_its_log(rm_recipe, tmp_path, capsys):
    code = "print('loading'); print('alignkit: error: card x: missing column y'); exit(3)"
    lane = _scripted(rm_recipe, tmp_path, code)
    assert lane.join() is False and torch.get_num_threads() == 2
    out = capsys.readouterr().out
    failed = [x for x in out.splitlines() if x.startswith("alignkit: side lane: run:")]
    assert len(failed) == 1, out
    (line,) = failed
    log = tmp_path / "runs" / lanes.LOG_DIR / "rm-tiny.log"
    assert line == (
        f"alignkit: side lane: run:rm-tiny failed (exit 3): alignkit: error: card x: missing column y; see {log}; "
        "it will be trained here when needed"
    )


def test_stop_ends_the_child_when_this_process_fails(rm_recipe, tmp_path, capsys):
    lane = _scripted(rm_recipe, tmp_path, "import time; time.sleep(120)")
    time.sleep(0.5)
    start = time.perf_counter()
    lane.stop()
    assert time.perf_counter() - start < 20 and lane._proc.poll() is not None
    assert torch.get_num_threads() == 2 and "side lane: run:" not in capsys.readouterr().out  # stopped, not failed


def test_threads_are_split_in_half(rm_recipe, tmp_path):
    (pending,) = missing_runs([_need(rm_recipe)], tmp_path / "runs")
    assert [lanes.SideLane([pending], tmp_path, n).side_threads for n in (2, 3, 16)] == [1, 1, 8]


def test_checkpoint_before_the_child_ends_keeps_one_thread(rm_recipe, tmp_path):
    lane = _scripted(rm_recipe, tmp_path, "import time; time.sleep(2)")
    lane.checkpoint()
    assert torch.get_num_threads() == 1 and not lane.restored
    assert lane.join() is True and torch.get_num_threads() == 2


def test_early_runs_train_first_and_wait_for_returns_once_each_is_finished(rm_recipe, tmp_path, capsys):
    runs = tmp_path / "runs"
    proxy = RunNeed("rm-proxy", str(rm_recipe), "dataset card c: scorer", trainer="reward")
    judge = _need(rm_recipe)
    lane = lanes.start([judge], [proxy], runs, early=[proxy])  # the proxy is this process's own need, sent early
    assert lane is not None and [run.need.name for run in lane.pending] == ["rm-proxy", "rm-tiny"]
    assert lanes.training("rm-proxy") and not lanes.training("other")
    assert lanes.wait_for("rm-proxy") is True
    assert json.loads((runs / "rm-proxy" / "run.json").read_text())["status"] == "finished"
    lanes.finish(True)
    assert missing_runs([proxy, judge], runs) == []
    assert lanes.wait_for("rm-proxy") is False  # no side lane any more


def test_wait_for_a_run_the_child_failed_returns_false(rm_recipe, tmp_path, capsys):
    lane = _scripted(rm_recipe, tmp_path, "exit(3)")
    assert lane.wait_for("rm-tiny") is False  # this process then trains it itself (ensure_runs)
    assert lane.failed[:2] == ("rm-tiny", 3) and torch.get_num_threads() == 2


class _Job:
    """An ``after`` job of the side lane (as lanes.BaselineEval) whose child runs a Python snippet."""

    name, suite = "baseline-eval", "s.yaml"

    def __init__(self, code: str):
        self.code = code

    def command(self, runs_root):
        return [sys.executable, "-c", self.code]


def _append(path, word: str) -> str:
    return f"open({str(path)!r}, 'a').write({word!r} + ' ')"


def test_the_start_models_eval_runs_after_the_runs_and_its_failure_is_only_reported(rm_recipe, tmp_path, capsys):
    order = tmp_path / "order.txt"
    (pending,) = missing_runs([_need(rm_recipe)], tmp_path / "runs")
    lane = _Scripted([pending], tmp_path / "runs", 2, after=[_Job(_append(order, "eval") + "; exit(4)")])
    lane.code = _append(order, "run")
    lane.start()
    assert lane.join() is True and lane.failed is None  # a failed warm-up costs time, not a run
    assert order.read_text().split() == ["run", "eval"]
    out = capsys.readouterr().out
    assert (
        "side lane: training run:rm-tiny (suite s.yaml: metrics.win_rate.rm_judge), then the start model's eval" in out
    )
    log = tmp_path / "runs" / lanes.LOG_DIR / "baseline-eval.log"
    failed = [line for line in out.splitlines() if "baseline-eval failed" in line]
    assert failed == [
        f"alignkit: side lane: baseline-eval failed (exit 4); see {log}; "
        "the eval computes the start model's half itself"
    ]


def test_the_start_models_eval_does_not_run_after_a_failed_run(rm_recipe, tmp_path, capsys):
    order = tmp_path / "order.txt"
    (pending,) = missing_runs([_need(rm_recipe)], tmp_path / "runs")
    lane = _Scripted([pending], tmp_path / "runs", 2, after=[_Job(_append(order, "eval"))])
    lane.code = _append(order, "run") + "; exit(3)"
    lane.start()
    assert lane.join() is False and order.read_text().split() == ["run"]


def test_a_lane_with_only_the_start_models_eval_starts(tmp_path, capsys):
    marker = tmp_path / "order.txt"
    lane = lanes.start([], [], tmp_path / "runs", after=[_Job(_append(marker, "eval"))])
    assert lane is not None and lane.pending == [] and torch.get_num_threads() == 1
    lanes.finish(True)
    assert marker.read_text().split() == ["eval"] and torch.get_num_threads() == 2
    out = capsys.readouterr().out
    assert "alignkit: side lane: the start model's eval (s.yaml) in a second process at 1 thread(s)" in out
    assert lanes.start([], [], tmp_path / "runs") is None  # nothing at all to run: no lane
