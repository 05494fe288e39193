"""A card that samples from or scores with a run makes `alignkit train` train that run first; `onpolicy_rounds: 2`
trains two rounds of on-policy DPO on the tiny model into one evaluable run, and resumes at the round it stopped."""

import json
from pathlib import Path

import pytest

import alignkit.onpolicy_rounds
import alignkit.train
from alignkit.cli import main
from alignkit.errors import AlignkitError
from alignkit.pipeline import RunNeed, dataset_builder_args, dataset_runs


def test_cards_declare_the_runs_they_need():
    scorer = RunNeed("rm-smol", "rm-smol", "dataset card sharegpt-onpolicy-smol: scorer", "reward")
    assert dataset_runs("sharegpt-onpolicy-smol") == [scorer]
    assert dataset_runs("sharegpt-onpolicy-smol", {"policy": "run:sft-smol"}) == [
        RunNeed("sft-smol", "sft-smol", "dataset card sharegpt-onpolicy-smol: policy"),
        scorer,
    ]
    assert dataset_runs("sharegpt-pairs-smol") == [] and dataset_runs("arith-smol") == []
    assert dataset_builder_args("sharegpt-onpolicy-smol", "elsewhere") == {"runs_root": "elsewhere"}
    assert dataset_builder_args("sharegpt-pairs-smol", "elsewhere") == {}


