"""Synthetic arithmetic: answers are right, splits are seeded and disjoint."""

import pytest

from alignkit.data.arith import make_problems, reply_number
from alignkit.errors import AlignkitError


@pytest.mark.parametrize("difficulty", [1, 2, 3])
def test_answers_match_the_expression(difficulty):
    splits = make_problems(150, 30, difficulty=difficulty, seed=3)
    rows = splits["train"] + splits["test"]
    for row in rows:
        a, op, b = row["expression"].split()
        assert op in "+-*" and a.isdigit() and b.isdigit()  # only digits and one operator: eval is safe here
        assert row["answer"] == str(eval(row["expression"]))
        assert row["prompt"] == [
            {"role": "user", "content": f"What is {row['expression']}? Answer with just the number."}
        ]
    if difficulty < 3:
        assert all(int(r["answer"]) >= 0 for r in rows)


def test_splits_are_disjoint_seeded_and_sized():
    first = make_problems(300, 60, seed=0)
    assert (len(first["train"]), len(first["test"])) == (300, 60)
    assert not {r["expression"] for r in first["train"]} & {r["expression"] for r in first["test"]}
    assert make_problems(300, 60, seed=0) == first
    assert make_problems(300, 60, seed=1) != first
    # a problem's split depends only on the expression, never on the seed
    other = make_problems(300, 60, seed=1)
    assert not {r["expression"] for r in first["train"]} & {r["expression"] for r in other["test"]}


def test_too_many_problems_for_the_difficulty():
    with pytest.raises(AlignkitError, match="difficulty 1 has only ~882 distinct problems"):
        make_problems(500, 100, difficulty=1)


def test_reply_number():
    assert reply_number("The answer is 1,204.") == "1204"
    assert reply_number("-7") == "-7"
    assert reply_number("12 * 8 = 104\n\nI'm ready") == "104"
    assert reply_number("no idea") is None
