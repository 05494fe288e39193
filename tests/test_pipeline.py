"""Prerequisite runs (alignkit.pipeline): a run a suite needs is trained once from its recipe, then reused; an
interrupted attempt is resumed; ``alignkit eval`` alone never trains, it names the command; eval never imports
training; ``alignkit train`` trains the suite's prerequisites before it evaluates."""

import json
import subprocess
import sys

import pytest

from alignkit.errors import AlignkitError
from alignkit.pipeline import RunNeed, ensure_runs, missing_runs


def test_a_missing_run_is_trained_once_then_reused_and_an_interrupted_one_resumes(rm_recipe, tmp_path, capsys):
    runs = tmp_path / "runs"
    need = RunNeed("rm-tiny", str(rm_recipe), "suite s.yaml: metrics.rm_score.train_missing", trainer="reward")
    (runs / "rm-tiny.partial").mkdir(parents=True)  # an earlier attempt was interrupted before its first checkpoint
    assert ensure_runs([need, need], runs) == [runs / "rm-tiny"]  # needed twice, trained once
    out = capsys.readouterr().out
    assert out.count("training recipe rm-tiny") == 1 and "resuming the interrupted attempt" in out
    assert json.loads((runs / "rm-tiny" / "run.json").read_text())["status"] == "finished"
    assert not (runs / "rm-tiny.partial").exists()
    assert ensure_runs([need], runs) == [] and capsys.readouterr().out == ""  # finished: reused, nothing trained


def test_recipe_problems_surface_before_anything_trains(rm_recipe, tmp_path):
    runs = tmp_path / "runs"
    with pytest.raises(AlignkitError, match="where: recipe '.*rm-tiny.yaml' trains 'reward', not dpo"):
        missing_runs([RunNeed("x", str(rm_recipe), "where", trainer="dpo")], runs)
    with pytest.raises(AlignkitError, match="unknown recipe 'no-such-recipe'"):
        missing_runs([RunNeed("x", "no-such-recipe", "where")], runs)
    assert not runs.exists()


def test_eval_alone_names_the_train_command_in_one_line(tiny_model, tmp_path):
    from alignkit.eval import command

    suite = tmp_path / "suite.yaml"
    rows = [{"prompt": "Say hi."}]
    (tmp_path / "p.jsonl").write_text(json.dumps(rows[0]) + "\n")
    suite.write_text(
        f"prompt_sets: [{{name: p, card: {tmp_path / 'p.jsonl'}}}]\n"
        "metrics: {rm_score: {reward_model: 'run:rm-smol', train_missing: true}}\n"
    )
    runs = tmp_path / "runs"
    with pytest.raises(AlignkitError) as err:
        command.main([tiny_model, "--suite", str(suite), "--runs-root", str(runs), "--out", str(tmp_path / "o")])
    message = str(err.value)
    assert "\n" not in message and "needs run:rm-smol" in message and "--train-missing" in message
    assert f"`alignkit train rm-smol output_dir={runs / 'rm-smol'}`" in message
    assert not runs.exists() and not (tmp_path / "o").exists()


def test_llm_judge_run_is_a_prerequisite(tmp_path):
    from alignkit.eval.suite import load_suite

    (tmp_path / "p.jsonl").write_text('{"prompt": "Hi"}\n')
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        f"prompt_sets: [{{name: p, card: {tmp_path / 'p.jsonl'}}}]\n"
        "metrics: {win_rate: {judges: [llm], llm_judge: 'run:judge-smol'}}\n"
    )
    assert load_suite(str(suite)).required_runs() == [
        RunNeed("judge-smol", "judge-smol", f"suite {suite}: metrics.win_rate.llm_judge")
    ]
    assert RunNeed("rm-smol", "rm-smol", "x").train_command("runs") == "alignkit train rm-smol"


def test_eval_never_imports_training():
    code = (
        "import sys\n"
        "import alignkit.eval.command, alignkit.eval.harness\n"
        "from alignkit.eval.registries import METRICS\n"
        "METRICS.names()\n"  # imports every built-in metric and judge
        "assert 'alignkit.train' not in sys.modules, 'eval imported alignkit.train'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_alignkit_train_trains_the_suites_runs_before_it_evaluates(monkeypatch, tmp_path):
    import alignkit.eval.command
    import alignkit.pipeline
    import alignkit.train
    from alignkit.cli import main

    calls = []
    monkeypatch.setattr(alignkit.train, "train", lambda recipe, **kw: calls.append("train") or tmp_path / "dpo-smol")
    monkeypatch.setattr(alignkit.pipeline, "ensure_runs", lambda needs, root: calls.append(("ensure", needs, root)))
    monkeypatch.setattr(alignkit.eval.command, "main", lambda argv: calls.append("eval") or 0)
    assert main(["train", "dpo-smol"]) == 0
    assert calls[0] == "train" and calls[2] == "eval"
    _, needs, root = calls[1]
    assert [(n.name, n.recipe, n.trainer) for n in needs] == [
        ("rm-smol", "rm-smol", "reward"),  # the proxy (metrics.rm_score)
        ("rm-judge-smol", "rm-judge-smol", "reward"),  # the held-out judge (win_rate.rm_judge)
    ] and root == tmp_path