def test_a_plain_data_build_names_the_train_command(tmp_path, capsys):
    from alignkit.data.__main__ import main as data_main

    assert data_main(["build", "sharegpt-onpolicy-smol", "--arg", f"runs_root={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "needs run:rm-smol" in err and f"`alignkit train rm-smol output_dir={tmp_path}" in err


def test_train_trains_the_cards_runs_before_it_builds_data(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_SIDE_LANE", "0")  # no second process: the scorer trains here, in order
    seen = []

    def ensure_runs(needs, runs_root):
        seen.append((needs, runs_root))
        raise KeyboardInterrupt  # stop here: nothing else may have happened yet

    monkeypatch.setattr(alignkit.train, "ensure_runs", ensure_runs)
    monkeypatch.setattr(alignkit.train, "build_trainer", lambda *a, **k: pytest.fail("data built before its runs"))
    out = tmp_path / "runs" / "dpo-x"
    argv = ["train", "dpo-smol", f"model_name_or_path={tiny_model}", "dataset=sharegpt-onpolicy-smol"]
    assert main([*argv, f"output_dir={out}", "--no-eval"]) == 130
    ((needs, runs_root),) = seen
    assert [(n.name, n.trainer) for n in needs] == [("rm-smol", "reward")] and runs_root == out.parent
    assert not out.with_name("dpo-x.partial").exists()  # nothing trained, nothing left behind


def test_with_a_side_lane_the_scorer_trains_beside_while_train_samples(tiny_model, tmp_path, monkeypatch):
    from types import SimpleNamespace

    import alignkit.lanes

    monkeypatch.delenv("ALIGNKIT_SIDE_LANE", raising=False)
    monkeypatch.setattr(alignkit.lanes, "enabled", lambda: True)
    events, starts = [], []

    class Lane:
        def __init__(self, side, own, root, early=None, after=None):
            events.append(("start", [n.name for n in early or []], [n.name for n in own]))
            self.pending = [SimpleNamespace(need=n) for n in early or []]
            self.after = after

    def start(side, own, root, early=None, after=None):
        alignkit.lanes._active = Lane(side, own, root, early, after)
        starts.append(alignkit.lanes._active)
        return alignkit.lanes._active

    def ensure_runs(needs, runs_root):
        events.append(("ensure_runs", [n.name for n in needs]))
        raise KeyboardInterrupt  # stop before anything trains

    monkeypatch.setattr(alignkit.lanes, "start", start)
    monkeypatch.setattr(alignkit.lanes, "wait_for", lambda name: events.append(("wait_for", name)) or True)
    monkeypatch.setattr(alignkit.train, "presample", lambda card, root: events.append(("presample", card.name)))
    monkeypatch.setattr(alignkit.train, "ensure_runs", ensure_runs)

    def finish(ok):
        events.append(("finish", ok))
        alignkit.lanes._active = None

    monkeypatch.setattr(alignkit.lanes, "finish", finish)
    out = tmp_path / "runs" / "dpo-x"
    argv = ["train", "dpo-smol", f"model_name_or_path={tiny_model}", "dataset=sharegpt-onpolicy-smol"]
    assert main([*argv, f"output_dir={out}", "--no-eval"]) == 130
    assert events == [
        ("start", ["rm-smol"], ["rm-smol"]),  # the proxy goes first in the side lane
        ("presample", "sharegpt-onpolicy-smol"),  # this process samples meanwhile
        ("wait_for", "rm-smol"),  # then waits for the proxy
        ("finish", True),  # a lane with only the data's runs is ended by train itself (no eval to wait for it)
        ("ensure_runs", ["rm-smol"]),  # which then has nothing left to train (or trains it, if the child failed)
        ("finish", False),  # train failed (here: interrupted) -> its own lane is stopped; the CLI's finish follows
        ("finish", False),
    ]
    assert starts[0].after == []  # --no-eval: no start-model eval to compute ahead

    # With its eval, the lane also computes the start model's half of it after its runs, and the CLI ends the lane.
    events.clear()
    assert main([*argv, f"output_dir={out}", "eval_suite=smol", "max_eval_samples=8"]) == 130
    (job,) = starts[1].after
    assert (job.model_path, job.suite, job.max_eval_samples) == (tiny_model, "smol", 8)
    assert events[-2:] == [("ensure_runs", ["rm-smol"]), ("finish", False)]  # stopped once, by the CLI


def test_no_deferral_when_the_policy_run_is_missing_too(tmp_path):
    from alignkit.data.cards import load_card
    from alignkit.pipeline import deferrable_runs

    card = load_card("sharegpt-onpolicy-smol")
    scorer = dataset_runs(card)
    assert deferrable_runs(card, scorer, tmp_path) == scorer  # only the scorer is missing: it can wait
    policy = RunNeed("sft-smol", "sft-smol", "dataset card sharegpt-onpolicy-smol: policy")
    assert deferrable_runs(card, [policy, *scorer], tmp_path) == []  # sampling needs the policy: train in order
    assert deferrable_runs(load_card("sharegpt-pairs-smol"), scorer, tmp_path) == []  # a builder without the hook


def test_rounds_need_a_dpo_recipe_on_an_onpolicy_card(tiny_model, tmp_path):
    from alignkit.recipe import load_recipe
    from alignkit.train import train

    with pytest.raises(AlignkitError, match="onpolicy_rounds: 2 rounds need trainer dpo, not sft"):
        load_recipe("sft-smol", ["onpolicy_rounds=2"])
    overrides = ["onpolicy_rounds=2", f"model_name_or_path={tiny_model}", "dataset=sharegpt-pairs-smol"]
    recipe = load_recipe("dpo-smol", overrides)  # an off-policy card, named: dpo-smol's own card is on-policy
    recipe.training_args.output_dir = str(tmp_path / "runs" / "x")
    with pytest.raises(AlignkitError, match="needs an on-policy pair card.*'sharegpt-pairs-smol' has none"):
        train(recipe)
    assert not (tmp_path / "runs").exists()


@pytest.fixture
def rounds_setup(tiny_model, tiny_rm, tmp_path, monkeypatch):
    """A card of on-policy pairs (tiny policy, tiny reward model, 12 prompts) and `alignkit train` arguments for
    a two-round DPO run on it."""
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Tell me about {i}."}) + "\n" for i in range(12)))
    card = tmp_path / "tiny-onpolicy.yaml"
    args = dict(
        prompts=str(prompts), n_prompts=4, n_test=0, policy=tiny_model, scorer=tiny_rm, n_samples=2,
        max_new_tokens=8, chunk_size=4, batch_size=8,
    )  # fmt: skip
    card.write_text(
        "name: tiny-onpolicy\ndescription: test\n"
        "source: {package: alignkit, builder: 'alignkit.data.onpolicy:build_onpolicy_pairs', "
        f"args: {json.dumps(args)}}}\n"
        "format: {type: preference, conversational: true}\n"
        "columns: {prompt: prompt, chosen: chosen, rejected: rejected}\nsplits: {train: train, test: test}\n"
        "license: test\nsize: 4 pairs\nrebuild: written by the test\n"
    )
    out = tmp_path / "runs" / "dpo-rounds"
    argv = [
        "train", "dpo-smol", f"model_name_or_path={tiny_model}", f"dataset={card}", f"output_dir={out}",
        "onpolicy_rounds=2", "max_steps=1", "per_device_train_batch_size=2", "max_length=64", "save_steps=1",
        "logging_steps=1", "--no-eval",
    ]  # fmt: skip
    return argv, out


def test_two_rounds_make_one_evaluable_run(rounds_setup, tiny_model, tmp_path):
    from alignkit.eval.command import main as eval_main
    from alignkit.eval.model_spec import run_specs

    argv, out = rounds_setup
    assert main(argv) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["status"] == "finished" and run["onpolicy_rounds"] == 2 and len(run["rounds"]) == 2
    assert run["model_dir"] == "model" and run["adapter_dir"] is None
    assert run["base_model"] == tiny_model and run["reference_model"] == tiny_model  # eval compares with the start
    manifests = [json.loads((out / f"round-{k}" / "pairs_manifest.json").read_text()) for k in (1, 2)]
    assert manifests[0]["policy"]["ref"] == tiny_model  # round 1 samples from the card's policy
    assert manifests[1]["policy"]["ref"].endswith("round-1/policy")  # round 2 from the round-1 model
    assert [r["policy_in"] for r in run["rounds"]] == [tiny_model, "round-1/policy"]
    firsts = [json.loads((Path(m["samples_directory"]) / "train-00000.json").read_text())["ids"] for m in manifests]
    assert not set(firsts[0]) & set(firsts[1])  # fresh prompts each round (prompt_offset)
    for k in (1, 2):
        rdir = out / f"round-{k}"
        assert any("loss" in json.loads(line) for line in (rdir / "train_log.jsonl").read_text().splitlines())
        assert (rdir / "adapter" / "adapter_config.json").exists() and not list(rdir.glob("checkpoint-*"))
        assert json.loads((rdir / "round.json").read_text())["global_step"] == 1
    assert not (out / "round-1" / "policy").exists()  # intermediate merged model: removed at the end
    assert (out / "model" / "config.json").exists() and not out.with_name("dpo-rounds.partial").exists()

    base, trained = run_specs(out)
    assert (base.base, trained.base, trained.reference) == (tiny_model, str(out / "model"), tiny_model)
    suite = tmp_path / "suite.yaml"
    (tmp_path / "eval-prompts.jsonl").write_text('{"prompt": "Say hi."}\n{"prompt": "Count to three."}\n')
    suite.write_text(
        f"prompt_sets: [{{name: p, card: {tmp_path / 'eval-prompts.jsonl'}}}]\n"
        "generation: {max_new_tokens: 4, batch_size: 2}\nmetrics: {diversity: {}}\n"
    )
    assert eval_main([str(out), "--suite", str(suite), "--out", str(tmp_path / "eval")]) == 0
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert set(report["lengths"]) == {"base", "dpo-smol"}


def test_an_interrupted_second_round_resumes_without_retraining_the_first(rounds_setup, monkeypatch, capsys):
    argv, out = rounds_setup
    train_round = alignkit.onpolicy_rounds._train_round

    def stop_in_round_two(recipe, k, *args):
        if k == 2:
            raise KeyboardInterrupt
        return train_round(recipe, k, *args)

    monkeypatch.setattr(alignkit.onpolicy_rounds, "_train_round", stop_in_round_two)
    assert main(argv) == 130
    staging = out.with_name("dpo-rounds.partial")
    assert (staging / "round-1" / "round.json").exists() and not out.exists()  # round 1 kept for --resume
    capsys.readouterr()

    monkeypatch.setattr(alignkit.onpolicy_rounds, "_train_round", train_round)
    assert main([*argv, "--resume"]) == 0
    printed = capsys.readouterr().out
    assert "on-policy round 1/2" not in printed and "on-policy round 2/2" in printed
    assert json.loads((out / "run.json").read_text())["status"] == "finished"


def test_a_kto_card_on_onpolicy_pairs_defers_the_scorer_and_presamples_through_its_pair_card(tmp_path, monkeypatch):
    """sharegpt-onpolicy-kto-smol unpairs sharegpt-onpolicy-smol: its build can sample while rm-smol trains."""
    import alignkit.pipeline as pipeline
    from alignkit.data.cards import build, load_card
    from alignkit.pipeline import deferrable_runs

    kto = load_card("sharegpt-onpolicy-kto-smol")
    scorer = dataset_runs(kto)
    assert [n.name for n in scorer] == ["rm-smol"]
    assert deferrable_runs(kto, scorer, tmp_path) == scorer
    policy = RunNeed("sft-smol", "sft-smol", "dataset card sharegpt-onpolicy-smol: policy")
    assert deferrable_runs(kto, [policy, *scorer], tmp_path) == []
    presampled = []
    monkeypatch.setattr(pipeline, "presample", lambda card, root: presampled.append((card.name, str(root))))
    assert build(kto, runs_root=str(tmp_path), sample_only=True) is None
    assert presampled == [("sharegpt-onpolicy-smol", str(tmp_path))]  # the pair card samples; nothing is unpaired yet
