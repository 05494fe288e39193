"""Best-vs-worst selection (alignkit.data.pair_selection): hand-made scores, each rule on its own."""

import pytest

from alignkit.data.pair_selection import Candidate, SelectionRules, select_pair


def cands(*specs) -> list[Candidate]:
    """One candidate per ``(score, tokens)`` or ``(score, tokens, truncated)``; texts differ."""
    return [Candidate(f"reply {i}", spec[0], spec[1], len(spec) > 2 and spec[2]) for i, spec in enumerate(specs)]


def test_best_against_worst():
    # scores 0.2, 0.9, -0.5, 0.4: chosen = #1 (0.9), rejected = #2 (-0.5), margin 1.4
    choice = select_pair(cands((0.2, 10), (0.9, 10), (-0.5, 10), (0.4, 10)))
    assert (choice.chosen, choice.rejected, choice.dropped) == (1, 2, None) and choice.kept


def test_margin_threshold_and_ties():
    samples = cands((0.2, 10), (0.5, 10), (0.3, 10))  # margin 0.5 - 0.2 = 0.3
    assert select_pair(samples, SelectionRules(min_margin=0.3)).kept  # >= threshold: kept
    assert select_pair(samples, SelectionRules(min_margin=0.31)).dropped == "small_margin"
    assert select_pair(cands((0.7, 5), (0.7, 9), (0.7, 3))).dropped == "tie"  # all equal: a tie, even at margin 0
    same_text = [Candidate("same", 0.1, 3), Candidate("same", 0.6, 3)]  # equal texts can never teach a preference
    assert select_pair(same_text).dropped == "tie"


def test_equal_scores_prefer_shorter_then_earlier():
    # two best replies at 0.8 (12 and 7 tokens): the shorter one is chosen; the worst ties go to the earlier sample
    choice = select_pair(cands((0.8, 12), (0.1, 20), (0.8, 7), (0.1, 30)))
    assert (choice.chosen, choice.rejected) == (2, 1)


def test_length_delta_prefers_a_best_reply_not_much_longer_than_the_worst():
    # worst: #0 (score 0, 20 tokens). Best overall #1 (score 1.0) has 60 tokens > 20 + 10, so with delta 10 the
    # chosen reply is #2 (score 0.6, 25 tokens <= 30).
    samples = cands((0.0, 20), (1.0, 60), (0.6, 25))
    assert select_pair(samples).chosen == 1
    assert select_pair(samples, SelectionRules(length_delta=10)).chosen == 2
    assert select_pair(samples, SelectionRules(length_delta=0)).dropped == "length"  # nothing within 20 tokens
    # a short reply is always allowed: delta bounds chosen from above only
    assert select_pair(cands((0.0, 50), (0.5, 3)), SelectionRules(length_delta=0)).chosen == 1


def test_empty_and_truncated_replies():
    empty = [Candidate("  \n", 0.9, 0), Candidate("fine", 0.1, 3), Candidate("", 0.5, 0)]
    assert select_pair(empty).dropped == "empty"  # one non-empty reply: no pair
    cut = cands((0.9, 64, True), (0.1, 20, False), (0.5, 64, True))
    assert (select_pair(cut).chosen, select_pair(cut).rejected) == (0, 1)  # truncated replies count by default
    assert select_pair(cut, SelectionRules(drop_truncated=True)).dropped == "truncated"
    kept = select_pair(cands((0.9, 64, True), (0.1, 20), (0.5, 30)), SelectionRules(drop_truncated=True))
    assert (kept.chosen, kept.rejected) == (2, 1)  # the truncated best reply is excluded


def test_chosen_complete_only_chooses_a_reply_that_ended_by_itself():
    # best #0 was cut at the limit; with chosen_complete the best complete reply (#2) is chosen, while the cut
    # worst reply (#1) may still be rejected -- unlike drop_truncated, which would drop it too
    samples = cands((0.9, 64, True), (0.1, 64, True), (0.5, 30))
    assert select_pair(samples).chosen == 0
    kept = select_pair(samples, SelectionRules(chosen_complete=True))
    assert (kept.chosen, kept.rejected) == (2, 1)
    assert select_pair(samples, SelectionRules(drop_truncated=True)).dropped == "truncated"
    # no complete reply besides the rejected one: dropped as incomplete (one reason per prompt)
    assert select_pair(cands((0.9, 64, True), (0.1, 20)), SelectionRules(chosen_complete=True)).dropped == (
        "incomplete"
    )


@pytest.mark.parametrize("rules", [dict(min_margin=-0.1), dict(length_delta=-1), dict(min_margin=float("nan"))])
def test_bad_rules(rules):
    with pytest.raises(ValueError):
        SelectionRules(**rules)
