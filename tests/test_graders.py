"""Graders: normalization, extraction, exact scores, TRL reward signature, missing references, pickling."""

import pickle

import pytest

from alignkit.plugins.graders import (
    GRADERS,
    Contains,
    EditDistance,
    ExactMatch,
    MathAnswer,
    completion_text,
    extract_math_answer,
    get_grader,
    levenshtein,
    normalize_answer,
    parse_number,
)


def test_normalize_answer():
    # lowercase, punctuation removed (not spaced), articles dropped, whitespace collapsed
    assert normalize_answer("  The  Eiffel-Tower! ") == "eiffeltower"
    assert normalize_answer("An apple, a day") == "apple day"


def test_completion_text_standard_and_conversational():
    assert completion_text("hi") == "hi"
    conv = [
        {"role": "assistant", "content": "step"},
        {"role": "tool", "content": "42"},
        {"role": "assistant", "content": [{"type": "text", "text": "done"}]},
    ]
    assert completion_text(conv) == "step\ndone"


def test_exact_match_and_contains():
    em = ExactMatch()
    assert em.score("The Paris.", "paris") == 1.0
    assert em.score("Paris, France", "paris") == 0.0
    assert ExactMatch(normalize=False).score("Paris", "paris") == 0.0
    c = Contains()
    assert c.score("I think it is Paris, France.", "paris") == 1.0
    assert c.score("The answer is 42", "4") == 0.0  # word boundary: "4" is not in "42"
    assert c.score("anything", "the") == 0.0  # reference normalizes to "" → only an empty completion matches
    assert c.score("", "") == 1.0


def test_levenshtein_and_edit_distance():
    # kitten → sitting: k→s, e→i, +g = 3
    assert levenshtein("kitten", "sitting") == 3
    assert levenshtein("", "abc") == 3
    ed = EditDistance(normalize=False)
    # 1 − 3/max(6, 7) = 4/7
    assert ed.score("kitten", "sitting") == pytest.approx(4 / 7)
    assert ed.score("", "") == 1.0
    assert ed.score("abc", "xyz") == 0.0
    assert EditDistance().score("The Cat!", "cat") == 1.0  # normalized: "cat" vs "cat"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("so the total is 1,234 dollars", 1234.0),
        ("x = -3", -3.0),
        ("x = \u22123", -3.0),
        ("about 2.5 or .5", 0.5),
        ("we get 3/4", 0.75),
        ("\\frac{3}{4}", 0.75),
        ("costs $12.", 12.0),
        ("10-4", 4.0),  # a dash between numbers is not a sign
        ("1, 2, 3", 3.0),  # a list, not a thousands separator
        ("no digits here", None),
        ("1/0", None),
    ],
)
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_extract_math_answer_priority():
    assert extract_math_answer("first 7 then \\boxed{\\frac{1}{2}} and 9") == "\\frac{1}{2}"
    assert extract_math_answer("work 3 + 4 = 7\n#### 7") == "7"
    assert extract_math_answer("just 5 apples") == "just 5 apples"


def test_math_answer_scores():
    m = MathAnswer()
    assert m.score("Thus \\boxed{1,234}.", "#### 1234") == 1.0  # GSM8K reference with full solution
    assert m.score("The answer is 0.75", "3/4") == 1.0
    assert m.score("The answer is 0.7501", "3/4") == 0.0
    assert MathAnswer(rel_tol=1e-3).score("The answer is 0.7501", "3/4") == 1.0
    assert m.score("I don't know", "5") == 0.0
    assert m.score("\\boxed{x + 1}", "\\boxed{x+1}") == 1.0  # non-numeric: whitespace-insensitive string match


def test_trl_signature_missing_reference_and_custom_column():
    m = MathAnswer()
    completions = [[{"role": "assistant", "content": "\\boxed{4}"}], "5", "6"]
    out = m(prompts=["p"] * 3, completions=completions, answer=["4", None, float("nan")], trainer_state=None)
    assert out == [1.0, None, None]
    assert ExactMatch(column="gold")(["p"], ["yes"], gold=[["no", "Yes."]]) == [1.0]  # list of acceptable answers
    with pytest.raises(ValueError, match="'answer' not in the dataset; columns: \\['solution'\\]"):
        m(["p"], ["1"], solution=["1"], trainer_state=None)


@pytest.mark.parametrize("name", sorted(GRADERS))
def test_registry_name_and_pickle_round_trip(name):
    grader = get_grader(name)
    assert grader.__name__ == name
    clone = pickle.loads(pickle.dumps(grader))
    assert clone.__name__ == name
    assert clone(["p"], ["42"], answer=["42"]) == [1.0]


def test_get_grader_unknown_and_bad_tolerance():
    with pytest.raises(ValueError, match="available: contains, edit_distance, exact_match, math_answer"):
        get_grader("bleu")
    with pytest.raises(ValueError, match="rel_tol"):
        MathAnswer(rel_tol=-1)
    assert get_grader("exact_match", name="em").__name__ == "em"
