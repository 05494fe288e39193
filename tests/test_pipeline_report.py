"""runs/pipeline/report.md: one row per model with its win rates against the base and against SFT (raw and LC, with
CIs), judge score, perplexity, distinct-2, length and arithmetic accuracy, read from the two compare reports."""

import json

import pytest

from alignkit.errors import AlignkitError
from alignkit.pipeline_report import pipeline_rows, write_pipeline_report


def _metrics(score, ppl, d2, length, acc):
    return {
        "sets": {
            "chat": {
                "rm_judge_score": {"mean": score},
                "diversity": {"distinct_2": d2},
                "length_tokens": {"mean": length},
            },
            "arith": {"grader_accuracy": {"mean": acc}},
        },
        "perplexity_heldout": {"perplexity": ppl},
    }


def _win(rate, lo, hi, lc):
    return {
        "chat": {
            "rm": {
                "raw": {"win_rate": rate, "ci_low": lo, "ci_high": hi},
                "lc": {"lc_win_rate": lc, "ci_low": lc - 0.1, "ci_high": lc + 0.1},
                "judge": {"model": "run:rm-judge-smol"},
            }
        }
    }


def _reports():
    metrics = {
        "base": _metrics(0.10, 3.0, 0.40, 150.0, 0.125),
        "sft-smol": _metrics(0.20, 3.2, 0.45, 120.0, 0.25),
        "dpo-smol": _metrics(0.30, 3.3, 0.50, 100.0, 0.1875),
    }
    vs_base = {
        "suite": {"name": "smol"},
        "prompt_sets": [{"name": "chat", "n": 64}],
        "models": [{"name": "base"}, {"name": "sft-smol"}, {"name": "dpo-smol"}],
        "metrics": metrics,
        "win_rates": {"sft-smol vs base": _win(0.6, 0.5, 0.7, 0.58), "dpo-smol vs base": _win(0.75, 0.64, 0.85, 0.7)},
    }
    vs_sft = {
        "suite": {"name": "smol"},
        "models": [{"name": "sft-smol"}, {"name": "dpo-smol"}],
        "metrics": {k: metrics[k] for k in ("sft-smol", "dpo-smol")},
        "win_rates": {"dpo-smol vs sft-smol": _win(0.62, 0.51, 0.73, 0.55)},
    }
    return vs_base, vs_sft


def test_rows_take_each_comparison_from_its_report():
    rows = {r["model"]: r for r in pipeline_rows(*_reports())}
    assert list(rows) == ["base", "sft-smol", "dpo-smol"]
    assert rows["base"]["vs_base"] == {} and rows["base"]["vs_sft"] == {}
    assert rows["sft-smol"]["vs_base"]["raw"]["win_rate"] == 0.6 and rows["sft-smol"]["vs_sft"] == {}
    assert rows["dpo-smol"]["vs_sft"]["raw"]["win_rate"] == 0.62
    assert rows["dpo-smol"]["vs_base"]["lc"]["lc_win_rate"] == 0.7
    assert (rows["dpo-smol"]["perplexity"], rows["dpo-smol"]["arith_accuracy"]) == (3.3, 0.1875)


def test_report_files_are_written_together_and_name_the_judge(tmp_path):
    vs_base, vs_sft = _reports()
    for sub, rep in (("vs-base", vs_base), ("vs-sft", vs_sft)):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "report.json").write_text(json.dumps(rep))
    path = write_pipeline_report(tmp_path, {"dpo-smol": "trained in 300 s, 64 steps, from run:sft-smol"})
    text = path.read_text()
    assert "`run:rm-judge-smol`" in text and "on 64 held-out chat prompts" in text
    assert "| dpo-smol | 0.750 [0.64, 0.85] | 0.700 [0.60, 0.80] | 0.620 [0.51, 0.73] | 0.550 [0.45, 0.65] |" in text
    assert "| base | – | – | – | – | 0.100 | 3.00 | 0.400 | 150.0 | 0.125 |" in text
    assert "- `dpo-smol`: trained in 300 s" in text
    assert (tmp_path / "pipeline.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "report.json").read_text())["rows"][2]["model"] == "dpo-smol"


def test_a_missing_comparison_is_a_one_line_error_and_writes_nothing(tmp_path):
    (tmp_path / "vs-base").mkdir()
    (tmp_path / "vs-base" / "report.json").write_text(json.dumps(_reports()[0]))
    with pytest.raises(AlignkitError, match="vs-sft/report.json is missing"):
        write_pipeline_report(tmp_path)
    assert not (tmp_path / "report.md").exists()
