"""bench/ppo_peer/compare.py: each arm is re-measured only from a side-by-side pair; the other arm's rows, section
and the hand-written reading are kept, and the kept arm names the run it comes from."""

from __future__ import annotations

import json
import statistics
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


def test_kl_split_and_completion_lengths_over_seeds_when_every_seed_recorded_them(tmp_path):
    # TRL 1.12 leaves SmolLM2's EOS (= its pad) out of its KL; run_alignkit.py records alignkit's KL on TRL 1.12's
    # tokens and at EOS, and the seeds table shows both beside the totals. Both runners record completion lengths.
    md, js = _old_report(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    for seed, start, peer_tokens in ((0, 100.0, 0.1), (1, 900.0, 0.3)):
        ours = _curve_run(start, [0.2] * 6)
        ours["kl_peer_tokens_curve"], ours["kl_eos_curve"] = [peer_tokens] * 6, [0.5] * 6
        peer = _curve_run(start + 1, [0.2] * 6)
        # completions: alignkit's shorten, every one ending with EOS; TRL 1.12's stay at the length limit
        ours["length_curve"], ours["eos_rate_curve"] = [16 - 2 * i - seed for i in range(6)], [1.0] * 6
        peer["length_curve"], peer["eos_rate_curve"] = [16.0] * 6, [0.0] * 6
        (out / f"{compare.seeded('alignkit-fullvalue', seed)}.json").write_text(json.dumps(ours))
        (out / f"{compare.seeded('trl112', seed)}.json").write_text(json.dumps(peer))
    assert compare.main(["--result", str(md), "--out", str(out)]) == 0
    rollouts = json.loads(js.read_text())["statistics"]["ll_seeds"]["per_rollout"]
    assert rollouts["kl_peer_tokens"][5] == [0.2, statistics.stdev([0.1, 0.3])] and rollouts["kl_eos"][0] == [0.5, 0]
    text = md.read_text()
    assert (
        "alignkit KL on TRL 1.12's tokens | alignkit KL at EOS |" in text
        and "| 0.200 ± 0.141 | 0.500 ± 0.000 |" in text
    )
    assert rollouts["length"][5] == {"alignkit": [5.5, statistics.stdev([6, 5])], "trl112": [16.0, 0.0]}
    # last-half KL on the same tokens: seed 0 0.1 vs 0.1, seed 1 0.3 vs 0.1 (TRL 1.12's kl_curve in _run is 0.1)
    ll = json.loads(js.read_text())["statistics"]["ll_seeds"]
    assert abs(ll["kl_last_half_diff_mean"] - 0.1) < 1e-9 and abs(ll["kl_last_half_diff_sd"] - 0.2 / 2**0.5) < 1e-9
    assert "Difference, mean ± sd over the seeds: +0.100 ± 0.141." in text
    assert "| 6 | 5.500 ± 0.707 | 16.000 ± 0.000 | 1.000 ± 0.000 | 0.000 ± 0.000 |" in text
    # One seed's run without the split (an older runner): no split columns, totals only.
    ours = json.loads((out / "alignkit-fullvalue-seed1.json").read_text())
    del ours["kl_peer_tokens_curve"], ours["kl_eos_curve"], ours["length_curve"]
    (out / "alignkit-fullvalue-seed1.json").write_text(json.dumps(ours))
    assert compare.main(["--result", str(md), "--out", str(out)]) == 0
    rollouts = json.loads(js.read_text())["statistics"]["ll_seeds"]["per_rollout"]
    assert "kl_peer_tokens" not in rollouts and "length" not in rollouts
    assert "KL at EOS" not in md.read_text()


def test_memory_floor_counts_each_parameter_once_and_gradients_of_trainable_ones_only():
    import torch
    from common import memory_floor_mib

    shared = torch.nn.Linear(16, 16)  # 272 floats, used twice: counted once
    frozen = torch.nn.Linear(16, 4)  # 68 floats, no gradient
    frozen.requires_grad_(False)
    model = torch.nn.ModuleDict({"a": shared, "b": shared, "frozen": frozen})
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    shared(torch.ones(2, 16)).sum().backward()
    optimizer.step()
    floor = {k: v * 2**20 for k, v in memory_floor_mib(model, optimizer).items()}
    assert floor["parameters"] == (272 + 68) * 4 and floor["gradients"] == 272 * 4
    # AdamW: two fp32 moments per trainable parameter, plus a scalar step count per parameter tensor
    assert 2 * 272 * 4 <= floor["optimizer_state"] <= 2 * 272 * 4 + 2 * 8


def test_peak_rss_is_set_against_the_floor_when_both_runs_recorded_it(tmp_path):
    md, js = _old_report(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    ours, peer = _run(100.0, 40.0, 3000.0, 0.2), _run(101.0, 100.0, 6000.0, 0.2)
    for run in (ours, peer):  # imports 600 MiB (the probe's first mark) + 1400 MiB -> a floor of 2000 MiB
        run["memory_floor_mib"] = {"parameters": 500.0, "gradients": 300.0, "optimizer_state": 600.0}
    (out / "alignkit-fullvalue.json").write_text(json.dumps(ours))
    (out / "trl112.json").write_text(json.dumps(peer))
    assert compare.main(["--result", str(md), "--out", str(out)]) == 0
    record = json.loads(js.read_text())
    assert record["statistics"]["ll"]["rss_floor_mib"] == [2000.0, 2000.0]
    row = {f["figure"]: f for f in record["figures"]}["ppo_peer.ll.peak_rss"]
    also = {a["statistic"].split(":")[0]: a["measured"] for a in row["also"]}
    assert abs(also["peak RSS above the floor, alignkit / TRL 1.12"] - 1000 / 4000) < 1e-12
    assert abs(next(v for k, v in also.items() if k.startswith("alignkit's floor")) - 2000 / 6000) < 1e-12
    assert "| alignkit | 600 | 700 | 3000 (train/backward) | 2000 | 1000 |" in md.read_text()
