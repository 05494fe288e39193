"""The bad-input matrix of issue 15: every case of tests/bad_input_cases.py exits 2 with exactly one stderr line that
names the field, file or row and what to do, prints no traceback and leaves nothing behind; and
bench/results/reliability.md is exactly what these cases print."""

from pathlib import Path

import bad_input_cases as matrix
import pytest

from alignkit.cli import main
from alignkit.errors import AlignkitError

TABLE = Path(__file__).resolve().parent.parent / "bench" / "results" / "reliability.md"
_outcomes: dict[str, matrix.Outcome] = {}


@pytest.fixture(scope="module")
def matrix_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("matrix")


def _outcome(case: matrix.Case, base: Path, tiny_model: str) -> matrix.Outcome:
    if case.id not in _outcomes:  # each case runs once per session; the table test reuses the outcomes
        _outcomes[case.id] = matrix.run_case(case, base, tiny_model)
    return _outcomes[case.id]


def test_matrix_covers_at_least_30_distinct_cases():
    ids = [case.id for case in matrix.CASES]
    assert len(ids) >= 30 and len(set(ids)) == len(ids)
    assert {case.area for case in matrix.CASES} == {"recipe", "data", "model", "eval", "files"}


@pytest.mark.parametrize("case", matrix.CASES, ids=lambda case: case.id)
def test_bad_input_gives_one_line_and_writes_nothing(case, matrix_dir, tiny_model):
    outcome = _outcome(case, matrix_dir, tiny_model)
    assert outcome.problems() == [], outcome.stderr[-2000:]


def test_reliability_table_is_generated_from_these_cases(matrix_dir, tiny_model):
    outcomes = [_outcome(case, matrix_dir, tiny_model) for case in matrix.CASES]
    expected = matrix.render_table(outcomes, matrix.replacements_for(matrix_dir, tiny_model))
    assert TABLE.read_text(encoding="utf-8") == expected, "regenerate with tests/reliability_table.py"


def test_debug_flag_shows_the_traceback_of_a_user_error(capsys):
    assert main(["train", "dpo-smoll", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "AlignkitError" in err
    assert err.strip().splitlines()[-1].startswith("alignkit: error: unknown recipe 'dpo-smoll'")


def test_truncated_jsonl_keeps_its_complete_rows_with_a_warning(tmp_path, caplog):
    from alignkit.data.store import read_jsonl

    path = tmp_path / "cut.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\n{"a": 3, "b": "cut he')  # the write stopped inside row 3
    assert read_jsonl(path, recover_truncated_tail=True) == [{"a": 1}, {"a": 2}]
    assert "cut.jsonl:3: file truncated inside this line; dropped it, kept 2 rows" in caplog.text
    with pytest.raises(AlignkitError, match=r"cut\.jsonl:3: invalid JSON .*not skipped"):
        read_jsonl(path)  # caches and other internal files never recover silently
