"""bench/results/RESULTS.md is generated from the result JSONs, and the README quotes only what they hold."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import make_results  # noqa: E402


def test_results_md_is_generated_from_the_jsons():
    # Regenerate and compare: a hand edit of RESULTS.md, or a JSON changed without rerunning make_results, fails.
    assert make_results.main(["--check"]) == 0, "run: .venv/bin/python bench/make_results.py"


def test_every_result_json_has_the_schema():
    from benchlib import validate_result

    for path in sorted((ROOT / "bench" / "results").glob("*.json")):
        data = json.loads(path.read_text())
        if path.stem == "efficacy":
            continue  # issue 12's flat keys; make_results.efficacy_record reads them (tested below)
        assert validate_result(data) == [], path.name
        assert data["bench"] == path.stem, path.name


def test_readme_numbers_are_in_the_results():
    readme = (ROOT / "README.md").read_text()
    assert make_results.readme_problems(readme, make_results.load_results()) == []


def test_readme_check_fails_on_a_number_no_result_holds():
    # The check must be able to fail: a figure typed into the README without a result behind it.
    readme = (ROOT / "README.md").read_text()
    section = make_results.README_SECTION
    typed = "\n\n- (`bench/eval_speed.py`) The engine is 7.77x faster and uses 41.37 % less memory.\n"
    bad = readme.replace(section, section + typed, 1)
    problems = make_results.readme_problems(bad, make_results.load_results())
    assert any("7.77x" in p for p in problems) and any("41.37%" in p for p in problems), problems
    # ... while names with digits (SmolLM2, fp32, 2-core), dates and code spans are not figures.
    assert make_results.quoted_numbers("SmolLM2 in fp32 on a 2-core CPU, 2026-12-01, `--n 256`, 1.5x") == ["1.5x"]
    # scientific notation is a figure too, checked at its own significant digits
    assert make_results.quoted_numbers("a gap of 3.95e-06, within 1e-4 nats") == ["3.95e-06", "1e-4"]
    assert make_results._rounds_to(3.9471e-06, "3.95e-06") and not make_results._rounds_to(3.9e-06, "3.95e-06")
    # a range quotes both its ends, each with the range's unit, and each is checked; a date is not a range
    assert make_results.quoted_numbers("read 0.59-0.78, 1.4–1.8x faster, 2026-12-04") == [
        "0.59",
        "0.78",
        "1.4x",
        "1.8x",
    ]
    ranged = readme.replace(section, section + "\n\n- (`bench/eval_speed.py`) from 4.248-9.99x faster.\n", 1)
    problems = make_results.readme_problems(ranged, make_results.load_results())
    assert len(problems) == 1 and "9.99x" in problems[0], problems


def test_readme_check_looks_a_number_up_only_in_the_benches_its_bullet_cites():
    # A number held by some other bench's JSON must not pass: session 19's README quoted "26 min", which had passed
    # only by matching an unrelated mfu number. Here 0.655 is ppo_peer's seconds-per-update ratio.
    records = make_results.load_results()
    section = "## Performance and efficacy\n\n"
    cited_elsewhere = section + "- **Eval** (`bench/eval_speed.py`): 4.248x faster and 0.655 of something.\n"
    problems = make_results.readme_problems(cited_elsewhere, records)
    assert len(problems) == 1 and "0.655" in problems[0] and "eval_speed" in problems[0], problems
    right_bench = section + "- **PPO** (`bench/ppo_peer/`): 0.655x its seconds per update.\n"
    assert make_results.readme_problems(right_bench, records) == []
    # A per-CPU-kind report (make_time_amx.md) stands for its bench family.
    family = section + "- **make** (`bench/results/make_time_amx.md`): 660.1 s, 2021.5 s on AVX2.\n"
    assert make_results.readme_problems(family, records) == []
    uncited = section + "- **Eval**: 4.248x faster.\n"
    assert any("cites no bench" in p for p in make_results.readme_problems(uncited, records))


def test_a_former_verdict_statistic_stays_in_the_table():
    # plugin_overhead switched statistic after DPO off missed on the ratio of medians: both must be shown.
    text = (ROOT / "bench" / "results" / "RESULTS.md").read_text()
    row = next(line for line in text.splitlines() if "`plugin_overhead.dpo.off`" in line)
    assert "ratio of median step times" in row and "(missed)" in row


def test_render_marks_missed_unmeasured_and_goal_free_rows():
    fig = {"figure": "b.f", "label": "F", "goal": ">= 2x", "measured": 1.5, "unit": "x", "met": False}
    rec = {"bench": "b", "command": "cmd | pipe", "date": "d", "cpu": {"model": "M", "flags_of_interest": []}}
    none = {**fig, "figure": "b.g", "measured": None, "met": None, "note": "not re-measured: x.md"}
    free = {**fig, "figure": "b.h", "goal": "none", "met": None}
    for f in (fig, none, free):
        f["verdict_statistic"] = "s"
    text = make_results.render([{**rec, "figures": [fig, none, free]}])
    lines = {line.split("`")[1]: line for line in text.splitlines() if line.startswith("| F (")}
    assert "**missed**" in lines["b.f"] and "1.500x" in lines["b.f"] and "cmd \\| pipe" in lines["b.f"]
    assert "not measured" in lines["b.g"] and "not re-measured: x.md" in lines["b.g"]
    assert "– (no goal)" in lines["b.h"]
    assert "no result yet" in text  # expected benches without a JSON are listed


def test_a_figure_kept_from_an_earlier_run_shows_that_run():
    # ppo_peer keeps an arm it did not re-measure: that row names its own command, date and CPU.
    rec = {"bench": "b", "command": "new", "date": "today", "cpu": {"model": "NEW"}}
    fig = {"figure": "b.f", "label": "F", "goal": "<= 1", "measured": 0.5, "unit": "x", "met": True}
    old = {**fig, "figure": "b.g", "command": "old", "date": "before", "cpu": {"model": "OLD"}}
    for f in (fig, old):
        f["verdict_statistic"] = "s"
    text = make_results.render([{**rec, "figures": [fig, old]}])
    lines = {line.split("`")[1]: line for line in text.splitlines() if line.startswith("| F (")}
    assert lines["b.f"].endswith("| `new` | today | NEW |")
    assert lines["b.g"].endswith("| `old` | before | OLD |")


def test_efficacy_flat_json_becomes_rows():
    data = {
        "default_win_rate": 0.7,
        "default_win_rate_sd": 0.05,
        "make_seconds": None,
        "make_seconds_sd": None,
        "make_seconds_reason": "not run: pass --make",
        "meta": {
            "command": "c",
            "date": "d",
            "cpu": {"model": "M"},
            "threads": 2,
            "n_seeds": 3,
            "goals": {"default_win_rate": ">= 0.65", "make_seconds": "<= 600"},
        },
    }
    rows = {f["figure"]: f for f in make_results.efficacy_record(data)["figures"]}
    assert rows["efficacy.default_win_rate"]["met"] is True and rows["efficacy.default_win_rate"]["sd"] == 0.05
    assert rows["efficacy.make_seconds"]["met"] is None
    assert rows["efficacy.make_seconds"]["note"] == "not run: pass --make"


def test_a_carried_efficacy_figure_names_the_run_that_measured_it():
    data = {
        "default_win_rate": 0.7,
        "ppo_accuracy_gain": 0.08,
        "meta": {
            "command": "efficacy.py --figures default",
            "date": "today",
            "cpu": {"model": "M"},
            "threads": 1,
            "n_seeds": 3,
            "goals": {"default_win_rate": ">= 0.65", "ppo_accuracy_gain": ">= 0.20"},
            "carried_from": {"ppo_accuracy_gain": {"command": "efficacy.py --figures ppo", "date": "yesterday"}},
        },
    }
    text = make_results.render([make_results.efficacy_record(data)])
    lines = {line.split("`")[1]: line for line in text.splitlines() if "efficacy." in line}
    assert "`efficacy.py --figures ppo` | yesterday |" in lines["efficacy.ppo_accuracy_gain"]
    assert "`efficacy.py --figures default` | today |" in lines["efficacy.default_win_rate"]


def test_a_per_cpu_kind_result_counts_for_its_bench_and_kinds_do_not_collide():
    # make_time keeps one result per CPU kind: an AVX2-only run must not overwrite the AMX figure, and a kind's file
    # (make_time_no_bf16) stands for the bench, so no "no result yet" row appears beside it.
    import make_time
    from benchlib import cpu_kind

    names = {make_time.result_name("make_time", cpu_kind(flags)) for flags in (["avx2"], ["avx512_bf16", "amx_bf16"])}
    assert names == {"make_time_no_bf16", "make_time_amx"}
    rec = {"bench": "make_time_no_bf16", "command": "c", "date": "d", "cpu": {"model": "M", "flags_of_interest": []}}
    text = make_results.render([{**rec, "figures": []}])
    assert "(`make_time`) | see the bench | no result yet" not in text
    assert "(`pipeline_time`) | see the bench | no result yet" in text  # a bench with no file of any kind is listed


def test_tolerance_sized_figures_are_not_printed_as_zero():
    # a gradient 3.95e-06 of its norm apart must not read "0.000" in the table; ordinary figures keep 3 decimals
    assert make_results.fmt_number(3.95e-06) == "3.95e-06"
    assert make_results.fmt_number(0.657, "x") == "0.657x" and make_results.fmt_number(0.0) == "0.000"
    assert make_results.fmt_number(2021.5, "s") == "2021.5 s"
