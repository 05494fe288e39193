"""The report's honesty rules on hand-made report dicts (no model): dead metrics, the goals table, judges beside win
rates, judged replies."""

import math
import types

import pytest

from alignkit.eval.goals import Goals, goal_table, status
from alignkit.eval.report import metrics_json, render_markdown
from alignkit.eval.report_rows import UNIT, cannot_move, cannot_move_metrics, undefined_metrics


def _judge(model="run:rm-judge-smol", saw=False, same=False, acc=0.78):
    return {
        "name": "rm",
        "model": model,
        "kind": "reward model",
        "trained": True,
        "same_as_proxy": same,
        "heldout_accuracy": {
            "value": acc,
            "n": 32,
            "ci_low": 0.6,
            "ci_high": 0.9,
            "card": "judge-card",
            "split": "test",
        },
        "saw_training_prompts": saw,
        "saw_training_detail": "disjoint: 96 vs 128" if saw is False else "shares 3",
        "shared_prompt_texts": 0 if saw is not True else 3,
        "held_out": saw is False and not same,
    }


def _report(win=0.70, ci_low=0.55, lc=0.58, ppl=(2.5, 3.0), d2=(0.5, 0.45), length=(100.0, 120.0), cut=(0.1, 0.25),
            judge=None, pref=(0.0, 0.0), looping=None):  # fmt: skip
    """base (start) vs dpo (trained) on a chat set and a graded arith set."""

    def model(i):
        chat = {
            "length_tokens": {"mean": length[i], "ci_low": length[i], "ci_high": length[i]},
            "truncated_rate": cut[i],
            "diversity": {"distinct_1": 0.3, "distinct_2": d2[i]},
        }
        if looping is not None:  # with the loop stop on, truncated_rate = limit_rate + looping_rate
            chat["looping_rate"] = looping[i]
            chat["limit_rate"] = round(cut[i] - looping[i], 6)
        arith = {"truncated_rate": 0.0, "grader_accuracy": {"mean": 0.0, "ci_low": 0.0, "ci_high": 0.0}}
        return {
            "sets": {"chat": chat, "arith": arith},
            "perplexity_heldout": {"perplexity": ppl[i], "ci_low": ppl[i], "ci_high": ppl[i]},
            "preference": {
                "length_normalized": {"value": pref[i], "ci_low": 0.0, "ci_high": 0.0, "mean_margin": -0.5 + i * 0.1},
                "implicit_reward": {"accuracy": {"value": 0.6, "ci_low": 0.4, "ci_high": 0.8}}
                if i
                else {"undefined": "not a DPO policy"},
            },
        }

    wr = {"n": 64, "wins": 40, "ties": 10, "losses": 14, "win_rate": win, "ci_low": ci_low, "ci_high": 0.8}
    grader = {"n": 16, "wins": 1, "ties": 15, "losses": 0, "win_rate": 0.53, "ci_low": 0.5, "ci_high": 0.6}
    return {
        "created": "now",
        "suite": {"name": "smol", "path": "eval/suites/smol.yaml"},
        "models": [{"name": "base", "base": "b"}, {"name": "dpo", "base": "b", "adapter": "a", "trainer": "dpo"}],
        "prompt_sets": [
            {"name": "chat", "card": "c", "split": "test", "n": 64, "graded": False},
            {"name": "arith", "card": "a", "split": "test", "n": 16, "graded": True},
        ],
        "generation": {"max_new_tokens": 64, "do_sample": False, "batch_size": 64, "seed": 0},
        "metrics": {"base": model(0), "dpo": model(1)},
        "win_rates": {
            "dpo vs base": {
                "chat": {"rm": {"raw": wr, "lc": {"lc_win_rate": lc, "ci_low": 0.4, "ci_high": 0.7}, "judge": judge}},
                "arith": {
                    "rm": {
                        "raw": grader,
                        "lc": {"lc_win_rate": 0.5, "ci_low": 0.5, "ci_high": 0.5},
                        "judge": judge,
                        "agreement_with_grader": {"value": 0.125, "n": 16, "decisive_value": 1.0, "decisive_n": 1},
                    },
                    "grader": {"raw": grader, "lc": {"lc_win_rate": 0.5, "ci_low": 0.5, "ci_high": 0.5}},
                },
            }
        },
        "samples": [],
        "notes": [],
        "timing_s": {"total": 1.0},
    }


