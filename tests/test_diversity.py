"""Diversity metrics on hand examples; the arithmetic is written out next to each expected number."""

import math
import random

import pytest

from alignkit.errors import AlignkitError
from alignkit.eval.diversity import (
    distinct_n,
    diversity_report,
    length_stats,
    repetition_rate,
    self_bleu,
    simple_tokenize,
)

HAND = ["a b a b", "a c"]


def test_simple_tokenize_splits_words_and_punctuation_and_lowercases():
    assert simple_tokenize("Hello, World! it's") == ["hello", ",", "world", "!", "it", "'", "s"]


def test_distinct_n_hand_example():
    # unigrams: r1 a b a b -> 2 unique / 4; r2 a c -> 2/2; corpus {a, b, c} = 3 unique / 6 total
    assert distinct_n(HAND, 1) == pytest.approx({"corpus": 3 / 6, "per_response": (2 / 4 + 2 / 2) / 2})
    # bigrams: r1 ab ba ab -> 2/3; r2 ac -> 1/1; corpus {ab, ba, ac} = 3 / 4
    assert distinct_n(HAND, 2) == pytest.approx({"corpus": 3 / 4, "per_response": (2 / 3 + 1) / 2})
    # trigrams: r1 aba bab -> 2/2; r2 has none and is skipped; corpus 2/2
    assert distinct_n(HAND, 3) == pytest.approx({"corpus": 1.0, "per_response": 1.0})
    # no 5-gram anywhere: undefined, not 0 or 1
    d5 = distinct_n(HAND, 5)
    assert math.isnan(d5["corpus"]) and math.isnan(d5["per_response"])


def test_distinct_n_corpus_pools_across_responses():
    # two identical responses: each alone is fully distinct, the corpus repeats everything once
    # unigrams x y z twice -> per response 3/3 = 1; corpus 3 unique / 6 total = 0.5
    assert distinct_n(["x y z", "x y z"], 1) == pytest.approx({"corpus": 0.5, "per_response": 1.0})


def test_repetition_rate_hand_example():
    # n=2: r1 1 - 2/3 = 1/3; r2 1 - 1/1 = 0 -> mean 1/6
    assert repetition_rate(HAND, n=2) == pytest.approx(1 / 6)
    # n=1: r1 1 - 2/4 = 1/2; r2 0 -> mean 1/4
    assert repetition_rate(HAND, n=1) == pytest.approx(1 / 4)
    # n=3: r2 is too short and skipped; r1 aba bab -> 1 - 2/2 = 0
    assert repetition_rate(HAND, n=3) == 0.0
    assert math.isnan(repetition_rate(["a"], n=2))


def test_repetition_rate_is_one_minus_per_response_distinct():
    rng = random.Random(0)
    responses = [" ".join(rng.choice("abcd") for _ in range(rng.randint(0, 12))) for _ in range(30)]
    for n in (1, 2, 3):
        assert repetition_rate(responses, n) == pytest.approx(1 - distinct_n(responses, n)["per_response"])


def test_length_stats_hand_example():
    # lengths 1 2 3 4: mean 2.5, median 2.5, p90 at rank 0.9 * 3 = 2.7 -> 3 + 0.7 * (4 - 3) = 3.7
    stats = length_stats(["a", "a b", "a b c", "a b c d"])
    assert stats == pytest.approx({"mean": 2.5, "median": 2.5, "p90": 3.7, "min": 1.0, "max": 4.0})


def test_tokenizer_argument_hf_style_and_callable():
    class CharTokenizer:  # HF-style: encode(text, add_special_tokens=False) -> ids
        def encode(self, text, add_special_tokens=True):
            assert add_special_tokens is False
            return [ord(c) for c in text]

    # "abab" as characters: bigrams ab ba ab -> 2/3
    assert distinct_n(["abab"], 2, tokenizer=CharTokenizer())["corpus"] == pytest.approx(2 / 3)
    # str.split keeps case and punctuation: "A a." -> tokens A, a. -> 2 distinct of 2
    assert distinct_n(["A a."], 1, tokenizer=str.split)["corpus"] == 1.0
    assert distinct_n(["A a."], 1)["corpus"] == pytest.approx(2 / 3)  # default: a a . -> 2/3


