"""Dataset cards: every shipped card parses; bad cards fail in one line naming the field, column and card."""

import json

import pytest

from alignkit.data.cards import list_cards, load_card, load_split
from alignkit.errors import AlignkitError

SHIPPED = {
    "sharegpt-sft-smol",
    "sharegpt-pairs-smol",
    "sharegpt-judge-pairs-smol",
    "sharegpt-onpolicy-smol",
    "arith-smol",
    "ultrachat_200k",
    "ultrafeedback_binarized",
    "gsm8k",
}

GOOD = """\
name: tiny
description: a test card
source: {file: "data-{split}.jsonl"}
format: {type: preference, conversational: false}
columns: {better: chosen, worse: rejected, question: prompt}
splits: {train: train, test: test}
license: MIT
size: 2 rows
rebuild: none
"""


def write_card(tmp_path, text: str, rows: list[dict] | None = None):
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    rows = rows if rows is not None else [{"question": "q", "better": "b", "worse": "w", "extra": 1}]
    for split in ("train", "test"):
        (tmp_path / f"data-{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_every_shipped_card_parses():
    assert SHIPPED <= set(list_cards())
    for name in list_cards():
        card = load_card(name)
        assert card.name == name and card.license and card.rebuild.startswith("python -m alignkit.data build")


def test_gsm8k_and_ultrafeedback_cards():
    gsm8k = load_card("gsm8k")
    assert gsm8k.source == {"hub": "openai/gsm8k", "config": "main"}
    assert gsm8k.columns == {"question": "prompt", "answer": "answer"}
    assert load_card("ultrafeedback_binarized").splits == {"train": "train_prefs", "test": "test_prefs"}


def test_file_card_maps_and_keeps_only_trl_columns(tmp_path):
    ds = load_split(load_card(write_card(tmp_path, GOOD)), "test")
    assert sorted(ds.column_names) == ["chosen", "prompt", "rejected"]
    assert ds[0] == {"prompt": "q", "chosen": "b", "rejected": "w"}


def test_unknown_field_is_named(tmp_path):
    path = write_card(tmp_path, GOOD + "colums: {a: b}\n")
    with pytest.raises(AlignkitError, match=r"tiny\.yaml: unknown field 'colums'"):
        load_card(path)


def test_missing_field_is_named(tmp_path):
    path = write_card(tmp_path, GOOD.replace("license: MIT\n", ""))
    with pytest.raises(AlignkitError, match=r"tiny\.yaml: missing required field 'license'"):
        load_card(path)


def test_format_needs_its_trl_columns_at_parse_time(tmp_path):
    path = write_card(tmp_path, GOOD.replace("worse: rejected, ", ""))
    with pytest.raises(AlignkitError, match="maps nothing to 'rejected'"):
        load_card(path)


def test_missing_source_column_names_column_card_and_present_columns(tmp_path):
    rows = [{"question": "q", "better": "b", "wrose": "w"}]
    card = load_card(write_card(tmp_path, GOOD, rows))
    with pytest.raises(AlignkitError) as info:
        load_split(card, "train")
    message = str(info.value)
    assert "'worse' is missing" in message and "card 'tiny'" in message and "'wrose'" in message
    assert "\n" not in message


def test_conversational_shape_is_checked(tmp_path):
    card = load_card(write_card(tmp_path, GOOD.replace("conversational: false", "conversational: true")))
    with pytest.raises(AlignkitError, match="row 0 column 'prompt' is not a list"):
        load_split(card, "train")


def test_unknown_card_and_offline_hub_fail_fast():
    with pytest.raises(AlignkitError, match="unknown dataset card 'nope'; available: arith-smol"):
        load_card("nope")
    # conftest sets HF_DATASETS_OFFLINE=1: no network, no retries, a pointer to the embedded twin
    with pytest.raises(AlignkitError, match="'openai/gsm8k'.*embedded card 'arith-smol'"):
        load_split("gsm8k", "train")


def test_builder_card_loads_with_max_samples(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path))
    ds = load_split("arith-smol", "test", max_samples=5, seed=1)
    assert len(ds) == 5 and sorted(ds.column_names) == ["answer", "prompt"]
    assert ds[0]["prompt"][0]["role"] == "user"
    assert list(load_split("arith-smol", "test", max_samples=5, seed=1)["answer"]) == list(ds["answer"])
