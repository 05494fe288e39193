"""lm-eval results merge into report.json and report.md: `alignkit eval` with a suite's lm_eval section on the tiny
model, with lm-eval's own `simple_evaluate` replaced by a fake that returns output in lm-eval's format (no real
lm-eval run), so the bridge, the metric and the report are all exercised on known numbers."""

import json

import pytest

lm_eval = pytest.importorskip("lm_eval")


def fake_lm_eval_output(tasks):
    """What lm_eval.simple_evaluate returns, trimmed to the keys alignkit reads: metrics keyed "<metric>,<filter>"
    with "<metric>_stderr,<filter>" beside them, and per-task sample counts."""
    return {
        "results": {
            t: {"alias": t, "acc,none": 0.75, "acc_stderr,none": 0.125, "exact_match,strict-match": 0.5,
                "exact_match_stderr,strict-match": "N/A"}
            for t in tasks
        },
        "n-samples": {t: {"original": 96, "effective": 4} for t in tasks},
        "samples": {t: ["not kept"] for t in tasks},
    }  # fmt: skip


def test_lm_eval_results_merge_into_the_report(tiny_model, tmp_path, monkeypatch):
    from alignkit.eval.command import main

    calls = []

    def fake_simple_evaluate(**kwargs):
        calls.append(kwargs)
        return fake_lm_eval_output(kwargs["tasks"])

    monkeypatch.setattr(lm_eval, "simple_evaluate", fake_simple_evaluate)
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    rows = [{"prompt": [{"role": "user", "content": f"Say {w}."}]} for w in ("hi", "bye")]
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        f"name: lm\nprompt_sets:\n  - {{name: p, card: '{tmp_path / 'p.jsonl'}', max_prompts: 2}}\n"
        "generation: {max_new_tokens: 2, batch_size: 2}\nmetrics: {}\n"
        "lm_eval: {tasks: [alignkit_arith_mc], limit: 4}\n"
    )
    out = tmp_path / "out"
    assert main([tiny_model, "--suite", str(suite), "--out", str(out)]) == 0

    assert len(calls) == 1 and calls[0]["model_args"]["pretrained"] == tiny_model and calls[0]["limit"] == 4
    report = json.loads((out / "report.json").read_text())
    (name,) = report["metrics"]
    task = report["metrics"][name]["lm_eval"]["alignkit_arith_mc"]
    assert task["acc"] == {"value": 0.75, "stderr": 0.125, "n": 4}
    assert task["exact_match,strict-match"] == {"value": 0.5, "stderr": None, "n": 4}  # "N/A" stderr -> None
    md = (out / "report.md").read_text()
    assert "## lm-eval" in md
    assert f"| {name} | alignkit_arith_mc | acc | 0.750 ± 0.125 |" in md
    assert f"| {name} | alignkit_arith_mc | exact_match,strict-match | 0.500 |" in md