def test_self_bleu_two_responses_hand_example():
    # hyp "a b c d" vs ref "a b c e": p1 = 3/4, p2 = {ab, bc} / 3 = 2/3, p3 = {abc} / 2 = 1/2,
    # p4 = 0 matches of 1 -> smoothed 0.1/1; c = r = 4 -> BP = 1. The pair is symmetric.
    expected = (3 / 4 * 2 / 3 * 1 / 2 * 0.1) ** (1 / 4)
    assert self_bleu(["a b c d", "a b c e"]) == pytest.approx(expected, rel=1e-12)
    assert self_bleu(["the cat sat on the mat"] * 2) == pytest.approx(1.0)


def test_self_bleu_clipping_brevity_and_effective_order():
    responses = ["a a a", "a", "a a"]
    # hyp "a a a", refs "a", "a a": unigram a clipped to max ref count 2 -> p1 = 2/3; bigram aa x2 vs max 1 -> 1/2;
    # trigram aaa: no match -> 0.1/1; no 4-grams -> effective order 3; closest ref length 2 < 3 -> BP = 1
    b1 = (2 / 3 * 1 / 2 * 0.1) ** (1 / 3)
    # hyp "a", refs "a a a", "a a": p1 = 1/1, effective order 1; closest ref length 2 -> BP = exp(1 - 2/1)
    b2 = math.exp(-1.0)
    # hyp "a a", refs "a a a", "a": p1 = 2/2, p2 = 1/1; ref lengths 3 and 1 tie at distance 1 -> the shorter (1)
    # wins, c = 2 > 1 -> BP = 1 (choosing 3 would give exp(1 - 3/2))
    b3 = 1.0
    assert self_bleu(responses) == pytest.approx((b1 + b2 + b3) / 3, rel=1e-12)


def test_self_bleu_empty_hypothesis_scores_zero_and_one_response_raises():
    # "" scores 0; "a b" vs refs "", "a b" is an exact match -> 1; ditto the other "a b"
    assert self_bleu(["", "a b", "a b"]) == pytest.approx(2 / 3)
    with pytest.raises(AlignkitError, match="at least 2 responses"):
        self_bleu(["only one"])


def test_self_bleu_matches_sacrebleu_floor_smoothing():
    sacrebleu = pytest.importorskip("sacrebleu")
    rng = random.Random(1)
    vocab = "the a cat dog sat ran on under mat log".split()
    responses = [" ".join(rng.choice(vocab) for _ in range(rng.randint(1, 14))) for _ in range(12)]
    reference = sum(
        sacrebleu.sentence_bleu(
            hyp, responses[:i] + responses[i + 1 :], smooth_method="floor", smooth_value=0.1, tokenize="none"
        ).score
        / 100
        for i, hyp in enumerate(responses)
    ) / len(responses)
    assert self_bleu(responses) == pytest.approx(reference, rel=1e-9)


def test_diversity_report_keys_and_values():
    report = diversity_report(HAND)
    assert report["distinct_2"] == pytest.approx(3 / 4)
    assert report["distinct_2_per_response"] == pytest.approx(5 / 6)
    assert report["repetition_rate"] == 0.0  # n = 3: see test_repetition_rate_hand_example
    assert report["length_mean"] == 3.0  # (4 + 2) / 2
    assert math.isnan(diversity_report(["solo"])["self_bleu"])


def test_bad_inputs_raise_one_line_errors():
    with pytest.raises(AlignkitError, match="single string"):
        distinct_n("a b c", 1)
    with pytest.raises(AlignkitError, match="row 1"):
        distinct_n(["a", 3], 1)
