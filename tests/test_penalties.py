"""Length and repetition penalties: exact numbers, units, TRL delegation, reference column, pickling."""

import pickle

import pytest
from trl.rewards import get_repetition_penalty_reward

from alignkit.plugins.penalties import (
    LengthPenalty,
    RepetitionPenalty,
    length_penalty,
    ngram_repetition_rate,
    relative_length_penalty,
)


class CharTokenizer:
    """Stand-in tokenizer (module level so it pickles): one token id per character."""

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]


def test_length_penalty_functions():
    # 12 − 10 = 2 over → −0.5·2 = −1; under the target → 0
    assert length_penalty(12, 10, 0.5) == -1.0
    assert length_penalty(7, 10, 0.5) == 0.0
    # 30 vs reference 20: 30/20 − 1 = 0.5 → −2·0.5 = −1; with ratio 1.5 the allowed length is 30 → 0
    assert relative_length_penalty(30, 20, 2.0) == pytest.approx(-1.0)
    assert relative_length_penalty(30, 20, 2.0, ratio=1.5) == 0.0
    assert relative_length_penalty(3, 0, 2.0) == -6.0  # empty reference: −coef per unit


def test_length_penalty_units():
    completions = ["one two three four", [{"role": "assistant", "content": "a b"}]]
    # words: 4 and 2 → −0.1·max(0, 4−3) = −0.1, 0
    assert LengthPenalty(coef=0.1, target=3)(["p", "p"], completions) == pytest.approx([-0.1, 0.0])
    # chars: 18 and 3 → −0.1·(18−3) = −1.5, 0
    assert LengthPenalty(coef=0.1, target=3, unit="chars")(["p", "p"], completions) == pytest.approx([-1.5, 0.0])
    # tokens from TRL's completion_ids win over re-tokenizing: 5 ids → −0.1·2
    lp = LengthPenalty(coef=0.1, target=3, tokenizer=CharTokenizer())
    assert lp.unit == "tokens"
    assert lp(["p"], ["ab"], completion_ids=[[1, 2, 3, 4, 5]]) == pytest.approx([-0.2])
    assert lp(["p"], ["abcd"]) == pytest.approx([-0.1])  # tokenizer: 4 chars → 4 ids
    with pytest.raises(ValueError, match="unit='tokens' needs TRL's completion_ids or a tokenizer"):
        LengthPenalty(target=3, unit="tokens")(["p"], ["x"])


def test_length_penalty_reference_column():
    lp = LengthPenalty(coef=1.0, reference_column="ref")
    # "a b c d" (4 words) vs "a b" (2): 4/2 − 1 = 1 → −1; vs 8 (number): 0; missing reference → None
    out = lp(["p"] * 3, ["a b c d"] * 3, ref=["a b", 8, None])
    assert out == [-1.0, 0.0, None]
    with pytest.raises(ValueError, match="reference_column 'ref' is not a dataset column"):
        lp(["p"], ["x"], answer=["y"])


def test_ngram_repetition_rate():
    # [5, 5, 5, 5, 5], n=2: 4 bigrams, 1 unique → 1 − 1/4 = 0.75
    assert ngram_repetition_rate([5, 5, 5, 5, 5], 2) == 0.75
    # a b a b a, n=2: bigrams ab ba ab ba → 2 unique of 4 → 0.5
    assert ngram_repetition_rate("a b a b a".split(), 2) == 0.5
    assert ngram_repetition_rate([1, 2], 3) == 0.0  # fewer than n tokens
    assert ngram_repetition_rate([1, 2, 3], 1) == 0.0
    with pytest.raises(ValueError, match="n-gram size"):
        ngram_repetition_rate([1], 0)


def test_repetition_penalty_delegates_to_trl():
    ids = [[1, 2, 3, 4], [5, 5, 5, 5, 5], [7]]
    trl_fn = get_repetition_penalty_reward(ngram_size=2, max_penalty=-0.5)
    rp = RepetitionPenalty(ngram_size=2, max_penalty=-0.5, unit="tokens")  # tokens = TRL's completion_ids
    # TRL: 0, −0.5·0.75 = −0.375, 0 (too short)
    assert rp(["p"] * 3, ["x"] * 3, completion_ids=ids) == trl_fn(ids) == [0.0, -0.375, 0.0]


def test_repetition_penalty_on_words_without_ids():
    rp = RepetitionPenalty(ngram_size=2, max_penalty=-1.0)
    assert rp.unit == "words"
    completions = ["a b a b a", [{"role": "assistant", "content": "x y z"}]]
    # first: rate 0.5 (above) → −0.5; second: no repeat → 0
    assert rp(["p", "p"], completions) == [-0.5, 0.0]
    assert rp.__name__ == "repetition_penalty"


@pytest.mark.parametrize(
    ("factory", "needle"),
    [
        (lambda: RepetitionPenalty(max_penalty=0.5), "max_penalty"),
        (lambda: RepetitionPenalty(ngram_size=0), "ngram_size"),
        (lambda: LengthPenalty(coef=-1, target=3), "coef"),
        (lambda: LengthPenalty(coef=1), "target"),
        (lambda: LengthPenalty(target=3, unit="bytes"), "unit"),
        (lambda: LengthPenalty(target=3, reference_column="r", ratio=0), "ratio"),
    ],
)
def test_invalid_arguments(factory, needle):
    with pytest.raises(ValueError, match=needle):
        factory()


@pytest.mark.parametrize(
    "reward",
    [
        RepetitionPenalty(ngram_size=2),
        RepetitionPenalty(ngram_size=2, tokenizer=CharTokenizer()),
        LengthPenalty(coef=0.1, target=1),
        LengthPenalty(coef=0.1, reference_column="ref", tokenizer=CharTokenizer()),
    ],
)
def test_pickle_round_trip_after_use(reward):
    kwargs = {"ref": ["a"]}
    before = reward(["p"], ["a a a"], **kwargs)  # builds the lazy TRL scorer for RepetitionPenalty
    clone = pickle.loads(pickle.dumps(reward))
    assert clone.__name__ == reward.__name__
    assert clone(["p"], ["a a a"], **kwargs) == before
