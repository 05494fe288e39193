"""An eval on the tiny model with a proxy reward run and a separate held-out judge run (fake runs, real adapters):
the judge is named beside every win rate, its held-out pair accuracy is measured, its training prompts are checked
against the evaluated run's, and it agrees (or not) with the grader on the graded set."""

import json

import pytest

pytest.importorskip("torch")

from alignkit.eval.harness import run_eval  # noqa: E402
from alignkit.eval.model_spec import run_specs  # noqa: E402
from alignkit.eval.report import render_markdown  # noqa: E402
from alignkit.eval.suite import load_suite  # noqa: E402


def _pairs(prefix: str, prompts: list[str]) -> list[dict]:
    return [
        {
            "id": f"{prefix}{i}",
            "prompt": [{"role": "user", "content": p}],
            "chosen": [{"role": "assistant", "content": "A fine answer."}],
            "rejected": [{"role": "assistant", "content": "No."}],
        }
        for i, p in enumerate(prompts)
    ]


def _card(root, name: str, rows: list[dict]) -> str:
    for split in ("train", "test"):
        (root / f"{name}-{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / f"{name}.yaml").write_text(
        f"name: {name}\ndescription: test pairs\nsource: {{file: '{name}-{{split}}.jsonl'}}\n"
        "format: {type: preference, conversational: true}\n"
        "columns: {prompt: prompt, chosen: chosen, rejected: rejected}\nsplits: {train: train, test: test}\n"
        "license: test\nsize: 3 rows\nrebuild: written by the test\n"
    )
    return str(root / f"{name}.yaml")


def _run(run_dir, base: str, trainer: str, dataset: str, **extra) -> None:
    meta = {
        "recipe": run_dir.name,
        "trainer": trainer,
        "model_name_or_path": base,
        "base_model": base,
        "adapter_dir": "adapter",
        "dataset": dataset,
        "status": "finished",
        **extra,
    }
    (run_dir / "run.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def workspace(tiny_model, tmp_path_factory):
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    root = tmp_path_factory.mktemp("heldout")
    runs = root / "runs"
    policy = _card(root, "policy", _pairs("p", ["Say hi.", "Name a colour.", "Give me a word."]))
    judged = _card(root, "judged", _pairs("j", ["Write a haiku.", "Explain rain.", "Name a fruit."]))
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), lora).save_pretrained(
        runs / "dpo-tiny" / "adapter"
    )
    _run(runs / "dpo-tiny", tiny_model, "dpo", policy, beta=0.1)
    for name, card, seed in (("rm-proxy", policy, 0), ("rm-judge", judged, 1)):
        import torch

        torch.manual_seed(seed)  # two different reward models
        seq = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1)
        rm_lora = LoraConfig(r=4, target_modules=["q_proj"], task_type=TaskType.SEQ_CLS, init_lora_weights=False)
        get_peft_model(seq, rm_lora).save_pretrained(runs / name / "adapter")
        _run(runs / name, tiny_model, "reward", card)
    chat = [{"prompt": [{"role": "user", "content": q}]} for q in ("Say hi.", "Write a haiku.", "Tell me a joke.")]
    arith = [
        {"prompt": [{"role": "user", "content": f"What is {a} + {b}?"}], "answer": str(a + b)}
        for a, b in ((1, 2), (3, 4))
    ]
    for name, rows in (("chat", chat), ("arith", arith)):
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _suite(root, rm_judge: str) -> object:
    path = root / f"suite-{rm_judge.replace(':', '-')}.yaml"
    path.write_text(
        f"""
name: heldout
prompt_sets:
  - {{name: chat, card: {root / "chat.jsonl"}}}
  - {{name: arith, card: {root / "arith.jsonl"}, grader: math_answer}}
generation: {{max_new_tokens: 4, batch_size: 4}}
metrics:
  rm_score: {{reward_model: "run:rm-proxy"}}
  win_rate: {{judges: [rm, grader], rm_judge: "{rm_judge}", heldout_pairs: 3}}
samples: 1
"""
    )
    return load_suite(str(path))


def _cpu_model() -> str:
    import re

    found = re.search(r"^model name\s*:\s*(.+)$", open("/proc/cpuinfo").read(), re.M)
    return found.group(1).strip() if found else "unknown"


def test_a_held_out_judge_is_named_measured_and_checked(workspace, monkeypatch, tmp_path):
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    runs = workspace / "runs"
    report = run_eval(list(run_specs(runs / "dpo-tiny")), _suite(workspace, "run:rm-judge"), runs_root=runs)

    chat = report["win_rates"]["dpo-tiny vs base"]["chat"]["rm"]
    judge = chat["judge"]
    assert judge["model"] == "run:rm-judge" and judge["proxy"] == "run:rm-proxy" and not judge["same_as_proxy"]
    assert judge["saw_training_prompts"] is False and judge["held_out"] is True  # p* vs j* prompts: disjoint
    assert judge["eval_prompts_in_judge_training"] == 1  # "Write a haiku." is one of the judge's training prompts
    accuracy = judge["heldout_accuracy"]
    assert accuracy["n"] == 3 and 0.0 <= accuracy["value"] <= 1.0 and accuracy["card"].endswith("judged.yaml")
    assert report["judges"]["rm"]["heldout_accuracy"] == accuracy
    # the judge's own scores sit beside the proxy's: two different reward models, two different numbers
    base_chat = report["metrics"]["base"]["sets"]["chat"]
    assert base_chat["rm_judge_score"]["judge"] == "run:rm-judge"
    assert base_chat["rm_judge_score"]["scores"] != base_chat["rm_score"]["scores"]
    agreement = report["win_rates"]["dpo-tiny vs base"]["arith"]["rm"]["agreement_with_grader"]
    assert agreement["n"] == 2 and 0.0 <= agreement["value"] <= 1.0
    assert report["goals"]["judge"]["model"] == "run:rm-judge" and report["goals"]["prompt_set"] == "chat"

    md = render_markdown(report, [])
    # the report names the machine it measured on and the precision its scores were computed in
    machine = report["machine"]
    assert machine["cpu_model"] == _cpu_model() and machine["precision"] == {"suite": "exact", "effective": "exact"}
    assert f"Machine: {machine['cpu_model']} (" in md and "Scoring precision: exact; replies decoded exact." in md
    assert "| dpo-tiny vs base | chat | rm: `run:rm-judge` | no |" in md
    assert "RM score (judge)" in md and "RM score (proxy)" in md and "same model as the proxy" not in md
    assert "**Caveat: judge `run:rm-judge` trained on 1 of the 3 `chat` prompts it judges here.**" in md