def test_cannot_move_needs_identical_values_at_a_bound():
    assert "lower bound (0)" in cannot_move([0.0, 0.0], UNIT)
    assert "upper bound (1)" in cannot_move([1.0, 1.0, 1.0], UNIT)
    assert cannot_move([0.0, 0.1], UNIT) is None  # it moved
    assert cannot_move([0.4, 0.4], UNIT) is None  # identical, but inside the range: it could have moved
    assert cannot_move([0.0], UNIT) is None  # one model: nothing compared
    assert cannot_move([0.0, None], UNIT) is None and cannot_move([0.0, math.nan], UNIT) is None
    assert cannot_move([0.0, 0.0], None) is None  # rows without a range (truncation, RM score) are never flagged


def test_dead_metrics_leave_the_tables_with_their_reason_and_undefined_ones_read_na():
    report = _report(judge=_judge())
    dead = cannot_move_metrics(report)
    assert {(d["metric"], d["prompt_set"]) for d in dead} == {
        ("Grader accuracy", "arith"),  # 0.000 for both
        ("Preference accuracy, length-normalized logp", None),  # 0.000 for both: the issue-12 case
    }
    assert [(u["metric"], u["model"]) for u in undefined_metrics(report)] == [  # the implicit reward of the base
        ("Preference accuracy, DPO implicit reward", "base"),
        ("DPO implicit reward margin", "base"),
    ]
    md = render_markdown(report, [])
    tables, _, tail = md.partition("## Metrics that cannot move here")
    assert "Preference accuracy, length-normalized logp |" not in tables and "Grader accuracy |" not in tables
    assert "Preference margin, length-normalized logp" in tables  # the margin moved (-0.5 -> -0.4): it stays
    assert "cannot move here: identical for every compared model and at its lower bound (0)" in tail
    assert "| Preference accuracy, DPO implicit reward | n/a | 0.600 [0.400, 0.800] |" in tables
    assert "undefined for `base` (shown as n/a): not a DPO policy" in tail
    report["metrics"]["dpo"]["preference"]["length_normalized"]["value"] = 0.25  # now it moved
    assert "Preference accuracy, length-normalized logp |" in render_markdown(report, [])


def test_goals_met_and_missed_on_hand_numbers():
    goals = goal_table(_report(judge=_judge()))
    assert goals["comparison"] == "dpo vs base" and goals["prompt_set"] == "chat"  # the ungraded set
    figures = goals["figures"]
    assert figures["win_rate"] == 0.70 and figures["win_ci_low"] == 0.55 and figures["lc_win_rate"] == 0.58
    assert figures["ppl_ratio"] == pytest.approx(3.0 / 2.5)  # 1.2
    assert figures["distinct2_ratio"] == pytest.approx(0.45 / 0.5)  # 0.9, exactly the bar
    assert figures["length_ratio"] == pytest.approx(1.2)  # 120 / 100, exactly the bar
    assert figures["truncation"] == 0.25  # the worse of 0.10 and 0.25
    by_key = {r["key"]: r["status"] for r in goals["rows"]}
    assert by_key == {
        "win_rate": "met",  # 0.70 >= 0.65
        "win_ci_low": "met",  # 0.55 > 0.5
        "lc_win_rate": "missed",  # 0.58 < 0.60
        "ppl_ratio": "missed",  # 1.2 > 1.15
        "distinct2_ratio": "met",  # 0.9 >= 0.9
        "length_ratio": "met",  # 1.2 <= 1.2
        "truncation": "missed",  # 0.25 >= 0.20
    }
    assert (goals["met"], goals["of"]) == (4, 7)
    assert status(0.5, ">", 0.5) == "missed" and status(None, ">=", 0.65) == "unknown"
    assert Goals(ppl_ratio=1.25).checks()[3][3] == 1.25  # the thresholds live in one dataclass


