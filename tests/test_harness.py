"""End to end on the tiny model: a fake DPO run (PEFT adapter) and a fake reward run -> a full report; user errors."""

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from alignkit.errors import AlignkitError  # noqa: E402
from alignkit.eval import command as cli  # noqa: E402

CHAT = [
    {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
    for q, a in [
        ("Say hi.", "Hi!"),
        ("Name a colour.", "Blue."),
        ("What is the capital of France?", "Paris."),
        ("Give me a word.", "Word."),
    ]
]
ARITH = [
    {"prompt": [{"role": "user", "content": f"What is {a} + {b}?"}], "answer": str(a + b)} for a, b in [(1, 2), (3, 4)]
]
PAIRS = [
    {
        "prompt": [{"role": "user", "content": q}],
        "chosen": [{"role": "assistant", "content": c}],
        "rejected": [{"role": "assistant", "content": r}],
    }
    for q, c, r in [
        ("Say hi.", "Hi!", "No."),
        ("Name a colour.", "Blue.", "Colours do not exist."),
        ("2+2?", "4", "5"),
    ]
]


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _run_json(run_dir: Path, base: str, trainer: str, **extra) -> None:
    meta = {
        "recipe": run_dir.name,
        "trainer": trainer,
        "model_name_or_path": base,
        "base_model": base,
        "adapter_dir": "adapter",
        "model_dir": None,
        "dataset": "test",
        "eval_suite": "smol",
        "status": "finished",
        **extra,
    }
    (run_dir / "run.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def workspace(tiny_model, tmp_path_factory):
    """runs/dpo-tiny (causal LM adapter, beta 0.1), runs/rm-tiny (sequence-classification adapter) and a suite."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    root = tmp_path_factory.mktemp("ws")
    runs = root / "runs"
    dpo = runs / "dpo-tiny"
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), lora).save_pretrained(dpo / "adapter")
    _run_json(dpo, tiny_model, "dpo", beta=0.1, max_eval_samples=3)  # caps the 4-prompt chat set
    rm = runs / "rm-tiny"
    seq = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
    rm_lora = LoraConfig(r=4, target_modules=["q_proj"], task_type=TaskType.SEQ_CLS, init_lora_weights=False)
    get_peft_model(seq, rm_lora).save_pretrained(rm / "adapter")
    _run_json(rm, tiny_model, "reward")

    chat, arith, pairs = (
        _jsonl(root / "chat.jsonl", CHAT),
        _jsonl(root / "arith.jsonl", ARITH),
        _jsonl(root / "pairs.jsonl", PAIRS),
    )
    suite = f"""
name: tiny
prompt_sets:
  - {{name: chat, card: {chat}, max_prompts: 4}}
  - {{name: arith, card: {arith}, max_prompts: 2, grader: math_answer}}
generation: {{max_new_tokens: 6, batch_size: 4}}
metrics:
  rm_score: {{reward_model: "run:rm-tiny"}}
  perplexity: {{heldout: {{card: {chat}}}, reference_model: base, max_length: 64, stride: 32}}
  diversity: {{}}
  preference: {{card: {pairs}}}
  win_rate: {{judges: [rm, llm, grader], llm_judge: {tiny_model}, llm_max_prompts: 2}}
samples: 2
"""
    (root / "tiny.yaml").write_text(suite)
    return root


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))


def _argv(ws: Path, *extra: str) -> list[str]:
    return ["--suite", str(ws / "tiny.yaml"), "--runs-root", str(ws / "runs"), *extra]


def test_run_dir_end_to_end(workspace, cache, capsys):
    run = workspace / "runs" / "dpo-tiny"
    assert cli.main([str(run), *_argv(workspace)]) == 0
    assert f"report: {run / 'report.md'}" in capsys.readouterr().out
    for name in ("report.md", "report.json", "metrics.json", "metrics.png", "lengths.png"):
        assert (run / name).stat().st_size > 0, name
    assert not list(run.glob(".*.tmp"))

    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["models"] == {"base": "base", "trained": "dpo-tiny"}
    for role in ("base", "trained"):
        m = metrics[role]
        for key in (
            "chat/rm_score/mean",
            "chat/rm_score/ci_low",
            "chat/perplexity_responses/perplexity",
            "chat/diversity/distinct_2",
            "chat/diversity/self_bleu",
            "chat/length_tokens/mean",
            "arith/grader_accuracy/mean",
            "perplexity_heldout/perplexity",
            "preference/length_normalized/value",
        ):
            assert key in m, (role, key)
    assert "preference/implicit_reward/accuracy/value" in metrics["trained"]
    assert "preference/implicit_reward/accuracy/value" not in metrics["base"]  # the base has no reference
    for key in ("chat/rm/raw/win_rate", "chat/llm/lc/lc_win_rate", "arith/grader/raw/wins", "chat/llm/raw/ci_high"):
        assert key in metrics["win_rate"], key
    assert "arith/grader/raw/win_rate" in metrics["win_rate"] and "chat/grader/raw/win_rate" not in metrics["win_rate"]

    report = json.loads((run / "report.json").read_text())
    assert report["baseline"] == "base" and len(report["samples"]) == 4
    assert [p["n"] for p in report["prompt_sets"]] == [3, 2]  # max_eval_samples caps, never enlarges
    assert metrics["base"]["perplexity_heldout/n_texts"] == 3
    chat_wr = report["win_rates"]["dpo-tiny vs base"]["chat"]
    assert len(chat_wr["llm"]["verdicts"]) == 2 and len(chat_wr["rm"]["verdicts"]) == 3  # llm_max_prompts: 2
    assert 0.0 <= chat_wr["llm"]["order_agreement"] <= 1.0
    assert set(report["lengths"]["dpo-tiny"]) == {"chat", "arith"}
    md = (run / "report.md").read_text()
    for text in (
        "RM score",
        "Win rates",
        "LC win rate",
        "Distinct-2",
        "Self-BLEU",
        "Sample generations",
        "lengths.png",
    ):
        assert text in md


def test_precision_flag_overrides_the_suite(workspace, cache, tiny_model, tmp_path):
    out = tmp_path / "fast"
    argv = [tiny_model, *_argv(workspace), "--out", str(out), "--max-prompts", "1", "--precision", "fast"]
    assert cli.main(argv) == 0
    assert json.loads((out / "report.json").read_text())["machine"]["precision"]["suite"] == "fast"  # tiny.yaml: exact
    assert cli.build_parser().parse_args(["x"]).precision is None  # no flag: the suite decides


def test_compare_and_missing_reward_model(workspace, cache, tiny_model, tmp_path):
    suite = (workspace / "tiny.yaml").read_text().replace("run:rm-tiny", "run:rm-absent")
    (tmp_path / "absent.yaml").write_text(suite)
    out = tmp_path / "cmp"
    run = workspace / "runs" / "dpo-tiny"
    argv = [tiny_model, "--compare", str(run), "--suite", str(tmp_path / "absent.yaml"), "--out", str(out)]
    assert cli.main([*argv, "--runs-root", str(workspace / "runs"), "--max-prompts", "2"]) == 0
    report = json.loads((out / "report.json").read_text())
    name = Path(tiny_model).name
    assert list(report["win_rates"]) == [f"dpo-tiny vs {name}"]
    assert set(report["win_rates"][f"dpo-tiny vs {name}"]["chat"]) == {"llm"}  # no RM: no rm judge
    assert any("rm-absent" in n and "skipped" in n for n in report["notes"])
    assert report["prompt_sets"][0]["n"] == 2
    assert "not available" in (out / "report.md").read_text()
    assert not (out / "metrics.json").exists()  # only a run directory gets metrics.json


def test_failure_leaves_no_partial_files(workspace, cache, tmp_path, monkeypatch):
    from alignkit.eval.metric_win_rate import WinRateMetric

    def boom(*args, **kwargs):
        raise RuntimeError("judge exploded")

    monkeypatch.setattr(WinRateMetric, "score", boom)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="judge exploded"):
        cli.main([str(workspace / "runs" / "dpo-tiny"), *_argv(workspace, "--out", str(out))])
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    "mutate, match",
    [
        (
            lambda s: s.replace("diversity: {}", "diversity: {}\n  divrsity: {}"),
            r"unknown key 'divrsity' in 'metrics'",
        ),
        (lambda s: s.replace("max_prompts: 4", "max_prompt: 4"), r"unknown key 'max_prompt' in 'prompt_sets\[0\]'"),
        (lambda s: s.replace("samples: 2", "sample: 2"), r"unknown key 'sample' in 'top level'"),
        (lambda s: s.replace("judges: [rm, llm, grader]", "judges: [rm, gpt4]"), "unknown judge 'gpt4'"),
    ],
)
def test_bad_suite_names_key_and_file(workspace, tmp_path, mutate, match):
    from alignkit.eval.suite import load_suite

    bad = tmp_path / "bad.yaml"
    bad.write_text(mutate((workspace / "tiny.yaml").read_text()))
    with pytest.raises(AlignkitError, match=match) as err:
        load_suite(str(bad))
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_user_errors_are_one_line(workspace, tmp_path):
    with pytest.raises(AlignkitError, match="does not exist"):
        cli.main(["runs/no-such-run", "--runs-root", str(workspace / "runs")])
    unfinished = tmp_path / "runs" / "half"
    (unfinished / "adapter").mkdir(parents=True)
    _run_json(unfinished, "x", "sft", status="running")
    with pytest.raises(AlignkitError, match="has not finished"):
        cli.main([str(unfinished)])
    with pytest.raises(AlignkitError, match="unknown model or run 'gpt-17'"):
        cli.main(["gpt-17", "--runs-root", str(workspace / "runs")])
    with pytest.raises(AlignkitError, match="unknown suite 'nope'"):
        cli.main([str(workspace / "runs" / "dpo-tiny"), "--suite", "nope"])


def test_missing_reward_model_is_trained_once_when_the_suite_asks(workspace, cache, tiny_model, tmp_path, capsys):
    """rm_score.train_missing: the suite's reward run is trained from its recipe on first use, then reused."""
    import shutil

    runs = tmp_path / "runs"
    shutil.copytree(workspace / "runs" / "dpo-tiny", runs / "dpo-tiny")
    for split in ("train", "test"):
        _jsonl(tmp_path / f"pairs-{split}.jsonl", PAIRS)
    (tmp_path / "pairs-card.yaml").write_text(
        "name: tiny-pairs\ndescription: test pairs\nsource: {file: 'pairs-{split}.jsonl'}\n"
        "format: {type: preference, conversational: true}\n"
        "columns: {prompt: prompt, chosen: chosen, rejected: rejected}\nsplits: {train: train, test: test}\n"
        "license: test\nsize: 3 rows\nrebuild: written by the test\n"
    )
    (tmp_path / "rm-new.yaml").write_text(
        f"trainer: reward\nmodel_name_or_path: {tiny_model}\nuse_peft: true\nlora_r: 4\nlora_alpha: 8\n"
        f"lora_target_modules: [q_proj, v_proj]\nlora_modules_to_save: [score]\n"
        f"dataset: {tmp_path / 'pairs-card.yaml'}\nmax_steps: 1\nper_device_train_batch_size: 2\n"
        "max_length: 64\nlogging_steps: 1\nsave_strategy: 'no'\nreport_to: none\n"
    )
    suite = (workspace / "tiny.yaml").read_text()
    rm_opts = f'{{reward_model: "run:rm-new", train_missing: "{tmp_path}/rm-new.yaml"}}'
    suite = suite.replace('{reward_model: "run:rm-tiny"}', rm_opts)
    suite = suite.replace("judges: [rm, llm, grader]", "judges: [rm]")
    (tmp_path / "suite.yaml").write_text(suite)
    argv = [str(runs / "dpo-tiny"), "--suite", str(tmp_path / "suite.yaml"), "--runs-root", str(runs)]

    assert cli.main([*argv, "--train-missing"]) == 0
    assert "training recipe rm-new" in capsys.readouterr().out
    assert json.loads((runs / "rm-new" / "run.json").read_text())["status"] == "finished"
    metrics = json.loads((runs / "dpo-tiny" / "metrics.json").read_text())
    assert "chat/rm_score/mean" in metrics["base"] and "chat/rm/raw/win_rate" in metrics["win_rate"]

    assert cli.main([*argv, "--out", str(tmp_path / "again")]) == 0  # the finished reward run is reused
    assert "training recipe" not in capsys.readouterr().out


def test_train_missing_must_name_a_reward_recipe(workspace, cache, tmp_path):
    suite = (workspace / "tiny.yaml").read_text()
    suite = suite.replace('{reward_model: "run:rm-tiny"}', '{reward_model: "run:rm-new", train_missing: dpo-smol}')
    (tmp_path / "suite.yaml").write_text(suite)
    argv = [str(workspace / "runs" / "dpo-tiny"), "--suite", str(tmp_path / "suite.yaml")]
    with pytest.raises(AlignkitError, match="recipe 'dpo-smol' trains 'dpo', not reward"):
        cli.main([*argv, "--runs-root", str(workspace / "runs"), "--out", str(tmp_path / "out")])
    assert not (workspace / "runs" / "rm-new").exists()


def test_a_second_eval_reuses_every_stored_score(workspace, cache, tmp_path, monkeypatch):
    # make pipeline evaluates the same models twice (vs base, vs SFT): the second pass must not score anything again.
    import alignkit.eval.perplexity
    import alignkit.eval.rm_score

    suite = (workspace / "tiny.yaml").read_text().replace("judges: [rm, llm, grader]", "judges: [rm, grader]")
    (tmp_path / "no-llm.yaml").write_text(suite)
    run = workspace / "runs" / "dpo-tiny"
    argv = [str(run), "--suite", str(tmp_path / "no-llm.yaml"), "--runs-root", str(workspace / "runs")]
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    assert cli.main([*argv, "--out", str(first_dir)]) == 0
    calls = []
    real_nlls, real_loader = alignkit.eval.perplexity.completion_nlls, alignkit.eval.rm_score.load_reward_scorer

    def counting(*args, **kwargs):
        calls.append(len(args[2]))
        return real_nlls(*args, **kwargs)

    def no_reward_model(*args, **kwargs):
        raise AssertionError("a stored reward score was computed again")

    monkeypatch.setattr(alignkit.eval.perplexity, "completion_nlls", counting)
    monkeypatch.setattr(alignkit.eval.rm_score, "load_reward_scorer", no_reward_model)
    assert cli.main([*argv, "--out", str(second_dir)]) == 0
    assert calls == []  # held-out and response perplexity, preference: all from the score cache
    first, second = (json.loads((d / "metrics.json").read_text()) for d in (first_dir, second_dir))
    for role in ("base", "trained"):
        for key, value in first[role].items():
            if key.startswith(("perplexity_heldout/", "chat/perplexity_responses/", "chat/rm_score/", "preference/")):
                assert second[role][key] == value, (role, key)
    assert first["win_rate"]["chat/rm/raw/win_rate"] == second["win_rate"]["chat/rm/raw/win_rate"]

    monkeypatch.setattr(alignkit.eval.rm_score, "load_reward_scorer", real_loader)
    assert cli.main([*argv, "--out", str(tmp_path / "third"), "--no-cache"]) == 0
    assert sum(calls) > 0  # --no-cache scores every row again
