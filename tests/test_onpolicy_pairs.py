"""On-policy pairs (alignkit.data.onpolicy) on the tiny model: N samples per prompt, reward-model, grader and LLM
judge scorers, the cache key, resume after an interrupt, the CLI and one-line errors."""

import json
from pathlib import Path

import pytest

from alignkit.data.onpolicy import build_onpolicy_pairs
from alignkit.data.pair_selection import DROP_REASONS, select_pair
from alignkit.data.response_scorers import GraderResponses, LLMJudgeResponses
from alignkit.errors import AlignkitError
from alignkit.eval.model_spec import ModelSpec

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a journey of a thousand miles begins with one step",
    "all that glitters is not gold said the old man",
    "an apple a day keeps the doctor away they say",
    "practice makes perfect when the practice is good",
]
FAST = dict(n_samples=3, max_new_tokens=6, chunk_size=2, batch_size=8)


def write_prompts(path: Path, n: int = 5, answers: bool = True) -> str:
    rows = [{"id": f"q{i}", "prompt": f"Repeat after me: {SENTENCES[i % 5]}"} for i in range(n)]
    for i, row in enumerate(rows):
        if answers:
            row["answer"] = SENTENCES[i % 5]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def ws(tiny_model, tiny_rm, tmp_path, monkeypatch):
    """Tiny policy and reward model, a 5-prompt file with answers, and a private cache (generations included)."""
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    prompts = write_prompts(tmp_path / "prompts.jsonl")
    return dict(policy=tiny_model, rm=tiny_rm, prompts=prompts, root=tmp_path)


def build(ws, cache: str = "data", **kwargs):
    args = dict(prompts=ws["prompts"], policy=ws["policy"], scorer=ws["rm"], cache_root=ws["root"] / cache, **FAST)
    return build_onpolicy_pairs(5, **{**args, **kwargs})


def chunk_records(result) -> list[dict]:
    samples = Path(result.manifest["samples_directory"])
    return [rec for f in sorted(samples.glob("train-*.json")) for rec in json.loads(f.read_text())["records"]]


def test_n_samples_per_prompt_scored_by_the_reward_model(ws):
    from alignkit.eval.rm_score import load_reward_scorer

    result = build(ws)
    records = chunk_records(result)
    assert len(records) == 5 and len(list(Path(result.manifest["samples_directory"]).glob("train-*"))) == 3
    for rec in records:  # 3 samples per prompt, each with its tokens, truncation flag and score
        assert all(len(rec[key]) == 3 for key in ("responses", "tokens", "truncated", "scores"))
    assert len({r for rec in records for r in rec["responses"]}) > 5  # sampled, not greedy copies

    rows, manifest = result.rows("train"), result.manifest
    selection = manifest["selection"]["train"]
    assert selection["prompts"] == 5 and selection["kept"] == len(rows) > 0
    assert selection["kept"] + sum(selection[k] for k in DROP_REASONS) == 5
    assert manifest["scorer"]["kind"] == "reward_model" and manifest["scorer"]["ref"] == ws["rm"]
    assert manifest["policy"]["ref"] == ws["policy"] and manifest["counts"] == {"train": len(rows), "test": 0}
    rm = load_reward_scorer(ws["rm"])
    for row in rows:
        assert set(row) == {"id", "prompt", "chosen", "rejected"} | {
            f"{side}_{what}" for side in ("chosen", "rejected") for what in ("score", "tokens")
        }
        assert row["chosen_score"] > row["rejected_score"] and row["chosen"] != row["rejected"]
        assert [m["role"] for m in row["prompt"] + row["chosen"] + row["rejected"]] == [
            "user",
            "assistant",
            "assistant",
        ]
        replies = [row["chosen"][0]["content"], row["rejected"][0]["content"]]
        chosen_again, rejected_again = rm([row["prompt"]] * 2, replies)
        assert chosen_again == pytest.approx(row["chosen_score"], abs=1e-4)
        assert rejected_again == pytest.approx(row["rejected_score"], abs=1e-4)

    assert build(ws).reused  # same inputs: the cache
    # the selection rules are in the key, but a new rule re-selects the saved samples instead of sampling again
    reselected = build(ws, length_delta=10_000)
    assert not reselected.reused and reselected.manifest["samples_directory"] == manifest["samples_directory"]
    assert reselected.rows("train") == rows
    reseeded = build(ws, seed=1)
    assert reseeded.manifest["samples_directory"] != manifest["samples_directory"]


