"""ShareGPT recovery on small synthetic truncated files, and the SFT build on top of it."""

import json

import pytest

from alignkit.data.sharegpt import build_sft, opening_exchanges, recover_records, validate_record
from alignkit.errors import AlignkitError


def record(rid: str, prompt: str = "hi", reply: str = "hello") -> dict:
    return {"id": rid, "conversations": [{"from": "human", "value": prompt}, {"from": "gpt", "value": reply}]}


def pretty(obj) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False)


@pytest.fixture
def truncated_file(tmp_path):
    """6 records written like the real file; #2 has the wrong shape, #3 is a JSON syntax error, and the file is cut
    inside a string of record #5 (whose multi-byte characters are also split)."""
    parts = [
        pretty(record("a_0", "What is 2+2?", "4")),
        pretty(record("b_0", "Name a colour", "Blue, {like} the sky. },{")),  # braces inside strings
        pretty({"id": "c_0", "conversations": "not a list"}),
        '{\n  "id": "d_0",\n  "conversations": [ {"from": "human", "value": "x"} oops ]\n}',
        pretty(record("e_0", "Say ü", "ü")),
        pretty(record("f_0", "a prompt that will be cut", "ééééé")),
    ]
    text = "[\n" + ",\n".join(parts) + "\n]"
    cut = text.index("éé") + 1  # mid-string, and mid-character in UTF-8 below
    data = text[:cut].encode("utf-8") + "é".encode()[:1]
    path = tmp_path / "truncated.json"
    path.write_bytes(data)
    return path, len(text[: text.index(parts[-1])].encode("utf-8")), len(data)


def test_recovers_complete_records_and_reports_the_rest(truncated_file):
    path, last_record_byte, size = truncated_file
    records, report = recover_records(path)
    assert [r["id"] for r in records] == ["a_0", "b_0", "e_0"]
    assert report.records_recovered == 3
    assert report.records_invalid == 1  # c_0
    assert report.records_unparseable == 1  # d_0
    assert report.records_partial == 1  # f_0
    assert report.records_dropped == 3
    assert report.truncated
    assert report.partial_record_id == "f_0"
    assert report.stopped_at_byte == last_record_byte
    assert report.bytes_dropped >= size - last_record_byte  # the tail, plus the skipped d_0 record
    assert "c_0" in " ".join(report.problems)


def test_clean_file_and_cut_between_records(tmp_path):
    whole = tmp_path / "whole.json"
    whole.write_text(pretty([record("a_0"), record("b_0")]))
    records, report = recover_records(whole)
    assert len(records) == 2 and not report.truncated and report.records_dropped == 0
    cut = tmp_path / "cut.json"
    cut.write_text(pretty([record("a_0"), record("b_0")])[:-2] + ",\n")  # "...}," then EOF
    records, report = recover_records(cut)
    assert len(records) == 2 and report.truncated and report.records_partial == 0


def test_not_an_array_is_a_one_line_error(tmp_path):
    path = tmp_path / "obj.json"
    path.write_text('{"id": 1}')
    with pytest.raises(AlignkitError, match="obj.json: not a JSON array"):
        recover_records(path)


def test_validate_record_names_the_problem():
    assert validate_record(record("x")) is None
    assert "id" in validate_record({"conversations": []})
    assert "conversations[1]" in validate_record({"id": "x", "conversations": [{"from": "a", "value": "b"}, {}]})


def test_opening_exchanges_filters():
    records = [
        record("a_0", "short", "ok"),
        record("a_1", "continuation", "ok"),  # later segment: its context is missing
        record("b_0", "x" * 300, "ok"),  # prompt too long (limit is strict)
        record("c_0", "y" * 299, "z" * 799),
        record("d_0", "  SHORT ", "dup"),  # same prompt as a_0 after normalization
        {"id": "e_0", "conversations": [{"from": "gpt", "value": "hi"}, {"from": "human", "value": "yo"}]},
    ]
    kept, skipped = opening_exchanges(records)
    assert [k["id"] for k in kept] == ["a_0", "c_0"]
    assert skipped == {
        "continuation segment": 1,
        "too long": 1,
        "duplicate prompt": 1,
        "does not open with human -> gpt": 1,
    }


def test_build_sft_split_is_deterministic_disjoint_and_cached(tmp_path):
    source = tmp_path / "sg.json"
    source.write_text(pretty([record(f"id{i}_0", f"prompt {i}", f"reply {i}") for i in range(200)]))
    first = build_sft(source, cache_root=tmp_path / "cache")
    train, test, judge = first.rows("train"), first.rows("test"), first.rows("judge")
    assert len(train) + len(test) + len(judge) == 200 and 5 < len(test) < 40  # ~10%
    assert not {r["id"] for r in train} & {r["id"] for r in test}
    assert not {r["id"] for r in judge} & {r["id"] for r in train + test}
    row = next(r for r in train + test + judge if r["id"] == "id7_0")
    assert row["messages"] == [{"role": "user", "content": "prompt 7"}, {"role": "assistant", "content": "reply 7"}]
    again = build_sft(source, cache_root=tmp_path / "cache")
    assert again.reused and again.directory == first.directory
    assert [r["id"] for r in again.rows("test")] == [r["id"] for r in test]
    other = build_sft(source, cache_root=tmp_path / "cache2")  # a fresh build agrees
    assert [r["id"] for r in other.rows("test")] == [r["id"] for r in test]
    source.write_text(pretty([record(f"id{i}_0", f"prompt {i}", f"reply {i}") for i in range(201)]))
    changed = build_sft(source, cache_root=tmp_path / "cache")
    assert not changed.reused and changed.directory != first.directory
    assert json.loads((changed.directory / "manifest.json").read_text())["recovery"]["records_recovered"] == 201
