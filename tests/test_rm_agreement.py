"""bench/rm_agreement.py's statistics: within-prompt correlation and the pair builder's best-vs-worst agreement."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import rm_agreement as ra  # noqa: E402


def test_within_prompt_corr_ignores_each_prompts_level():
    groups = np.repeat([0, 1, 2], 3)
    a = np.array([1.0, 2.0, 3.0, 11.0, 12.0, 13.0, -5.0, -4.0, -3.0])
    shifted = a - np.repeat([0.0, 10.0, -8.0], 3) * 7  # other prompt means, the same order inside each prompt
    assert ra.within_prompt_corr(a, shifted, groups) == pytest.approx(1.0)
    reversed_inside = np.array([3.0, 2.0, 1.0, 13.0, 12.0, 11.0, -3.0, -4.0, -5.0])
    assert ra.within_prompt_corr(a, reversed_inside, groups) == pytest.approx(-1.0)
    # the raw correlation is high (prompt levels dominate) while the rankings inside prompts are opposite
    assert np.corrcoef(a, reversed_inside)[0, 1] > 0.9
    assert np.isnan(ra.within_prompt_corr(a, np.repeat([1.0, 2.0, 3.0], 3), groups))


def test_pick_pair_follows_the_chosen_complete_rule():
    scores = np.array([0.9, 0.1, 0.5, -1.0])
    assert ra.pick_pair(scores, np.array([False, True, True, False])) == (2, 3)  # best complete, worst of all
    assert ra.pick_pair(scores, np.array([False, False, False, False])) is None
    assert ra.pick_pair(np.array([0.2, 0.3]), np.array([False, True])) == (1, 0)
    assert ra.pick_pair(np.array([0.0, 0.3]), np.array([True, False])) is None  # chosen would be the worst too


def test_pair_agreement_counts_the_judges_order_of_each_picked_pair():
    picker = [np.array([1.0, 0.0, 0.5]), np.array([0.0, 1.0]), np.array([0.3, 0.2])]
    judge = [np.array([2.0, 1.0, 0.0]), np.array([5.0, 4.0]), np.array([0.0, 0.0])]
    complete = [np.array([True, True, True]), np.array([True, True]), np.array([False, False])]
    # prompt 0: pair (0, 1), judge agrees; prompt 1: pair (1, 0), judge disagrees; prompt 2: no complete reply
    assert ra.pair_agreement(picker, judge, complete) == pytest.approx(0.5)
