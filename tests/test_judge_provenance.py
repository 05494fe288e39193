"""Proxy and judge are separate suite keys; whether a judge saw a training prompt is computed from the runs' cards
(ids and prompt texts, through every run that labelled the data); the judge's held-out pair accuracy is measured;
agreement with the grader is counted on the same pairs. Fake runs and file cards, no model."""

import json
import types

import pytest
import yaml

from alignkit.eval.judge_info import JudgeInfo, heldout_pair_accuracy
from alignkit.eval.metric_win_rate import _Lineages, judge_facts
from alignkit.eval.provenance import judge_saw_training, prompt_key, run_refs, run_training_prompts
from alignkit.eval.suite import load_suite
from alignkit.eval.winrate import verdict_agreement
from alignkit.pipeline import RunNeed


def _pair(pid: str | None, prompt: str, chosen: str = "good", rejected: str = "bad") -> dict:
    row = {
        "prompt": [{"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }
    return row if pid is None else {"id": pid, **row}


def _card(tmp_path, name: str, train: list[dict], test: list[dict] | None = None) -> str:
    """A file card ``name`` with train/test JSONL splits; returns the card's path."""
    for split, rows in (("train", train), ("test", test if test is not None else train[:1])):
        (tmp_path / f"{name}-{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    card = {
        "name": name,
        "description": "test pairs",
        "source": {"file": f"{name}-{{split}}.jsonl"},
        "format": {"type": "preference", "conversational": True},
        "columns": {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected"},
        "splits": {"train": "train", "test": "test"},
        "license": "test",
        "size": f"{len(train)} rows",
        "rebuild": "written by the test",
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(card))
    return str(path)


def _run(runs, name: str, dataset: str | None, trainer: str = "reward", **extra) -> str:
    run = runs / name
    run.mkdir(parents=True)
    meta = {"recipe": name, "trainer": trainer, "dataset": dataset, "status": "finished", **extra}
    (run / "run.json").write_text(json.dumps(meta))
    return str(run)


POLICY = [_pair("p1", "Say hi."), _pair("p2", "Name a colour."), _pair("p3", "What is 2+2?")]
JUDGE = [_pair("j1", "Write a haiku."), _pair("j2", "Explain rain.")]


@pytest.fixture
def runs(tmp_path):
    policy, judge = _card(tmp_path, "policy", POLICY), _card(tmp_path, "judge", JUDGE)
    shared = _card(tmp_path, "shared", [*JUDGE, _pair("p2", "Name a colour.")])
    renamed = _card(tmp_path, "renamed", [_pair("other-id", "  name a COLOUR. ")])  # same prompt, new id
    no_ids = _card(tmp_path, "noids", [_pair(None, "What is 2+2?")])
    root = tmp_path / "runs"
    _run(root, "dpo", policy, trainer="dpo")
    _run(root, "judge", judge)
    _run(root, "judge-shared", shared)
    _run(root, "judge-renamed", renamed)
    _run(root, "judge-noids", no_ids)
    _run(root, "judge-nocard", str(tmp_path / "missing.yaml"))
    return root


def test_suite_keeps_proxy_and_judge_apart_and_needs_both_runs(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "Hi"}\n')
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        f"prompt_sets: [{{name: p, card: {tmp_path / 'p.jsonl'}}}]\n"
        "metrics:\n"
        "  rm_score: {reward_model: 'run:rm-proxy', train_missing: true}\n"
        "  win_rate: {judges: [rm, grader], rm_judge: 'run:rm-held-out', heldout_pairs: 8}\n"
    )
    s = load_suite(str(suite))
    assert s.metric("rm_score").reward_model == "run:rm-proxy" and s.metric("win_rate").rm_judge == "run:rm-held-out"
    assert s.required_runs() == [
        RunNeed("rm-proxy", "rm-proxy", f"suite {suite}: metrics.rm_score.train_missing", trainer="reward"),
        RunNeed("rm-held-out", "rm-held-out", f"suite {suite}: metrics.win_rate.rm_judge", trainer="reward"),
    ]
    s.limit(4)
    assert s.metric("win_rate").heldout_pairs == 4  # --max-prompts reaches the judge's held-out pairs too


def test_the_smol_suite_judges_with_a_held_out_reward_model_not_its_proxy():
    s = load_suite("smol")
    proxy, judge = s.metric("rm_score").reward_model, s.metric("win_rate").rm_judge
    assert (proxy, judge) == ("run:rm-smol", "run:rm-judge-smol")
    assert ("rm-judge-smol", "reward") in [(n.name, n.trainer) for n in s.required_runs()]


def test_the_smol_judge_never_starts_from_the_proxys_initialization():
    """A seed fixes the reward head and LoRA A at init: proxy and judge must not share one (recipes/rm-judge-smol)."""
    from alignkit.recipe import load_recipe

    s = load_suite("smol")
    proxy, judge = (
        load_recipe(ref.removeprefix("run:"))
        for ref in (s.metric("rm_score").reward_model, s.metric("win_rate").rm_judge)
    )
    assert proxy.args.trainer == judge.args.trainer == "reward"
    seeds = proxy.training_args.seed, judge.training_args.seed
    assert seeds[0] != seeds[1], f"proxy and judge share seed {seeds[0]}"


def test_saw_training_is_true_on_a_shared_id_false_when_disjoint_unknown_without_metadata(runs, tmp_path):
    dpo = runs / "dpo"
    shared = judge_saw_training(runs / "judge-shared", dpo, runs)
    assert shared.value is True and shared.shared_ids == 1 and shared.shared_texts == 1
    disjoint = judge_saw_training(runs / "judge", dpo, runs)
    assert disjoint.value is False and "disjoint" in disjoint.detail
    renamed = judge_saw_training(runs / "judge-renamed", dpo, runs)  # another id, same prompt text
    assert renamed.value is True and (renamed.shared_ids, renamed.shared_texts) == (0, 1)
    no_ids = judge_saw_training(runs / "judge-noids", dpo, runs)  # a card without ids compares by text
    assert no_ids.value is True and no_ids.shared_texts == 1
    for unknown in (
        judge_saw_training(None, dpo, runs),  # a model path: no run metadata
        judge_saw_training(runs / "judge", None, runs),
        judge_saw_training(tmp_path / "not-a-run", dpo, runs),
        judge_saw_training(runs / "judge-nocard", dpo, runs),
    ):
        assert unknown.value is None and unknown.detail.startswith("unknown")


def test_lineage_follows_the_scorer_run_that_labelled_the_data(runs, tmp_path, monkeypatch):
    """On-policy pairs name their scorer (``run:NAME``) in the card's builder args; its training prompts count as
    the evaluated run's, so a judge that shares a prompt with the scorer saw training data."""
    (tmp_path / "labelled_builder.py").write_text(
        "import types\n"
        "ROW = {'id': 'q1', 'prompt': [{'role': 'user', 'content': 'Fresh prompt.'}],\n"
        "       'chosen': [{'role': 'assistant', 'content': 'a'}],\n"
        "       'rejected': [{'role': 'assistant', 'content': 'b'}]}\n"
        "ROWS = {'train': [ROW], 'test': [ROW]}\n"
        "def build(scorer, force=False):\n"
        "    return types.SimpleNamespace(rows=lambda split: ROWS[split])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    card = yaml.safe_load((tmp_path / "policy.yaml").read_text())
    card.update(name="onpolicy", source={"package": "alignkit", "builder": "labelled_builder:build"})
    card["source"]["args"] = {"scorer": "run:rm-proxy"}
    (tmp_path / "onpolicy.yaml").write_text(yaml.safe_dump(card))
    _run(runs, "rm-proxy", str(tmp_path / "shared.yaml"))  # the proxy trained on j1, j2 and p2
    _run(runs, "dpo-onpolicy", str(tmp_path / "onpolicy.yaml"), trainer="dpo")

    assert run_refs({"args": {"scorer": "run:rm-proxy", "n": [1, "run:sft"]}}) == ["rm-proxy", "sft"]
    lineage = run_training_prompts(runs / "dpo-onpolicy", runs)
    assert lineage.ids == {"q1", "j1", "j2", "p2"} and len(lineage.sources) == 2
    assert judge_saw_training(runs / "judge", runs / "dpo-onpolicy", runs).value is True  # via the scorer's j1, j2


def test_a_builder_that_reads_runs_is_read_in_the_run_tree_of_the_run(runs, tmp_path, monkeypatch):
    """A run trained under another runs root (bench/efficacy.py's runs/efficacy) built its on-policy card with
    runs_root = its parent (alignkit.train); the lineage must read the card there too, not in ./runs."""
    (tmp_path / "tree_builder.py").write_text(
        "import types\n"
        "from pathlib import Path\n"
        "from alignkit.errors import AlignkitError\n"
        "ROW = {'id': 'q9', 'prompt': [{'role': 'user', 'content': 'Tree prompt.'}],\n"
        "       'chosen': [{'role': 'assistant', 'content': 'a'}],\n"
        "       'rejected': [{'role': 'assistant', 'content': 'b'}]}\n"
        "def build(scorer, runs_root='runs', force=False):\n"
        "    if not (Path(runs_root) / scorer[4:] / 'run.json').exists():\n"
        "        raise AlignkitError(f'scorer needs {scorer}, which is not finished in {runs_root}/')\n"
        "    return types.SimpleNamespace(rows=lambda split: [ROW])\n"
        "build.required_runs = lambda args: []\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)  # ./runs (the fixture's tree) is not where this run lives
    tree = tmp_path / "elsewhere"
    card = yaml.safe_load((tmp_path / "policy.yaml").read_text())
    card.update(name="tree", source={"package": "alignkit", "builder": "tree_builder:build"})
    card["source"]["args"] = {"scorer": "run:rm-tree"}
    (tmp_path / "tree.yaml").write_text(yaml.safe_dump(card))
    _run(tree, "rm-tree", str(tmp_path / "judge.yaml"))
    _run(tree, "dpo-tree", str(tmp_path / "tree.yaml"), trainer="dpo")
    lineage = run_training_prompts(tree / "dpo-tree", tree)
    assert not lineage.unknown, lineage.unknown
    assert lineage.ids == {"q9", "j1", "j2"}  # the card's rows, then the scorer run's card
    assert judge_saw_training(runs / "judge", tree / "dpo-tree", tree).value is True


def test_a_card_that_is_not_built_is_unknown_never_rebuilt(runs, tmp_path, monkeypatch):
    (tmp_path / "unbuilt_builder.py").write_text(
        "from alignkit.data.store import cached_build\n"
        "def build(force=False):\n"
        "    def produce():\n"
        "        raise AssertionError('the eval must not build a dataset')\n"
        "    return cached_build('unbuilt', {'v': 1}, produce)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    card = yaml.safe_load((tmp_path / "policy.yaml").read_text())
    card.update(name="unbuilt", source={"package": "alignkit", "builder": "unbuilt_builder:build"})
    (tmp_path / "unbuilt.yaml").write_text(yaml.safe_dump(card))
    _run(runs, "dpo-unbuilt", str(tmp_path / "unbuilt.yaml"), trainer="dpo")
    result = judge_saw_training(runs / "judge", runs / "dpo-unbuilt", runs)
    assert result.value is None and "is not built on this machine" in result.detail


def test_lineage_uses_the_rows_the_run_trained_on(runs):
    """``max_train_samples`` and ``seed`` from resolved_config.json: the same subset build_trainer draws."""
    from alignkit.data.cards import load_split

    dpo = runs / "dpo"
    (dpo / "resolved_config.json").write_text(
        json.dumps({"recipe": {"max_train_samples": 1}, "training": {"seed": 3}})
    )
    meta = json.loads((dpo / "run.json").read_text())
    picked = load_split(meta["dataset"], "train", max_samples=1, seed=3)[0]
    lineage = run_training_prompts(dpo, runs)
    assert lineage.texts == {prompt_key(picked)} and "as trained" in lineage.sources[0]


def test_judge_facts_per_comparison(runs):
    spec = types.SimpleNamespace(name="dpo", run_dir=str(runs / "dpo"))
    base = types.SimpleNamespace(name="base", run_dir=None)
    prompts = [[{"role": "user", "content": "Write a haiku."}], [{"role": "user", "content": "Other."}]]
    lineages = _Lineages(runs)
    held = judge_facts(
        JudgeInfo("rm", "run:judge", "reward model", str(runs / "judge")), [spec, base], prompts, lineages
    )
    assert held["saw_training_prompts"] is False and held["held_out"] is True
    assert held["eval_prompts_in_judge_training"] == 1  # "Write a haiku." is a judge training prompt
    proxy = JudgeInfo("rm", "run:judge", "reward model", str(runs / "judge"), proxy="run:judge", same_as_proxy=True)
    assert judge_facts(proxy, [spec, base], prompts, lineages)["held_out"] is False  # disjoint, but the proxy
    path = judge_facts(JudgeInfo("rm", "/models/rm", "reward model"), [spec, base], prompts, lineages)
    assert path["saw_training_prompts"] is None and "not a run" in path["saw_training_detail"]
    grader = judge_facts(
        JudgeInfo("grader", "grader:math_answer", "grader", trained=False), [spec, base], [], lineages
    )
    assert grader["saw_training_prompts"] is False and grader["held_out"] is True


def test_heldout_pair_accuracy_is_measured_on_the_cards_test_pairs_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    test = [
        _pair("t1", "a", chosen="longer reply", rejected="short"),  # 12 > 5: right
        _pair("t2", "b", chosen="tiny", rejected="much longer"),  # 4 < 11: wrong
        _pair("t3", "c", chosen="same", rejected="same"),  # a tie is wrong (strict)
        _pair("t4", "d", chosen="right one", rejected="no"),  # 9 > 2: right
    ]
    card = _card(tmp_path, "judged", JUDGE, test)

    def length_scorer(prompts, completions):
        assert all(isinstance(c, str) for c in completions)
        return [float(len(c)) for c in completions]

    acc = heldout_pair_accuracy(length_scorer, card, "test", 64, identity={"judge": "length"})
    assert acc["value"] == 0.5 and acc["n"] == 4 and acc["card"] == card and acc["ci_low"] <= 0.5 <= acc["ci_high"]
    assert heldout_pair_accuracy(length_scorer, card, "test", 2)["value"] == 0.5  # first 2 rows: 1 right of 2

    def boom(prompts, completions):
        raise AssertionError("the cached accuracy must be reused")

    assert heldout_pair_accuracy(boom, card, "test", 64, identity={"judge": "length"}) == acc


def test_verdict_agreement_with_the_grader():
    rm = [1, -1, 1, -1, 1]
    grader = [1, 0, 0, -1, -1]
    # same verdict on rows 0 and 3: 2 of 5; the grader decides rows 0, 3, 4, where the rm agrees on 0 and 3: 2 of 3
    assert verdict_agreement(rm, grader) == {"value": 0.4, "n": 5, "decisive_value": 2 / 3, "decisive_n": 3}
    # a judge that read fewer rows (llm_max_prompts) is compared on those: [1, -1] vs [1, 0] agree on row 0 only
    assert verdict_agreement([1, -1], grader) == {"value": 0.5, "n": 2, "decisive_value": 1.0, "decisive_n": 1}
    assert verdict_agreement([0], [0])["decisive_value"] is None
