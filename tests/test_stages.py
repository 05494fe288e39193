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
    assert f"--out {runs / 'vs-sft'}" in out

    calls = []
    monkeypatch.setattr(alignkit.cli, "main", lambda argv: calls.append(argv) or (2 if argv[1] == "kto-smol" else 0))
    assert main(["pipeline", "--runs-root", str(runs)]) == 2
    assert [argv[1] for argv in calls] == ["rm-smol", "dpo-smol", "kto-smol"]  # sft reused; stopped at the failure
    assert "stage kto-smol failed (exit 2); rerun to continue from it" in capsys.readouterr().out