def test_length_delta_reaches_every_prompts_selection(ws, monkeypatch):
    # The rule itself is tested on hand-made candidates (test_pair_selection.py): the tiny model never ends a reply,
    # so its samples all have the same length and cannot show it. Here: the option reaches the selection of every
    # prompt, and the kept pairs obey it.
    import alignkit.data.onpolicy as onpolicy

    seen = []

    def spy(candidates, rules):
        seen.append(rules.length_delta)
        return select_pair(candidates, rules)

    monkeypatch.setattr(onpolicy, "select_pair", spy)
    rows = build(ws, length_delta=3).rows("train")
    assert seen == [3] * 5
    assert all(r["chosen_tokens"] <= r["rejected_tokens"] + 3 for r in rows)


def test_greedy_candidate_adds_the_greedy_reply_last(ws):
    plain = build(ws)
    result = build(ws, greedy_candidate=True)
    assert result.manifest["samples_directory"] != plain.manifest["samples_directory"]  # its own samples key
    assert result.manifest["generation"]["greedy_candidate"] is True
    records = chunk_records(result)
    assert all(len(rec["responses"]) == len(rec["scores"]) == 4 for rec in records)  # 3 samples + greedy
    # the other rows are the same seeded samples as without the option
    assert [rec["responses"][:3] for rec in records] == [rec["responses"] for rec in chunk_records(plain)]
    # the last candidate is greedy: another sampling seed changes the samples but not it
    reseeded = {rec["id"]: rec for rec in chunk_records(build(ws, greedy_candidate=True, seed=1))}
    assert all(reseeded[rec["id"]]["responses"][-1] == rec["responses"][-1] for rec in records)
    assert any(reseeded[rec["id"]]["responses"][:3] != rec["responses"][:3] for rec in records)


def test_no_pair_left_is_a_one_line_error_and_the_samples_stay(ws):
    with pytest.raises(AlignkitError, match="no pair kept from 5 prompts.*small_margin") as err:
        build(ws, min_margin=1e6)
    assert "\n" not in str(err.value)


def test_grader_scorer_reads_the_reference_column(ws):
    from alignkit.plugins.graders import get_grader

    result = build(ws, scorer="edit_distance")
    grader = get_grader("edit_distance")
    answers = {f"q{i}": SENTENCES[i] for i in range(5)}
    assert result.manifest["scorer"]["kind"] == "grader" and result.manifest["scorer"]["grader"] == "edit_distance"
    for rec in chunk_records(result):
        assert rec["scores"] == [grader.score(r, answers[rec["id"]]) for r in rec["responses"]]
    for row in result.rows("train"):
        assert row["chosen_score"] == grader.score(row["chosen"][0]["content"], answers[row["id"]])


def test_llm_judge_ranks_by_a_round_robin():
    class LongerWins:  # a stand-in judge: +1 when the first answer is longer, -1 when shorter
        def judge(self, prompts, a, b, references=None):
            return [(len(x) > len(y)) - (len(x) < len(y)) for x, y in zip(a, b, strict=True)]

    scorer = LLMJudgeResponses("llm:stub", ModelSpec("stub", "stub"))
    scorer._judge = LongerWins()
    # matches of prompt 0: (aaa, a) +1, (aaa, aa) +1, (a, aa) -1 -> wins minus losses: aaa 2, a -2, aa 0
    # prompt 1: two equal answers tie -> 0, 0
    assert scorer.score(["p", "q"], [["aaa", "a", "aa"], ["xy", "yx"]]) == [[2, -2, 0], [0, 0]]


