"""No bench rots: `make bench QUICK=1` (bench/run.py --quick) smoke-runs every benchmark on a tiny model into a
temporary directory and checks each wrote a result JSON of the schema; and every script in bench/ is listed in it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import run as bench_run  # noqa: E402


def test_every_bench_script_is_run_by_make_bench():
    # A new bench/*.py must be added to bench/run.py (or declared not a bench), so `make bench` runs every bench.
    scripts = {p.name for p in (ROOT / "bench").glob("*.py")} - bench_run.NOT_BENCHES
    listed = {script.split("/")[0] for script, *_ in bench_run.BENCHMARKS.values()}
    assert scripts - listed == set(), "add these to bench/run.py BENCHMARKS"
    no_smoke = {name for name, (_, _, quick, _) in bench_run.BENCHMARKS.items() if quick is None}
    assert no_smoke == set(bench_run.NO_QUICK), "a bench without a smoke run must say why in NO_QUICK"


def test_efficacy_aggregate_means_sds_and_reasons():
    import efficacy

    out = efficacy.aggregate(
        {"default_win_rate": [0.6, 0.7, 0.8], "ppo_accuracy_gain": [0.1, None, 0.3]}, {"rdpo_length_ratio": "why"}
    )
    assert set(k for k in out if not k.endswith(("_sd", "_reason"))) == set(efficacy.GOALS)  # exactly issue 12's keys
    # mean of 0.6, 0.7, 0.8 = 0.7; sample sd = sqrt(((-.1)^2 + 0 + .1^2) / 2) = 0.1
    assert out["default_win_rate"] == pytest.approx(0.7) and out["default_win_rate_sd"] == pytest.approx(0.1)
    assert out["ppo_accuracy_gain"] is None and "missing for some seeds" in out["ppo_accuracy_gain_reason"]
    assert out["rdpo_length_ratio"] is None and out["rdpo_length_ratio_reason"] == "why"
    assert out["make_seconds_reason"].startswith("not run")


def test_efficacy_keep_carries_only_figures_not_run_now():
    import efficacy

    previous = efficacy.aggregate({"default_win_rate": [0.6, 0.8], "rm_heldout_accuracy": [0.7, 0.9]}, {})
    old_cpu = {"model": "AMD EPYC", "flags_of_interest": ["avx512_bf16"], "cores": 2, "flags": ["fpu", "sse"]}
    previous["meta"] = {"command": "old", "date": "d0", "per_seed": {"rm_heldout_accuracy": [0.7, 0.9]}}
    previous["meta"]["cpu"] = old_cpu
    now = efficacy.aggregate({"default_win_rate": [0.5, 0.5]}, {"ppo_accuracy_gain": "failed"})
    carried = efficacy.carry_over(now, previous)
    assert now["default_win_rate"] == 0.5  # measured now: never replaced
    assert now["rm_heldout_accuracy"] == pytest.approx(0.8) and "rm_heldout_accuracy_reason" not in now
    # a carried figure keeps the CPU it was measured on (the results table shows it), not the new run's
    cpu = {"model": "AMD EPYC", "flags_of_interest": ["avx512_bf16"], "cores": 2}
    assert carried == {"rm_heldout_accuracy": {"command": "old", "date": "d0", "cpu": cpu, "per_seed": [0.7, 0.9]}}
    assert now["ppo_accuracy_gain"] is None and now["ppo_accuracy_gain_reason"] == "failed"  # a failure stays


def test_rm_heldout_accuracy_is_the_worse_of_proxy_and_judge_per_seed():
    import efficacy

    proxy, judge = [0.9, 0.7, None], [0.8, 0.75, 0.9]
    assert efficacy.worse_per_seed(proxy, judge) == [0.8, 0.7, None]
    assert efficacy.RM_RECIPES == ("rm-smol", "rm-judge-smol")
    lines = efficacy.render_rm_heldout({"rm-smol": [0.9, 0.7], "rm-judge-smol": [0.8, 0.75]})
    assert (
        lines[-1] == "`rm_heldout_accuracy` per seed is the worse of: rm-smol 0.900, 0.700 (mean 0.800); "
        "rm-judge-smol 0.800, 0.750 (mean 0.775)."
    )


def test_smoke_lanes_keep_a_reader_after_the_bench_it_reads():
    groups = bench_run.chains(["a", "eval_speed", "b", "eval_roofline", "c"])
    assert groups == [["a"], ["eval_speed", "eval_roofline"], ["b"], ["c"]]  # the list's order otherwise
    every = bench_run.chains(list(bench_run.BENCHMARKS))
    assert sorted(n for g in every for n in g) == sorted(bench_run.BENCHMARKS)  # each bench exactly once
    for reader, read in bench_run.AFTER.items():
        (lane,) = [g for g in every if reader in g]
        assert lane.index(read) < lane.index(reader)


def test_full_bench_runs_refuse_lanes(capsys):
    with pytest.raises(SystemExit):
        bench_run.main(["--lanes", "2", "--only", "omp_wait"])
    assert "full runs measure time" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.bench
def test_every_bench_smoke_runs():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("ALIGNKIT_BENCH_RESULTS", None)
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_each_cold_make_report_is_a_row_and_a_missing_one_shows_a_dash():
    import efficacy

    lines = efficacy.render_make_reports([{"seed": 0, "figures": {"win_rate": 0.6953, "lc_win_rate": 0.4938}}])
    assert lines[-1] == "| 0 | 0.695 | – | 0.494 | – | – | – |"
    assert efficacy.render_make_reports([]) == []


def test_rdpo_verdict_needs_both_length_and_win_rate():
    import efficacy

    # floor = 0.724 - 0.05 = 0.674
    ok = efficacy.rdpo_verdict(1.05, 0.68, 0.724)
    assert ok["met"] is True and ok["win_floor"] == pytest.approx(0.674)
    assert efficacy.rdpo_verdict(1.05, 0.67, 0.724)["met"] is False  # short enough, but worse than DPO - 0.05
    assert efficacy.rdpo_verdict(1.11, 0.80, 0.724)["met"] is False  # wins, but too long
    assert efficacy.rdpo_verdict(1.10, 0.674, 0.724)["met"] is True  # both bounds inclusive
    assert efficacy.rdpo_verdict(0.9, 0.7, None)["met"] is None  # no plain-DPO win rate: undecided, not guessed


def test_unlikelihood_ratios_and_verdict():
    import efficacy

    # 0.12 / 0.20 = 0.6; 5.2 / 5.0 = 1.04
    seed = efficacy.unlikelihood_seed(0.12, 0.20, 5.2, 5.0)
    assert seed == {"repetition_ratio": pytest.approx(0.6), "ppl_ratio": pytest.approx(1.04)}
    assert efficacy.unlikelihood_seed(0.1, 0.0, 5.0, 5.0)["repetition_ratio"] is None  # no repetition to divide by
    assert efficacy.unlikelihood_verdict(0.6, 1.04)["met"] is True
    assert efficacy.unlikelihood_verdict(0.9, 1.0)["met"] is False  # strict: < 0.9
    assert efficacy.unlikelihood_verdict(0.5, 1.06)["met"] is False  # perplexity up by more than 5 %
    assert efficacy.unlikelihood_verdict(0.5, 0.94)["met"] is False  # "within 5 %" both ways
    assert efficacy.unlikelihood_verdict(None, 1.0)["met"] is None


def test_kl_combines_parts_worst_per_seed_without_training():
    import efficacy

    now = {"dpo": efficacy.kl_part([0, 1, 2], [0.9, 0.5, 1.0], "rdpo now", "d2")}
    old_format = {  # an efficacy.json of the earlier code: bare per-seed lists, seeds in meta
        "meta": {
            "seeds": [0, 1, 2],
            "command": "ppo run",
            "date": "d0",
            "details": {"kl_parts": {"ppo": [0.8, 0.9, 0.7]}},
        }
    }
    newer = {"meta": {"details": {"kl_parts": {"grpo": efficacy.kl_part([0, 1, 2], [1.0, 0.95, 0.85], "grpo", "d1")}}}}
    details, per_seed, reasons = {"kl_parts": now}, {}, {}
    earlier = [efficacy.previous_kl_parts(old_format), efficacy.previous_kl_parts(newer)]
    efficacy.combine_kl({"kl"}, [0, 1, 2], details, per_seed, reasons, earlier)
    assert per_seed["kl_in_band_fraction"] == [0.8, 0.5, 0.7]  # min over (ppo, grpo, dpo) per seed
    assert details["kl_parts"]["ppo"]["command"] == "ppo run" and details["kl_parts"]["dpo"]["date"] == "d2"
    # a part measured now wins over an earlier file's
    efficacy.combine_kl({"kl"}, [0], details := {"kl_parts": dict(now)}, per_seed := {}, {}, [{"dpo": {}}])
    assert details["kl_parts"]["dpo"]["command"] == "rdpo now"
    # a missing part: null with the reason, nothing trained
    per_seed, reasons = {}, {}
    efficacy.combine_kl({"kl"}, [0, 1, 2], {"kl_parts": now}, per_seed, reasons, [])
    assert "kl_in_band_fraction" not in per_seed and "ppo, grpo" in reasons["kl_in_band_fraction"]
    # a seed that one part lacks stays None
    parts = {n: efficacy.kl_part([0, 1], [0.9, 0.9], "c", "d") for n in efficacy.KL_PARTS}
    assert efficacy.kl_worst_per_seed(parts, [0, 1, 2]) == [0.9, 0.9, None]


def test_kl_group_alone_trains_nothing(monkeypatch, tmp_path):
    import efficacy

    def no_run(*args, **kwargs):
        raise AssertionError("the kl group must not train")

    monkeypatch.setattr(efficacy, "alignkit", no_run)
    monkeypatch.setattr(efficacy, "rl_efficacy", no_run)
    per_seed, reasons, details = efficacy.measure({"kl"}, [0, 1, 2], tmp_path, {}, quick=False)
    assert per_seed == {} and details["kl_parts"] == {}


def test_rl_seeds_run_two_at_once_on_distinct_cores_in_seed_order(monkeypatch):
    import os
    import threading
    import time

    import efficacy

    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two usable cores")
    lock, running, calls = threading.Lock(), [0], []

    def fake(recipe, seed, env, quick, core=None):
        with lock:
            running[0] += 1
            calls.append((seed, core, running[0]))
        time.sleep(0.2 if seed == 0 else 0.05)  # seed 0 finishes last: results must still come back in seed order
        with lock:
            running[0] -= 1
        return {"accuracy_gain": seed / 10}

    monkeypatch.setattr(efficacy, "rl_efficacy", fake)
    stats = efficacy.rl_efficacy_seeds("ppo-smol", [0, 1, 2], {}, False, jobs=2)
    assert [st["accuracy_gain"] for st in stats] == [0.0, 0.1, 0.2]
    assert max(n for _, _, n in calls) == 2  # two at once, never three
    cores = dict((seed, core) for seed, core, _ in calls)
    assert cores[0] != cores[1] and cores[2] == cores[1]  # seed 2 takes the core seed 1 freed; seed 0 still holds its
    assert efficacy.rl_efficacy_seeds("ppo-smol", [3], {}, False, jobs=1) == [{"accuracy_gain": 0.3}]
    assert calls[-1][1] is None  # jobs=1: not pinned


def _fake_alignkit(calls, rep, ppl, kl_target=0.2, kl_readings=(0.1, 0.1, 0.2, 0.21, 0.3)):
    """Stands in for the alignkit CLI: ``train`` makes the run directory (with a train_log and resolved_config for
    the KL band, and report.json goal figures unless --no-eval), ``eval`` writes a report.json of the real layout."""
    import json

    def run(args, env):
        calls.append(args)
        if args[0] == "train":
            run_dir = Path(next(a.split("=", 1)[1] for a in args if a.startswith("output_dir=")))
            run_dir.mkdir(parents=True)
            (run_dir / "resolved_config.json").write_text(json.dumps({"training": {"kl_target": kl_target}}))
            (run_dir / "train_log.jsonl").write_text(
                "".join(json.dumps({"kl_implicit": k}) + "\n" for k in kl_readings)
            )
            if "--no-eval" not in args:
                figures = {"length_ratio": 0.8, "win_rate": 0.7}
                (run_dir / "report.json").write_text(json.dumps({"goals": {"figures": figures}}))
            return 0
        out = Path(args[args.index("--out") + 1])
        out.mkdir(parents=True)
        names = ["sft-smol", "sft-smol-unlikelihood"]
        metrics = {
            n: {
                "sets": {"chat": {"diversity": {"repetition_rate": rep[n]}}},
                "perplexity_heldout": {"perplexity": ppl[n]},
            }
            for n in names
        }
        (out / "report.json").write_text(json.dumps({"models": [{"name": n} for n in names], "metrics": metrics}))
        return 0

    return run


def test_unlikelihood_group_compares_the_two_runs_in_one_eval(monkeypatch, tmp_path):
    import efficacy

    calls = []
    rep, ppl = {"sft-smol": 0.2, "sft-smol-unlikelihood": 0.1}, {"sft-smol": 5.0, "sft-smol-unlikelihood": 5.1}
    monkeypatch.setattr(efficacy, "alignkit", _fake_alignkit(calls, rep, ppl))
    per_seed, reasons, details = efficacy.measure({"unlikelihood"}, [0, 1], tmp_path, {}, quick=False)
    assert per_seed["unlikelihood_repetition_ratio"] == [pytest.approx(0.5)] * 2  # 0.1 / 0.2
    assert details["unlikelihood_ppl_ratio"] == [pytest.approx(1.02)] * 2  # 5.1 / 5.0
    trained = [a[1] for a in calls if a[0] == "train"]
    assert trained == ["sft-smol", "sft-smol"] + ["sft-smol-unlikelihood"] * 2
    evals = [a for a in calls if a[0] == "eval"]
    assert len(evals) == 2 and all(a[a.index("--suite") + 1] == "smol-repetition" for a in evals)
    assert evals[0][1].endswith("sft-smol-seed0") and evals[0][3].endswith("sft-smol-unlikelihood-seed0")


def test_rdpo_group_reads_its_runs_and_its_own_kl_target(monkeypatch, tmp_path):
    import efficacy

    calls = []
    # readings 0.1, 0.1, 0.2, 0.21, 0.3: last half = the last 5 // 2 (0.21, 0.3); the run's kl_target 0.2: 1 in band
    monkeypatch.setattr(efficacy, "alignkit", _fake_alignkit(calls, {}, {}, kl_target=0.2))
    per_seed, reasons, details = efficacy.measure({"rdpo"}, [0], tmp_path, {}, quick=False, origin=("cmd", "d"))
    assert [a[1] for a in calls] == ["dpo-smol-rdpo"] and "--no-eval" not in calls[0]
    assert per_seed["rdpo_length_ratio"] == [0.8] and details["rdpo_win_rate"] == [0.7]
    assert details["kl_parts"]["dpo"] == efficacy.kl_part([0], [0.5], "cmd", "d")
    # the verdict against a plain-DPO win rate carried from an earlier efficacy.json
    data = efficacy.aggregate(per_seed, reasons)
    data["default_win_rate"] = 0.724
    carried = {"default_win_rate": {"command": "default run", "date": "d0"}}
    verdict = efficacy.compound_verdicts(data, details, {"rdpo"}, carried, None)["rdpo_length_ratio"]
    assert verdict["met"] is True and verdict["default_win_rate_from"] == "`default run` (d0)"  # 0.7 >= 0.674


def test_smol_repetition_suite_reports_what_the_unlikelihood_figure_reads():
    from alignkit.eval.suite import load_suite

    cut, smol = load_suite("smol-repetition"), load_suite("smol")
    assert cut.metrics["diversity"].repetition_n == 3  # the 3-gram rate of issue 12
    assert cut.metrics["perplexity"].heldout is not None
    assert cut.generation == smol.generation  # same decoding: the replies (and their cache) are smol's
    assert [p for p in cut.prompt_sets if p.name == "chat"] == [p for p in smol.prompt_sets if p.name == "chat"]


def test_reuse_finished_takes_finished_runs_and_trains_the_rest(monkeypatch, tmp_path):
    import json

    import efficacy

    calls = []
    monkeypatch.setattr(efficacy, "alignkit", _fake_alignkit(calls, {}, {}, kl_target=0.2))
    done = tmp_path / "dpo-smol-rdpo-seed0"  # finished and evaluated: reused
    done.mkdir()
    (done / "run.json").write_text(json.dumps({"status": "finished"}))
    (done / "resolved_config.json").write_text(json.dumps({"training": {"kl_target": 0.2}}))
    (done / "train_log.jsonl").write_text(json.dumps({"kl_implicit": 0.2}) + "\n")
    (done / "report.json").write_text(json.dumps({"goals": {"figures": {"length_ratio": 0.75, "win_rate": 0.6}}}))
    # seed 1 has no run yet: trained
    per_seed, _, details = efficacy.measure({"rdpo"}, [0, 1], tmp_path, {}, quick=False, reuse=True)
    assert [a[2] for a in calls if a[0] == "train"] == ["seed=1"]
    assert per_seed["rdpo_length_ratio"][0] == 0.75 and details["rdpo_win_rate"][0] == 0.6
    calls.clear()
    with pytest.raises(FileExistsError):  # without reuse the fake trainer meets the existing directory
        efficacy.measure({"rdpo"}, [0], tmp_path, {}, quick=False)


def test_ppo_efficacy_reports_both_readings_noise_over_the_last_half():
    import ppo_efficacy

    rollouts = [{"kl": 0.1, "kl/seq_se": 9.0, "kl/in_reward_seq_se": 9.0}]  # first half: left out
    rollouts += [{"kl": 0.5, "kl/seq_se": se, "kl/in_reward_seq_se": 2 * se} for se in (0.04, 0.06)]
    rollouts.insert(1, {"kl": 0.2, "kl/seq_se": 9.0, "kl/in_reward_seq_se": 9.0})
    out = ppo_efficacy.reading_noise(rollouts)
    assert out == {
        "kl_reading_se_last_half": pytest.approx(0.05),
        "kl_in_reward_se_last_half": pytest.approx(0.10),
    }
    assert ppo_efficacy.reading_noise([{"kl": 0.01}, {"kl": 0.02}]) == {}  # GRPO logs neither


def test_ppo_efficacy_reads_k3_beside_an_analytic_reading():
    import ppo_efficacy

    # 4 rollouts, target 0.5 (band 0.375-0.625): the last half is rollouts 3-4. The controller read 0.5, 0.55 (both
    # in band); k3 read 0.3, 0.7 (neither); rollout 4 fell back to k3 (no tail logged for it).
    rollouts = [
        {"kl": 0.0, "kl/k3": 0.0, "kl/analytic_tail": 0.5, "kl/analytic_missing": 0.0},
        {"kl": 0.2, "kl/k3": 0.25, "kl/analytic_tail": 0.5, "kl/analytic_missing": 0.0},
        {"kl": 0.5, "kl/k3": 0.3, "kl/analytic_tail": 0.02, "kl/analytic_missing": 0.0},
        {"kl": 0.55, "kl/k3": 0.7, "kl/analytic_missing": 1.0},
    ]
    out = ppo_efficacy.k3_beside_analytic(rollouts, 0.5)
    assert out["k3_kl_in_band_fraction"] == 0.0 and out["k3_kl_last_half_readings_in_band"] == "0/2"
    assert out["k3_kl_last_half_mean"] == pytest.approx(0.5)
    assert out["kl_analytic_tail_last_half"] == pytest.approx(0.02)
    assert out["kl_analytic_missing_rollouts"] == 1
    assert ppo_efficacy.band_summary([r["kl"] for r in rollouts], 0.5)["kl_in_band_fraction"] == 1.0
    assert ppo_efficacy.k3_beside_analytic([{"kl": 0.5}, {"kl": 0.4}], 0.5) == {}  # a k3 run logs no kl/k3
    summary = {"accuracy_gain": 0.1, "train_minutes": 1.0, "kl_in_band_fraction": 1.0, **out}
    row = ppo_efficacy.result(summary, "cmd", "2026-12-05", 1)["figures"][-1]
    assert row["met"] is True and row["also"][0]["measured"] == 0.0 and row["also"][0]["met"] is False