def test_the_proxy_as_judge_is_flagged(workspace, monkeypatch, tmp_path):
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    runs = workspace / "runs"
    report = run_eval(list(run_specs(runs / "dpo-tiny")), _suite(workspace, "run:rm-proxy"), runs_root=runs)
    judge = report["win_rates"]["dpo-tiny vs base"]["chat"]["rm"]["judge"]
    assert judge["same_as_proxy"] is True and judge["saw_training_prompts"] is True and not judge["held_out"]
    assert judge["shared_prompt_ids"] == 3  # the proxy trained on the policy's own card
    assert "rm_judge_score" not in report["metrics"]["base"]["sets"]["chat"]  # same scores as rm_score
    md = render_markdown(report, [])
    assert "(**= proxy**) | **yes** (3 prompts)" in md and "**Caveat: the rm judge `run:rm-proxy`" in md
    assert {r["key"]: r for r in report["goals"]["rows"]}["win_rate"]["status"] in ("unverified", "missed")


def test_the_start_models_half_computed_ahead_is_what_the_eval_reuses(workspace, monkeypatch, tmp_path):
    # alignkit.eval.baseline_warmup, which `alignkit train` runs in its side lane while training: the eval afterwards
    # generates only the trained model's replies, and reports the same numbers as an eval from cold caches.
    import alignkit.eval.generation as generation
    from alignkit.eval.baseline_warmup import warm_baseline

    runs = workspace / "runs"
    suite = _suite(workspace, "run:rm-judge")
    calls: list[bool] = []  # per generation on a cache miss: was the model the adapted one?
    original = generation._run_generation

    def counted(model, *args, **kwargs):
        calls.append(hasattr(model, "peft_config"))
        return original(model, *args, **kwargs)

    monkeypatch.setattr(generation, "_run_generation", counted)
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cold"))
    cold = run_eval(list(run_specs(runs / "dpo-tiny")), _suite(workspace, "run:rm-judge"), runs_root=runs)
    assert sorted(calls) == [False, False, True, True]  # two prompt sets, two models

    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "warm"))
    base = run_specs(runs / "dpo-tiny")[0]
    calls.clear()
    assert warm_baseline(base.base, str(suite.path), None, runs) is True
    assert calls == [False, False]  # the start model only
    calls.clear()
    warm = run_eval(list(run_specs(runs / "dpo-tiny")), _suite(workspace, "run:rm-judge"), runs_root=runs)
    assert calls == [True, True]  # the start model's replies came from the cache
    for name in ("base", "dpo-tiny"):
        for set_name, got in warm["metrics"][name]["sets"].items():
            want = cold["metrics"][name]["sets"][set_name]
            assert got["rm_score"]["scores"] == pytest.approx(want["rm_score"]["scores"], abs=1e-6), (name, set_name)
    assert warm["win_rates"] == cold["win_rates"]


def test_the_warm_up_skips_when_a_reward_model_is_not_trained(workspace, tmp_path, monkeypatch, capsys):
    from alignkit.eval.baseline_warmup import main

    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    suite = _suite(workspace, "run:rm-missing")  # a judge run that does not exist
    monkeypatch.setattr("alignkit.pipeline.missing_runs", lambda needs, root: [_Pending("rm-missing")])
    assert main([str(workspace / "nowhere"), "--suite", str(suite.path)]) == 0
    assert capsys.readouterr().out.strip() == "baseline warm-up: skipped, run:rm-missing is not trained yet"
    assert not (tmp_path / "cache" / "generations").exists()


class _Pending:
    def __init__(self, name):
        self.need = type("Need", (), {"name": name})()


def test_the_warm_up_scores_perplexity_under_the_comparisons_reference(tmp_path, monkeypatch):
    # A pipeline warms each method's run alone, and a run alone would score its replies under its own start (the
    # merged SFT model); the comparisons score them under the base model. `--reference` makes the keys meet.
    import alignkit.eval.harness as harness
    from alignkit.eval.baseline_warmup import main
    from alignkit.eval.model_spec import ModelSpec

    seen = []
    monkeypatch.setattr("alignkit.pipeline.missing_runs", lambda needs, root: [])
    monkeypatch.setattr(harness, "run_eval", lambda specs, suite, runs_root: seen.append(suite))
    assert main([str(tmp_path / "model"), "--suite", "smol", "--reference", "/models/base"]) == 0
    assert main([str(tmp_path / "model"), "--suite", "smol"]) == 0
    assert [s.metric("perplexity").reference_model for s in seen] == ["/models/base", "base"]
    # what eval/metric_perplexity.py builds from each: the same weights, so the same score-cache key
    named = ModelSpec("reference", "/models/base")
    first = ModelSpec(name="base", base="/models/base").without_adapter("reference")
    assert named.with_precision("fast").identity() == first.with_precision("fast").identity()
