"""Suites parse into dataclasses that reject unknown keys in one line; metrics, judges and prompt sources are looked
up by name, and an unknown name lists the known ones. No model is loaded here."""

import json

import pytest

from alignkit.errors import AlignkitError
from alignkit.eval.judges import GraderJudge, Judgement, PairwiseLLMJudge, judge_pairs
from alignkit.eval.metric_base import Metric
from alignkit.eval.registries import JUDGES, METRICS, PROMPT_SOURCES, Registry
from alignkit.eval.suite import load_suite


@pytest.fixture
def suite_file(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hi."}]}]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = f"""
name: t
prompt_sets:
  - {{name: chat, card: {tmp_path / "chat.jsonl"}}}
generation: {{max_new_tokens: 4}}
metrics:
  rm_score: {{reward_model: "run:rm-x"}}
  perplexity: {{heldout: {{card: {tmp_path / "chat.jsonl"}}}, reference_model: base}}
  win_rate: {{judges: [rm, grader], tie_band: 0.1}}
lm_eval: {{tasks: []}}
"""

    def write(mutate=lambda s: s):
        path = tmp_path / "suite.yaml"
        path.write_text(mutate(text))
        return path

    return write


def test_suite_parses_into_dataclasses(suite_file):
    suite = load_suite(str(suite_file()))
    assert list(suite.metrics) == ["rm_score", "perplexity", "win_rate", "lm_eval"]  # registry order, not file order
    assert suite.metric("perplexity").heldout.max_samples == 64  # nested dataclass, defaults filled in
    assert suite.metric("win_rate").tie_band == 0.1 and suite.metric("win_rate").judges == ["rm", "grader"]
    assert suite.prompt_sets[0].source == "file" and suite.metric("diversity") is None
    suite.limit(2)
    assert suite.prompt_sets[0].max_prompts == 2 and suite.metric("perplexity").heldout.max_samples == 2
    assert suite.required_runs() == []  # no train_missing: a missing rm is skipped with a note, not trained


@pytest.mark.parametrize(
    "mutate, match",
    [
        (
            lambda s: s.replace("reference_model: base", "reference_modle: base"),
            "unknown key 'reference_modle' in 'metrics.perplexity'",
        ),
        (
            lambda s: s.replace("}, reference_model", ", max_sample: 3}, reference_model"),
            "unknown key 'max_sample' in 'metrics.perplexity.heldout'",
        ),
        (lambda s: s.replace("tie_band: 0.1", "tie_bnd: 0.1"), "unknown key 'tie_bnd' in 'metrics.win_rate'"),
        (lambda s: s.replace("tasks: []", "task: []"), "unknown key 'task' in 'lm_eval'"),
        (lambda s: s.replace("max_new_tokens: 4", "max_tokens: 4"), "unknown key 'max_tokens' in 'generation'"),
        (lambda s: s.replace("win_rate:", "lm_eval: {}\n  win_rate:"), "unknown key 'lm_eval' in 'metrics'"),
        (
            lambda s: s.replace("name: chat,", "name: chat, source: hub,"),
            r"prompt_sets\[0\]: unknown prompt source 'hub' \(known: card, file\)",
        ),
        (
            lambda s: s.replace('{reward_model: "run:rm-x"}', "{batch_size: 4}"),
            "'metrics.rm_score' needs a 'reward_model'",
        ),
        (lambda s: s.replace("[rm, grader]", "[rm, gpt4]"), r"unknown judge 'gpt4' \(known: grader, llm, rm\)"),
        (lambda s: s.replace("max_new_tokens: 4", "max_new_tokens: 0"), "'generation.max_new_tokens' must be >= 1"),
        # a typo in a boolean would read as true; a count of rows must be a whole number >= 1 (top_k may be 0)
        (
            lambda s: s.replace("max_new_tokens: 4", "max_new_tokens: 4, do_sample: maybe"),
            "'generation.do_sample' must be true or false, got 'maybe'",
        ),
        (
            lambda s: s.replace("}, reference_model", ", max_samples: 0}, reference_model"),
            r"'metrics\.perplexity\.heldout\.max_samples' must be >= 1, got 0",
        ),
        (
            lambda s: s.replace("max_new_tokens: 4", "max_new_tokens: 4.5"),
            "'generation.max_new_tokens' must be a whole number, got 4.5",
        ),
        (lambda s: s.replace("max_new_tokens: 4", "max_new_tokens: 4, top_k: -1"), "'generation.top_k' must be >= 0"),
    ],
)
def test_bad_suite_keys_are_one_line_naming_key_and_file(suite_file, mutate, match):
    path = suite_file(mutate)
    with pytest.raises(AlignkitError, match=match) as err:
        load_suite(str(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_counts_that_may_be_zero_are_accepted(suite_file):
    # top_k 0 (off) and seed 0 are values, not counts: the >= 1 rule of count fields leaves them alone
    suite = load_suite(
        str(suite_file(lambda s: s.replace("max_new_tokens: 4", "max_new_tokens: 4, top_k: 0, seed: 0")))
    )
    assert suite.generation.top_k == 0 and suite.generation.seed == 0 and suite.generation.max_new_tokens == 4


def test_unknown_names_list_the_known_ones():
    for registry, kind, known in [
        (METRICS, "metric", "diversity, lm_eval, perplexity, preference, rm_score, win_rate"),
        (JUDGES, "judge", "grader, llm, rm"),
        (PROMPT_SOURCES, "prompt source", "card, file"),
    ]:
        with pytest.raises(AlignkitError) as err:
            registry.get("nope")
        assert str(err.value) == f"unknown {kind} 'nope' (known: {known})"


def test_a_registered_metric_is_a_suite_key(suite_file):
    from dataclasses import dataclass

    registry = Registry("thing")
    registry.register("a")(len)
    with pytest.raises(AlignkitError, match="thing 'a' is already registered"):
        registry.register("a")(max)

    @dataclass
    class ToyOptions:
        weight: float = 1.0

    class ToyMetric(Metric):
        options = ToyOptions

    METRICS.register("toy")(ToyMetric)
    try:
        suite = load_suite(str(suite_file(lambda s: s.replace("metrics:\n", "metrics:\n  toy: {weight: 2}\n"))))
        assert suite.metric("toy") == ToyOptions(2.0) and list(suite.metrics)[-1] == "toy"
    finally:
        del METRICS._entries["toy"]


def test_llm_judge_votes_in_both_orders_inside_the_judge():
    # a judge that always prefers the first slot: the two orders never agree, so every verdict is a tie
    judge = PairwiseLLMJudge(lambda prompt, first, second: 1)
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}]
    result = judge_pairs(judge, [chat, "2+2?"], ["Hi!", "4"], ["No.", "5"])
    assert result.verdicts == [0, 0] and result.extras == {"order_agreement": 0.0}
    assert "position bias" in result.notes[0]
    seen = []
    fair = PairwiseLLMJudge(lambda prompt, first, second: seen.append(prompt) or (1 if first in ("Hi!", "4") else 2))
    result = judge_pairs(fair, [chat, "2+2?"], ["Hi!", "4"], ["No.", "5"])
    assert result == Judgement([1, 1], {"order_agreement": 1.0}, [])
    assert seen[0] == "Say hi."  # chat prompts are shown to the judge as their transcript


def test_judge_pairs_takes_plain_judges_too():
    from alignkit.plugins.graders import get_grader

    result = judge_pairs(GraderJudge(get_grader("math_answer")), ["1+1?", "2+2?"], ["2", "5"], ["3", "4"], ["2", "4"])
    assert result == Judgement([1, -1])