def test_a_win_rate_goal_met_by_a_judge_that_is_not_held_out_is_unverified():
    for judge, why in [
        (_judge(model="run:rm-smol", same=True), "is the proxy"),
        (_judge(saw=True), "saw training prompts"),
        (_judge(saw=None), "unknown"),
    ]:
        rows = {r["key"]: r for r in goal_table(_report(judge=judge))["rows"]}
        assert rows["win_rate"]["status"] == "unverified" and why in rows["win_rate"]["why"]
        assert rows["lc_win_rate"]["status"] == "missed"  # a miss is a miss, whoever judged
        assert rows["ppl_ratio"]["status"] == "missed"  # not a judge's figure
    no_judge = goal_table({**_report(), "win_rates": {}})
    assert {r["key"]: r["status"] for r in no_judge["rows"]}["win_rate"] == "unknown"


def test_goals_reach_report_md_metrics_json_and_every_win_rate_names_its_judge():
    report = {**_report(judge=_judge()), "run_dir": "runs/dpo"}
    md = render_markdown(report, [])
    assert "## Does alignment work?" in md and "| LC win rate | 0.580 | >= 0.6 | **missed** |" in md
    assert "| Win rate vs start (held-out judge) | 0.700 | >= 0.65 | met |" in md
    row = next(line for line in md.splitlines() if line.startswith("| dpo vs base | chat | rm: `run:rm-judge-smol`"))
    assert "| no | 0.780 [0.600, 0.900] (n=32, `judge-card` test) | 0.700 [0.550, 0.800] |" in row
    arith = next(line for line in md.splitlines() if line.startswith("| dpo vs base | arith | rm:"))
    assert "with grader 0.125 (n=16), 1.000 where the grader decides (n=1)" in arith
    assert "Caveat" not in md
    flat = metrics_json(report)
    assert flat["goals"]["win_rate"] == 0.70 and flat["goals_status"]["lc_win_rate"] == "missed"
    assert flat["win_rate"]["chat/rm/judge_heldout_accuracy"] == 0.78
    assert flat["win_rate"]["chat/rm/judge_saw_training_prompts"] is False

    proxy = render_markdown(_report(judge=_judge(model="run:rm-smol", same=True, saw=True)), [])
    assert "rm: `run:rm-smol` (**= proxy**) | **yes** (3 prompts)" in proxy
    assert "**Caveat: the rm judge `run:rm-smol` is the same model as the proxy" in proxy
    assert "**Caveat: judge `run:rm-smol` saw training prompts of `dpo vs base`" in proxy
    unknown = render_markdown(_report(judge=_judge(model="/models/rm", saw=None)), [])
    assert "rm: `/models/rm` | unknown |" in unknown
    knows = render_markdown(_report(judge={**_judge(), "eval_prompts_in_judge_training": 2}), [])
    assert "**Caveat: judge `run:rm-judge-smol` trained on 2 of the 64 `chat` prompts it judges here.**" in knows


def test_response_stats_count_looping_replies_only_when_the_generations_say():
    from alignkit.eval.metric_base import EvalContext
    from alignkit.eval.metric_responses import response_stats

    gen = types.SimpleNamespace(n_tokens=[3, 64, 64, 10], truncated=[False, True, True, False])
    looped = types.SimpleNamespace(**vars(gen), looping=[False, False, True, True])
    specs = [types.SimpleNamespace(name="old"), types.SimpleNamespace(name="new")]
    suite = types.SimpleNamespace(generation=types.SimpleNamespace(stop_loops=True))
    ctx = EvalContext(suite=suite, specs=specs, data={"chat": types.SimpleNamespace(references=None)}, runs_root=".")
    ctx.gens = {"old": {"chat": gen}, "new": {"chat": looped}}
    response_stats(ctx)
    assert ctx.set_metrics("old", "chat")["truncated_rate"] == 0.5 and "looping_rate" not in ctx.set_metrics(
        "old", "chat"
    )
    assert ctx.set_metrics("new", "chat")["looping_rate"] == 0.5


def test_judged_replies_show_truncation_per_model_and_set_and_looping_when_present():
    md = render_markdown(_report(judge=_judge()), [])
    assert "## Judged replies: share cut at max_new_tokens (max_new_tokens=64)" in md
    assert "| base | 10% | 0% |" in md and "| dpo | 25% | 0% |" in md
    looping = render_markdown(_report(judge=_judge(), looping=(0.05, 0.0)), [])
    assert "share cut at max_new_tokens / stopped as looping" in looping
    assert "| base | 5% / 5% | 0% / – |" in looping  # cut at the limit (10% did not end, 5% of them looping)
