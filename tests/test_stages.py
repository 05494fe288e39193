"""`alignkit pipeline` (make pipeline), the skeleton: each stage's state (reuse a finished run, resume an interrupted
one, train a missing one), the methods start from run:sft-smol, and a failed stage stops the rest."""

import json

import alignkit.cli
from alignkit.cli import main


def test_pipeline_reuses_resumes_trains_and_stops_at_a_failed_stage(tmp_path, monkeypatch, capsys):
    runs = tmp_path / "runs"
    (runs / "sft-smol").mkdir(parents=True)
    (runs / "sft-smol" / "run.json").write_text(json.dumps({"status": "finished"}))
    (runs / "rm-smol.partial").mkdir()
    assert main(["pipeline", "--runs-root", str(runs), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "sft-smol: reuse\n" in out
    assert f"rm-smol: resume: alignkit train rm-smol output_dir={runs / 'rm-smol'} --no-eval --resume" in out
    for recipe in ("dpo-smol", "kto-smol", "simpo-smol", "grpo-smol-adaptive-kl"):
        assert f"{recipe}: train: alignkit train {recipe} model_name_or_path=run:sft-smol" in out, recipe
    assert "ppo-smol-chat: train: alignkit train ppo-smol-chat output_dir=" in out  # its recipe starts from SFT
    assert f"report: alignkit eval smollm2-135m-instruct --compare {runs / 'sft-smol'} {runs / 'dpo-smol'}" in out
    assert f"report: alignkit eval {runs / 'sft-smol'} --compare {runs / 'dpo-smol'}" in out  # methods vs SFT
    assert f"--out {runs / 'vs-sft'}" in out and f"--out {runs / 'vs-base'}" in out

    calls = []
    monkeypatch.setattr(alignkit.cli, "main", lambda argv: calls.append(argv) or (2 if argv[1] == "kto-smol" else 0))
    assert main(["pipeline", "--runs-root", str(runs)]) == 2
    assert [argv[1] for argv in calls] == ["rm-smol", "dpo-smol", "kto-smol"]  # sft reused; stopped at the failure
    assert "stage kto-smol failed (exit 2); rerun to continue from it" in capsys.readouterr().out


def test_pipeline_ends_with_one_report_of_every_stage(tmp_path, monkeypatch, capsys):
    from test_pipeline_report import _reports

    runs = tmp_path / "runs"
    vs_base, vs_sft = _reports()

    def fake(argv):
        out = argv[argv.index("--out") + 1] if "--out" in argv else None
        if argv[0] == "train":
            run_dir = runs / argv[1]
            run_dir.mkdir(parents=True)
            (run_dir / "run.json").write_text(
                json.dumps(
                    {"status": "finished", "train_seconds": 12.0, "global_step": 3, "model_name_or_path": "smollm2"}
                )
            )
        else:
            rep = vs_base if out.endswith("vs-base") else vs_sft
            (tmp_path / "runs" / out.rsplit("/", 1)[1]).mkdir(parents=True)
            (runs / out.rsplit("/", 1)[1] / "report.json").write_text(json.dumps(rep))
        return 0

    monkeypatch.setattr(alignkit.cli, "main", fake)
    assert main(["pipeline", "--runs-root", str(runs)]) == 0
    text = (runs / "report.md").read_text()
    assert "- `dpo-smol`: trained in 12 s, 3 steps, from run:sft-smol" in text
    assert "- `sft-smol`: trained in 12 s, 3 steps, from smollm2" in text  # the recipe's own start
    assert f"report: {runs / 'report.md'}" in capsys.readouterr().out
