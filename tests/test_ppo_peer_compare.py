"""bench/ppo_peer/compare.py: each arm is re-measured only from a side-by-side pair; the other arm's rows, section
and the hand-written reading are kept, and the kept arm names the run it comes from."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "bench" / "ppo_peer"))

import compare  # noqa: E402
from benchlib import validate_result  # noqa: E402


def _run(start: float, per_update: float, rss: float, reward: float) -> dict:
    marks = [start + i * per_update for i in range(7)]
    return {
        "update_seconds": [per_update] * 6,
        "update_marks": marks,
        "peak_rss_mib": rss,
        "train_seconds": marks[-1] - marks[0],
        "reward_curve": [reward] * 6,
        "kl_curve": [0.1] * 6,
        "settings": {"rollout": 16},
        "probe": {
            "seconds": {"train": 6 * per_update},
            "cpu_seconds": {"train": 3 * per_update},
            "calls": {"train/optimizer_step": 24},
            "marks": [["imports done", 1.0, 600.0, 1.5], ["trainer built", 2.0, 700.0, 1.6]],
            "top": {"rss_mib": rss, "t": 3.0, "phase": "train/backward"},
        },
    }


def _old_report(tmp_path: Path) -> tuple[Path, Path]:
    md = tmp_path / "ppo_peer.md"
    md.write_text(
        compare.TITLE + "\n\nArm: fp32 on both sides (the headline). Old tables.\n\n"
        "## Reading (by hand, 2026-12-01)\n\nhand notes\n"
    )
    row = {"goal": "<= 0.8", "measured": None, "unit": "", "met": None, "verdict_statistic": "s", "note": "old"}
    record = {
        "schema": "alignkit-bench-result/1",
        "bench": "ppo_peer",
        "command": "old compare",
        "date": "2026-12-01 09:25",
        "cpu": {"model": "OLD CPU"},
        "threads": 1,
        "statistics": {},
        "figures": [{**row, "figure": "ppo_peer.seconds_per_update"}, {**row, "figure": "ppo_peer.peak_rss"}],
    }
    (tmp_path / "ppo_peer.json").write_text(json.dumps(record))
    return md, tmp_path / "ppo_peer.json"


def test_like_for_like_arm_added_and_headline_kept(tmp_path):
    md, js = _old_report(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "alignkit-fullvalue.json").write_text(json.dumps(_run(100.0, 40.0, 3000.0, 0.25)))
    (out / "trl112.json").write_text(json.dumps(_run(101.0, 100.0, 6000.0, 0.25)))
    argv = ["--result", str(md), "--out", str(out)]
    assert compare.main(argv) == 0
    record = json.loads(js.read_text())
    assert validate_result(record) == []
    figs = {f["figure"]: f for f in record["figures"]}
    old = figs["ppo_peer.seconds_per_update"]
    assert old["measured"] is None and old["date"] == "2026-12-01 09:25" and old["cpu"] == {"model": "OLD CPU"}
    assert figs["ppo_peer.ll.peak_rss"]["measured"] == 0.5 and figs["ppo_peer.ll.peak_rss"]["met"] is True
    assert figs["ppo_peer.ll.peak_rss"]["goal"] == "<= 0.6"
    speed = figs["ppo_peer.ll.seconds_per_update"]
    assert speed["goal"] == "<= 0.5" and speed["met"] is True and abs(speed["measured"] - 0.4) < 1e-9
    assert speed["date"] and speed["date"] != old["date"]  # a measured row names its own pair's date
    text = md.read_text()
    assert text.count(compare.KEPT) == 1 and "Old tables." in text and text.endswith("hand notes\n")
    assert text.index("Old tables.") < text.index("## Like for like") < text.index("## Reading")
    # Again: nothing doubles, and the kept headline rows still name their own run.
    assert compare.main(argv) == 0
    again = md.read_text()
    assert again.count(compare.KEPT) == 1 and again.count("## Like for like") == 1
    assert json.loads(js.read_text())["figures"][0]["date"] == "2026-12-01 09:25"


def test_a_pair_that_did_not_run_side_by_side_is_not_compared(tmp_path):
    md, js = _old_report(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "alignkit-fullvalue.json").write_text(json.dumps(_run(100.0, 40.0, 3000.0, 0.25)))
    (out / "trl112.json").write_text(json.dumps(_run(5000.0, 100.0, 6000.0, 0.25)))  # a later TRL run
    before = js.read_text()
    assert compare.main(["--result", str(md), "--out", str(out)]) == 1
    assert js.read_text() == before


def _curve_run(start: float, rewards: list[float]) -> dict:
    run = _run(start, 40.0, 3000.0, 0.0)
    run["reward_curve"] = rewards
    return run


def test_reward_curves_over_seeds_are_compared_and_kept(tmp_path):
    md, js = _old_report(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    # seed 0 (the headline pair) and seed 1: alignkit's last half (rollouts 4-6) beats TRL 1.12's by 0.2 and 0.0
    (out / "alignkit.json").write_text(json.dumps(_curve_run(100.0, [0.1, 0.2, 0.3, 0.4, 0.5, 0.6])))
    (out / "trl112.json").write_text(json.dumps(_curve_run(101.0, [0.1, 0.2, 0.3, 0.2, 0.3, 0.4])))
    (out / "alignkit-seed1.json").write_text(json.dumps(_curve_run(900.0, [0.0, 0.0, 0.0, 0.5, 0.5, 0.5])))
    (out / "trl112-seed1.json").write_text(json.dumps(_curve_run(901.0, [0.0, 0.0, 0.0, 0.5, 0.5, 0.5])))
    argv = ["--result", str(md), "--out", str(out)]
    assert compare.main(argv) == 0
    record = json.loads(js.read_text())
    assert validate_result(record) == []
    row = {f["figure"]: f for f in record["figures"]}["ppo_peer.seeds.reward_last_half_diff"]
    assert abs(row["measured"] - 0.1) < 1e-9 and row["met"] is None and "over 2 seeds" in row["label"]
    seeds = record["statistics"]["seeds"]
    assert seeds["seeds"] == [0, 1] and abs(seeds["last_half_diff_sd"] - 0.2 / 2**0.5) < 1e-9
    text = md.read_text()
    assert text.count(compare.SEEDS_HEADING) == 1 and text.endswith("hand notes\n")
    assert "| 4 | 0.450 ± 0.071 | 0.350 ± 0.212 |" in text  # rollout 4: alignkit (0.4, 0.5), TRL (0.2, 0.5)
    # Seed 1's files gone (the next bench run only re-ran the headline pair): seed 1 is kept from the JSON.
    (out / "alignkit-seed1.json").unlink()
    (out / "trl112-seed1.json").unlink()
    assert compare.main(argv) == 0
    again = json.loads(js.read_text())["statistics"]["seeds"]
    assert again["seeds"] == [0, 1] and abs(again["last_half_diff_mean"] - 0.1) < 1e-9
    assert md.read_text().count(compare.SEEDS_HEADING) == 1


def test_a_seed_pair_that_did_not_run_side_by_side_is_left_out(tmp_path):
    md, js = _old_report(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "alignkit.json").write_text(json.dumps(_curve_run(100.0, [0.1] * 6)))
    (out / "trl112.json").write_text(json.dumps(_curve_run(101.0, [0.1] * 6)))
    (out / "alignkit-seed1.json").write_text(json.dumps(_curve_run(900.0, [0.5] * 6)))
    (out / "trl112-seed1.json").write_text(json.dumps(_curve_run(9000.0, [0.0] * 6)))  # ran hours later
    assert compare.main(["--result", str(md), "--out", str(out)]) == 0
    record = json.loads(js.read_text())
    assert "seeds" not in record["statistics"]
    assert compare.SEEDS_HEADING not in md.read_text()


def test_like_for_like_curves_over_seeds_use_the_headline_trl_runs(tmp_path):
    # TRL 1.12's side is the same command in both arms, so a like-for-like seed pairs alignkit-fullvalue-seed<N> with
    # the headline's trl112-seed<N>, side by side or not; its time and memory ratios are then not compared.
    md, js = _old_report(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "alignkit-fullvalue.json").write_text(json.dumps(_curve_run(100.0, [0.1, 0.2, 0.3, 0.4, 0.4, 0.4])))
    (out / "trl112.json").write_text(json.dumps(_curve_run(101.0, [0.1, 0.2, 0.3, 0.2, 0.2, 0.2])))
    (out / "alignkit-fullvalue-seed1.json").write_text(json.dumps(_curve_run(5000.0, [0.3] * 6)))
    (out / "trl112-seed1.json").write_text(json.dumps(_curve_run(900.0, [0.2] * 6)))  # ran hours before
    assert compare.main(["--result", str(md), "--out", str(out)]) == 0
    record = json.loads(js.read_text())
    assert validate_result(record) == []
    ll = record["statistics"]["ll_seeds"]
    # last halves: seed 0 0.4 vs 0.2 (+0.2), seed 1 0.3 vs 0.2 (+0.1) -> mean +0.15
    assert ll["seeds"] == [0, 1] and abs(ll["last_half_diff_mean"] - 0.15) < 1e-9
    assert ll["per_seed"]["1"]["seconds_per_update_ratio"] is None and ll["per_seed"]["0"]["peak_rss_ratio"]
    row = {f["figure"]: f for f in record["figures"]}["ppo_peer.ll.seeds.reward_last_half_diff"]
    assert "like for like" in row["label"] and abs(row["measured"] - 0.15) < 1e-9
    text = md.read_text()
    assert text.count(compare.SEEDS_HEADINGS["ll"]) == 1 and "| 1 | 0.300 | 0.200 | +0.100 | - | - |" in text
    # A like-for-like seed that did run beside its TRL 1.12 run gets its time and memory ratios too.
    (out / "alignkit-fullvalue-seed2.json").write_text(json.dumps(_run(700.0, 40.0, 3000.0, 0.3)))
    (out / "trl112-seed2.json").write_text(json.dumps(_run(701.0, 100.0, 6000.0, 0.2)))
    assert compare.main(["--result", str(md), "--out", str(out)]) == 0
    seed2 = json.loads(js.read_text())["statistics"]["ll_seeds"]["per_seed"]["2"]
    assert seed2["peak_rss_ratio"] == 0.5 and abs(seed2["seconds_per_update_ratio"] - 0.4) < 1e-9
    # Again with seed 1's files gone: kept from the JSON, and the section is not doubled.
    (out / "alignkit-fullvalue-seed1.json").unlink()
    assert compare.main(["--result", str(md), "--out", str(out)]) == 0
    assert json.loads(js.read_text())["statistics"]["ll_seeds"]["seeds"] == [0, 1, 2]
    assert md.read_text().count(compare.SEEDS_HEADINGS["ll"]) == 1