def test_llm_judge_scorer_on_the_tiny_model(ws):
    # A random judge decides by answer position, which both orders cancel: its verdicts may all be ties, and then
    # every prompt drops as a tie. Either way the saved scores are a round robin's.
    try:
        result = build(ws, scorer=f"llm:{ws['policy']}")
        assert result.manifest["scorer"]["kind"] == "llm_judge" and result.manifest["scorer"]["rank"] == "round_robin"
    except AlignkitError as exc:
        assert "no pair kept" in str(exc) and "'tie': 5" in str(exc)
    (samples,) = (ws["root"] / "data" / "onpolicy-pairs").glob(".samples-*")
    records = [rec for f in sorted(samples.glob("train-*")) for rec in json.loads(f.read_text())["records"]]
    assert len(records) == 5
    for rec in records:  # zero-sum, and each of the 3 samples plays 2 matches
        assert sum(rec["scores"]) == 0 and all(-2 <= s <= 2 for s in rec["scores"])


def test_an_interrupted_build_resumes_to_the_identical_dataset(ws, monkeypatch):
    calls, interrupt = [], [True]
    score = GraderResponses.score

    def interrupted_after_first_chunk(self, *args, **kwargs):
        calls.append(len(args[0]))
        if interrupt[0] and len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while the second chunk is scored
        return score(self, *args, **kwargs)

    monkeypatch.setattr(GraderResponses, "score", interrupted_after_first_chunk)
    with pytest.raises(KeyboardInterrupt):
        build(ws, scorer="edit_distance")
    parent = ws["root"] / "data" / "onpolicy-pairs"
    (samples,) = parent.iterdir()  # no dataset, complete or half-written: only the saved chunk
    assert samples.name.startswith(".samples-") and [p.name for p in samples.iterdir()] == ["train-00000.json"]

    calls.clear()
    interrupt[0] = False
    resumed = build(ws, scorer="edit_distance")
    assert calls == [2, 1]  # chunks 2 and 3 only: the first was reused
    fresh = build(ws, scorer="edit_distance", cache="fresh")  # the same build, never interrupted
    assert (
        resumed.rows("train") == fresh.rows("train") and resumed.manifest["selection"] == fresh.manifest["selection"]
    )


def test_test_split_from_held_out_prompts(ws, tmp_path):
    """ShareGPT prompts: train from a role, test from the test split; a card can name the build."""
    from test_pairs import write_sharegpt

    from alignkit.data.sharegpt import build_sft, rows_of_role

    source = tmp_path / "sg.json"
    write_sharegpt(source, 60)
    result = build(ws, prompts="role:policy", n_test=2, source=source, n_samples=2)
    sft = build_sft(source, cache_root=ws["root"] / "data")
    policy_ids = {r["id"] for r in rows_of_role(sft, "policy")}
    test_ids = {r["id"] for r in sft.rows("test")}
    assert {r["id"] for r in result.rows("train")} <= policy_ids
    assert {r["id"] for r in result.rows("test")} <= test_ids and result.manifest["selection"]["test"]["prompts"] == 2


