"""Prompt roles keep the judge honest: the held-out judge's training prompts are disjoint, on prompt ids, from every
prompt the policy, the proxy reward model or SFT trains on (small builds with the tiny model, the real role
function)."""

import re
from collections import Counter
from pathlib import Path

import pytest

from alignkit.data.cards import build, load_card, load_split
from alignkit.data.sharegpt import build_sft, conversation_key, rows_of_role
from alignkit.data.splits import ROLES, role_of, split_of
from alignkit.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent


def test_roles_are_bands_of_one_hash():
    keys = [f"conv{i}" for i in range(20_000)]
    roles = Counter(role_of(k) for k in keys)
    # 10 % test, 25 % judge, 20 % proxy, 45 % policy, within ~4 standard errors (sqrt(.25 * .75 / 20000) = 0.3 %)
    for role, share in (("test", 0.10), ("judge", 0.25), ("proxy", 0.20), ("policy", 0.45)):
        assert abs(roles[role] / len(keys) - share) < 0.013, (role, roles)
    # the test role is exactly the old held-out split, so eval's test split did not move
    assert all((role_of(k) == "test") == (split_of(k) == "test") for k in keys)
    assert [role_of(k) for k in keys[:50]] == [role_of(k) for k in keys[:50]]  # pure: same key, same role
    with pytest.raises(ValueError, match="leave room for policy"):
        role_of("x", 0.1, 0.5, 0.4)


def test_sft_set_splits_by_role(tmp_path):
    from test_pairs import write_sharegpt

    source = tmp_path / "sg.json"
    write_sharegpt(source, 300)
    sft = build_sft(source, cache_root=tmp_path / "cache")
    for split, allowed in (("train", {"proxy", "policy"}), ("test", {"test"}), ("judge", {"judge"})):
        rows = sft.rows(split)
        assert rows and {r["role"] for r in rows} == allowed
        assert all(r["role"] == role_of(conversation_key(r["id"])) for r in rows)
    assert sum(len(rows_of_role(sft, role)) for role in ROLES) == sum(sft.manifest["counts"].values())
    card = load_card("sharegpt-sft-smol")
    assert card.splits == {"train": "train", "test": "test", "judge": "judge"}
    judge = load_split(card, "judge", builder_args={"source": source, "cache_root": tmp_path / "cache"})
    assert len(judge) == len(sft.rows("judge")) and judge.column_names == ["messages"]


def default_recipe() -> str:
    """The recipe `make` runs (the Makefile's `recipe ?= NAME`)."""
    return re.search(r"^recipe \?= (\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)


def small_build(card_name: str, ctx: dict):
    """The card's data, built small on the synthetic ShareGPT file with the tiny model (and tiny reward model), with
    every train prompt its builder may take: its whole prompt pool."""
    card = load_card(card_name)
    builder, args = card.source["builder"], card.source.get("args", {})
    common = {"source": ctx["source"], "cache_root": ctx["cache"]}
    if builder == "alignkit.data.sharegpt:build_sft":
        return build(card, **common)
    if builder == "alignkit.data.pairs:build_pairs":
        pool = len(rows_of_role(ctx["sft"], args.get("train_role", "proxy")))
        return build(card, **common, model_path=ctx["model"], n_train=pool, n_test=2, max_new_tokens=4, batch_size=32)
    if builder == "alignkit.data.onpolicy:build_onpolicy_pairs":
        role = args["prompts"].removeprefix("role:")
        pool = len(rows_of_role(ctx["sft"], role))
        return build(
            card, **common, policy=ctx["model"], scorer=ctx["rm"], n_prompts=pool, n_test=0, n_samples=2,
            max_new_tokens=4, min_margin=0, length_delta=None, drop_truncated=False, chosen_complete=False,
            greedy_candidate=False, chunk_size=64,
        )  # fmt: skip  # every prompt kept: 4-token replies are all cut, which chosen_complete would drop
    raise AssertionError(f"card {card_name}: no small build for builder {builder}; teach small_build about it")


def test_the_judge_never_saw_a_policy_proxy_or_sft_training_prompt(tiny_rm, tmp_path, monkeypatch):
    from test_pairs import write_sharegpt

    from alignkit.models import build_tiny_model

    # untied: greedy replies of words, not the empty replies of the tied tiny model (build_pairs drops those)
    greedy_talker = str(build_tiny_model(tmp_path / "untied", tied=False))
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))  # after the build: it reads the embedded model
    source = tmp_path / "sg.json"
    write_sharegpt(source, 120)
    ctx = {"source": source, "cache": tmp_path / "data", "model": greedy_talker, "rm": tiny_rm}
    ctx["sft"] = build_sft(source, cache_root=ctx["cache"])

    judge_card = load_recipe("rm-judge-smol").args.dataset
    assert judge_card == "sharegpt-judge-pairs-smol"
    judge_ids = {r["id"] for r in small_build(judge_card, ctx).rows("train")}
    assert judge_ids and all(role_of(conversation_key(i)) == "judge" for i in judge_ids)

    trained_on = {}
    for recipe in ("rm-smol", default_recipe(), "sft-smol"):
        card = load_recipe(recipe).args.dataset
        trained_on[recipe] = {r["id"] for r in small_build(card, ctx).rows("train")}
        assert trained_on[recipe], recipe
    # the on-policy card is the default recipe's likely data; its prompts must stay clear of the judge's too
    trained_on["sharegpt-onpolicy-smol"] = {r["id"] for r in small_build("sharegpt-onpolicy-smol", ctx).rows("train")}
    for name, ids in trained_on.items():
        assert not judge_ids & ids, f"judge training prompts shared with {name}: {sorted(judge_ids & ids)[:5]}"
    # and the proxy (rm-smol) shares no prompt with the policy's on-policy pairs
    assert not trained_on["rm-smol"] & trained_on["sharegpt-onpolicy-smol"]
