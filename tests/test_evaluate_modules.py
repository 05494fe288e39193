"""Local ``evaluate`` modules load offline and return exactly what the direct alignkit functions return."""

from __future__ import annotations

import math

import pytest

from alignkit.errors import AlignkitError
from alignkit.eval.diversity import distinct_n, self_bleu
from alignkit.eval.metrics import MODULES, module_path
from alignkit.eval.winrate import length_controlled_win_rate

evaluate = pytest.importorskip("evaluate")

RESPONSES = [
    "The cat sat on the mat.",
    "The cat sat on a mat!",
    "Dogs run fast, very fast.",
    "A completely different answer about the weather today.",
    "the cat sat",
]


@pytest.fixture(scope="module", params=MODULES)
def loaded(request):
    return request.param, evaluate.load(module_path(request.param))


def test_modules_load_offline(loaded):
    name, module = loaded
    assert isinstance(module, evaluate.Metric)
    assert module.name == name


@pytest.mark.parametrize("n", [1, 2, 3])
def test_distinct_n_matches_direct(n):
    module = evaluate.load(module_path("distinct_n"))
    direct = distinct_n(RESPONSES, n)
    got = module.compute(predictions=RESPONSES, n=n)
    assert got == {f"distinct_{n}": direct["corpus"], f"distinct_{n}_per_response": direct["per_response"]}
    assert 0.0 < got[f"distinct_{n}"] <= 1.0


def test_distinct_n_batches_accumulate():
    module = evaluate.load(module_path("distinct_n"))
    module.add_batch(predictions=RESPONSES[:2])
    module.add_batch(predictions=RESPONSES[2:])
    assert module.compute(n=2)["distinct_2"] == distinct_n(RESPONSES, 2)["corpus"]


def test_self_bleu_matches_direct():
    module = evaluate.load(module_path("self_bleu"))
    assert module.compute(predictions=RESPONSES)["self_bleu"] == self_bleu(RESPONSES)
    assert module.compute(predictions=RESPONSES, max_n=2)["self_bleu"] == self_bleu(RESPONSES, max_n=2)
    assert self_bleu(RESPONSES, max_n=2) != self_bleu(RESPONSES)  # the kwarg reached the function


def test_self_bleu_error_passes_through():
    module = evaluate.load(module_path("self_bleu"))
    with pytest.raises(AlignkitError, match="at least 2 responses"):
        module.compute(predictions=["only one"])


def test_lc_win_rate_matches_direct():
    verdicts = [1, -1, 0, 1, 1, -1, 1, 0, 1, -1]
    len_a = [120, 80, 100, 150, 140, 60, 170, 95, 130, 70]
    len_b = [100, 90, 100, 90, 100, 100, 110, 100, 100, 90]
    module = evaluate.load(module_path("lc_win_rate"))
    got = module.compute(verdicts=verdicts, len_a=len_a, len_b=len_b, n_resamples=200, seed=3)
    direct = length_controlled_win_rate(verdicts, len_a, len_b, n_resamples=200, seed=3)
    assert got.keys() == direct.keys()
    for key, value in direct.items():
        assert got[key] == value or (math.isnan(got[key]) and math.isnan(value)), key


def test_lc_win_rate_prob_scale():
    probs = [0.9, 0.2, 0.5, 0.7]
    len_a, len_b = [10, 30, 20, 50], [20, 20, 20, 20]
    module = evaluate.load(module_path("lc_win_rate"))
    got = module.compute(verdicts=probs, len_a=len_a, len_b=len_b, scale="prob", n_resamples=50)
    assert got == length_controlled_win_rate(probs, len_a, len_b, scale="prob", n_resamples=50)


def test_unknown_module_name():
    with pytest.raises(AlignkitError, match="not one of"):
        module_path("bleurt")


def test_win_rate_matches_direct():
    from alignkit.eval.winrate import win_rate

    verdicts = [1, 1, 0, -1, 1, 0, -1, 1]
    got = evaluate.load(module_path("win_rate")).compute(verdicts=verdicts, n_resamples=200, seed=1)
    assert got == win_rate(verdicts, n_resamples=200, seed=1)
    assert got["win_rate"] == (4 + 2 / 2) / 8  # 4 wins, 2 ties, 2 losses


def test_repetition_rate_matches_the_report():
    from alignkit.eval.diversity import diversity_report

    module = evaluate.load(module_path("repetition_rate"))
    assert module.compute(predictions=RESPONSES)["repetition_rate"] == diversity_report(RESPONSES)["repetition_rate"]
    # "a b a b a b": 5 bigrams, 2 unique -> 1 - 2/5 = 0.6; "a b c d": 3 bigrams, all unique -> 0; mean 0.3
    assert module.compute(predictions=["a b a b a b", "a b c d"], n=2)["repetition_rate"] == pytest.approx(0.3)


def test_grader_accuracy_matches_the_report():
    from alignkit.eval.metric_responses import grader_accuracy

    preds, refs = ["It is 12.", "13", "#### 7", "seven"], ["12", "12", "7", "7"]
    got = evaluate.load(module_path("grader_accuracy")).compute(predictions=preds, references=refs)
    assert got == grader_accuracy("math_answer", preds, refs)  # the function the harness's response stats call
    assert got["mean"] == 0.5  # 12 and 7 right; 13 wrong; "seven" has no number


PROMPTS = ["What is a cat?", "Say hi.", "Name a colour.", "Count to three.", "Why is the sky blue?"]


def test_rm_score_matches_the_harness(tiny_rm):
    from alignkit.chat_format import as_messages
    from alignkit.eval.metric_rm_score import MemoScorer
    from alignkit.eval.rm_score import load_reward_scorer, score_summary

    got = evaluate.load(module_path("rm_score")).compute(predictions=RESPONSES, prompts=PROMPTS, model=tiny_rm)
    # the harness: a memoized scorer over chat prompts (a string prompt is one user turn), then score_summary
    scores = MemoScorer(load_reward_scorer(tiny_rm))([as_messages(p) for p in PROMPTS], RESPONSES)
    assert got == {**score_summary(scores), "scores": scores}
    with pytest.raises(AlignkitError, match="needs a reward model"):
        evaluate.load(module_path("rm_score")).compute(predictions=RESPONSES, prompts=PROMPTS)


def test_perplexity_matches_the_harness(tiny_model):
    from alignkit.eval.model_spec import ModelSpec, load_model
    from alignkit.eval.perplexity import completion_perplexity, text_perplexity

    module = evaluate.load(module_path("perplexity"))
    model, tok = load_model(ModelSpec("m", tiny_model))
    got = module.compute(predictions=RESPONSES, prompts=PROMPTS, model=tiny_model)
    assert got == completion_perplexity(model, tok, PROMPTS, RESPONSES, 1024, None, 4)  # the suite's settings
    texts = module.compute(predictions=RESPONSES, model=tiny_model)
    assert texts == text_perplexity(model, tok, RESPONSES, 1024, None, 4)
    assert texts != got and got["n_texts"] == texts["n_texts"] == len(RESPONSES)