def test_cli_builds_writes_a_card_and_reuses(ws, capsys):
    from alignkit.cli import main
    from alignkit.data.cards import load_card, load_split

    card = ws["root"] / "my-pairs.yaml"
    argv = ["pairs", "--prompts", ws["prompts"], "--policy", ws["policy"], "--scorer", ws["rm"], "--n-prompts", "4"]
    argv += ["--n-samples", "2", "--max-new-tokens", "6", "--cache-root", str(ws["root"] / "data")]
    assert main([*argv, "--write-card", str(card)]) == 0
    out = capsys.readouterr().out
    assert "built on-policy pairs" in out and f"wrote dataset card {card}" in out
    train = load_split(load_card(card), "train")
    assert sorted(train.column_names) == ["chosen", "prompt", "rejected"] and 0 < len(train) <= 4
    assert len(load_split(load_card(card), "test")) == 0  # an empty split still loads, with the card's columns
    assert main(argv) == 0 and "reused on-policy pairs" in capsys.readouterr().out


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        (dict(policy="run:sft-missing"), "policy needs run:sft-missing.*`alignkit train sft-missing output_dir="),
        (dict(scorer="run:rm-missing"), "scorer needs run:rm-missing.*`alignkit train rm-missing output_dir="),
        (dict(scorer="grader:bogus"), "unknown grader 'bogus'; graders: contains"),
        (dict(scorer="no-such-scorer"), "unknown scorer 'no-such-scorer'"),
        (dict(prompts="EMPTY"), "the train prompt set is empty"),
        (dict(n_test=2), "the test prompt set is empty; nothing to sample; a prompt file has no held-out split"),
        (dict(prompts="NOANSWER", scorer="math_answer"), "reference column 'answer', which prompts .* lack"),
        (dict(n_samples=1), "n_samples: must be >= 2"),
        (dict(batch_size=0), "batch_size: must be >= 1, got 0"),  # left an empty scratch folder in the cache
        (dict(prompts="role:test"), "role must be one of policy, proxy, judge"),
    ],
)
def test_bad_input_is_one_line(ws, kwargs, needle):
    (ws["root"] / "empty.jsonl").write_text("")
    files = {"EMPTY": str(ws["root"] / "empty.jsonl"), "NOANSWER": write_prompts(ws["root"] / "q.jsonl", 3, False)}
    kwargs = {k: files.get(v, v) if isinstance(v, str) else v for k, v in kwargs.items()}
    with pytest.raises(AlignkitError, match=needle) as err:
        build(ws, runs_root=ws["root"] / "runs", **kwargs)
    assert "\n" not in str(err.value)
    assert not (ws["root"] / "data" / "onpolicy-pairs").exists()  # nothing written


def test_cli_error_exit_code(ws, capsys):
    from alignkit.cli import main

    assert main(["pairs", "--prompts", ws["prompts"], "--scorer", "grader:bogus"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alignkit: error:") and "unknown grader 'bogus'" in err and "\n" not in err


def test_fast_precision_samples_with_bf16_matmuls_under_its_own_key(ws, monkeypatch):
    import torch

    from alignkit import inference_precision
    from alignkit.eval import metric_base

    monkeypatch.setattr(inference_precision, "native_bf16", lambda: True)  # as on avx512_bf16/AMX
    dtypes = []
    real_call = metric_base.LazyModel.__call__

    def record_dtype(self):
        model, tok = real_call(self)
        dtypes.append({p.dtype for p in model.parameters()})  # bf16_matmuls: decoder linears bf16, the rest fp32
        return model, tok

    monkeypatch.setattr(metric_base.LazyModel, "__call__", record_dtype)
    exact = build(ws)
    assert dtypes and all(d == {torch.float32} for d in dtypes)
    dtypes.clear()
    fast = build(ws, precision="fast")
    assert dtypes and all(torch.bfloat16 in d for d in dtypes)  # the sampling policy, not only the scorer
    assert fast.manifest["policy"]["precision"] == "fast" and exact.manifest["policy"]["precision"] == "exact"
    assert fast.manifest["samples_directory"] != exact.manifest["samples_directory"]
    assert len(fast.rows("train")) > 0


def test_sample_only_fills_the_generation_cache_and_the_build_then_only_scores(ws, monkeypatch, tmp_path):
    import alignkit.eval.generation as generation

    plain = build(ws, cache="plain")  # the reference: sampled and scored in one build
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache2"))  # a cold generation cache
    args = dict(prompts=ws["prompts"], policy=ws["policy"], cache_root=ws["root"] / "later", **FAST)
    # the scorer is not needed yet: a run that does not exist is not even checked
    assert build_onpolicy_pairs(5, scorer="run:not-trained-yet", runs_root=tmp_path, sample_only=True, **args) is None
    assert not (ws["root"] / "later").exists()  # nothing is cached as a dataset by a sample-only build
    calls = []
    real = generation._run_generation
    monkeypatch.setattr(generation, "_run_generation", lambda *a, **k: calls.append(1) or real(*a, **k))
    later = build_onpolicy_pairs(5, scorer=ws["rm"], **args)
    assert calls == []  # every reply came from the generation cache: the build only scored
    assert later.rows("train") == plain.rows("train")  # and made the same pairs as one build does
