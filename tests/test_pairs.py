"""Preference pairs: TRL's conversational preference format, the SFT split kept, cached by generation config."""

import json

from alignkit.data.pairs import assemble_pairs, build_pairs
from alignkit.data.sharegpt import build_sft


def sft_row(i: int) -> dict:
    return {
        "id": f"conv{i}_0",
        "messages": [
            {"role": "user", "content": f"Question number {i}?"},
            {"role": "assistant", "content": f"Reference answer {i}."},
        ],
    }


def write_sharegpt(path, n: int) -> None:
    records = [
        {
            "id": r["id"],
            "conversations": [
                {"from": "human" if m["role"] == "user" else "gpt", "value": m["content"]} for m in r["messages"]
            ],
        }
        for r in map(sft_row, range(n))
    ]
    path.write_text(json.dumps(records, indent=2)[:-40])  # truncated, like the real file


def test_assemble_pairs_format_and_drops():
    picked = {"train": [sft_row(0), sft_row(1), sft_row(2)], "test": [sft_row(3)]}
    replies = {"conv0_0": "  My answer.\n", "conv1_0": "\n\n", "conv2_0": "Reference answer 2.", "conv3_0": "No."}
    splits, dropped = assemble_pairs(picked, replies)
    assert dropped == {"empty": 1, "same as reference": 1}
    assert splits["train"] == [
        {
            "id": "conv0_0",
            "prompt": [{"role": "user", "content": "Question number 0?"}],
            "chosen": [{"role": "assistant", "content": "Reference answer 0."}],
            "rejected": [{"role": "assistant", "content": "My answer."}],
        }
    ]
    assert [r["id"] for r in splits["test"]] == ["conv3_0"]


def test_build_pairs_with_tiny_model(tmp_path, tiny_model):
    source = tmp_path / "sg.json"
    write_sharegpt(source, 60)
    cache = tmp_path / "cache"
    kwargs = dict(model_path=tiny_model, source=source, batch_size=2, max_new_tokens=8, cache_root=cache)
    result = build_pairs(3, 1, **kwargs)
    train, test = result.rows("train"), result.rows("test")
    generation = result.manifest["generation"]
    assert generation["prompts"] == 4 and generation["do_sample"] is False and generation["new_tokens"] > 0
    # a random tiny model may babble only whitespace: such pairs are dropped and counted, never half-kept
    assert len(train) + len(test) + sum(result.manifest["dropped"].values()) == 4
    for row in train + test:
        assert set(row) == {"id", "prompt", "chosen", "rejected"}
        roles = [[m["role"] for m in row[key]] for key in ("prompt", "chosen", "rejected")]
        assert roles == [["user"], ["assistant"], ["assistant"]] and row["rejected"][0]["content"]
    # held-out prompts are the SFT set's held-out prompts
    sft = build_sft(source, cache_root=cache)
    assert {r["id"] for r in test} <= {r["id"] for r in sft.rows("test")}
    assert {r["id"] for r in train} <= {r["id"] for r in sft.rows("train")}
    again = build_pairs(3, 1, **kwargs)
    assert again.reused and again.rows("train") == train
    assert not build_pairs(3, 1, **{**kwargs, "max_new_tokens": 9}).reused  # generation config is in the key
