"""What a recipe may make alignkit run (issue 15): a model's own Python code only with ``trust_remote_code: true``
in the recipe, which warns in one line; a reward function of the user's by import path (``package.module:function``),
resolved before any run directory exists. The bad import paths are cases of the bad-input matrix
(tests/bad_input_cases.py)."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import pytest
from tiny_recipes import TINY_KEYS, pair_card, sft_card

from alignkit.cli import main
from alignkit.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent


def _from_pretrained_calls():
    """Every ``Auto*.from_pretrained(...)`` call in alignkit's code (alignkit/, eval/, plugins/)."""
    for folder in ("alignkit", "eval", "plugins"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                func = getattr(node, "func", None)
                if (
                    isinstance(node, ast.Call)
                    and isinstance(func, ast.Attribute)
                    and func.attr == "from_pretrained"
                    and isinstance(func.value, ast.Name)
                    and func.value.id.startswith("Auto")
                ):
                    yield path, node


def test_every_model_and_tokenizer_load_decides_trust_remote_code():
    """transformers' default (False) is not left implicit anywhere: each load passes trust_remote_code, or a
    ``**kwargs`` built in the same function with that key."""
    missing, calls = [], 0
    for path, call in _from_pretrained_calls():
        calls += 1
        named = any(k.arg == "trust_remote_code" for k in call.keywords)
        spread = any(k.arg is None for k in call.keywords)
        source = ast.get_source_segment(path.read_text(encoding="utf-8"), call) or ""
        if not named and not (spread and "trust_remote_code" in _enclosing_function(path, call)):
            missing.append(f"{path.relative_to(ROOT)}:{call.lineno}: {source[:80]}")
    assert calls >= 8 and not missing, missing


def _enclosing_function(path: Path, call: ast.Call) -> str:
    """The source of the innermost function around ``call``."""
    text = path.read_text(encoding="utf-8")
    functions = [
        node
        for node in ast.walk(ast.parse(text))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.lineno <= call.lineno <= node.end_lineno
    ]
    innermost = max(functions, key=lambda node: node.lineno, default=None)
    return ast.get_source_segment(text, innermost) or "" if innermost else ""


class _Spy:
    """Records the trust_remote_code of every model and tokenizer load, then stops the run at the model load."""

    def __init__(self, monkeypatch):
        import transformers

        self.seen: list[tuple[str, object]] = []
        real_tokenizer = transformers.AutoTokenizer.from_pretrained

        def tokenizer(*args, **kwargs):
            self.seen.append(("tokenizer", kwargs.get("trust_remote_code", "unset")))
            return real_tokenizer(*args, **kwargs)

        def model(*args, **kwargs):
            self.seen.append(("model", kwargs.get("trust_remote_code", "unset")))
            raise OSError("the test stops here")  # alignkit turns it into its one-line model error

        monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tokenizer)
        monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model)


@pytest.mark.parametrize("opt_in", [False, True], ids=["default", "recipe-opts-in"])
def test_trust_remote_code_only_by_recipe_opt_in_with_one_warning(opt_in, tiny_model, tmp_path, monkeypatch, caplog):
    spy = _Spy(monkeypatch)
    args = ["train", "dpo-smol", f"model_name_or_path={tiny_model}", f"dataset={pair_card(tmp_path)}"]
    args += [f"output_dir={tmp_path / 'runs' / 'out'}", "max_steps=1", "--no-eval"]
    with caplog.at_level(logging.WARNING):
        assert main([*args, *(["trust_remote_code=true"] if opt_in else [])]) == 2  # stopped by the spy
    assert spy.seen and {kind for kind, _ in spy.seen} == {"tokenizer", "model"}
    assert all(value is opt_in for _, value in spy.seen), spy.seen
    warnings = [r.getMessage() for r in caplog.records if "trust_remote_code" in r.getMessage()]
    assert len(warnings) == (1 if opt_in else 0), warnings
    if opt_in:
        assert "dpo-smol.yaml: trust_remote_code: true runs the Python code" in warnings[0]
        assert "\n" not in warnings[0] and tiny_model in warnings[0]
    assert not (tmp_path / "runs" / "out").exists() and not (tmp_path / "runs" / "out.partial").exists()


def test_reward_function_by_import_path(tmp_path):
    import kill_resume_rewards

    from alignkit.train import reward_funcs_for

    keys = TINY_KEYS.replace("max_length: 64\n", "")
    recipe = tmp_path / "grpo-own.yaml"
    recipe.write_text(
        "trainer: grpo\nmodel_name_or_path: x\ndataset: d\nnum_generations: 2\n"
        "reward_funcs: ['kill_resume_rewards:char_reward', 'alignkit.plugins.common.math_grader:MathAnswer']\n" + keys
    )
    own, grader = reward_funcs_for(load_recipe(str(recipe)))
    assert own is kill_resume_rewards.char_reward  # a function as it is
    assert type(grader).__name__ == "MathAnswer"  # a class, built without arguments
    assert own(["p"], ["ab"]) == [float((97 + 98) % 7)]


@pytest.mark.parametrize("opt_in", [False, True], ids=["default", "run-opted-in"])
def test_eval_loads_a_run_with_the_trust_its_recipe_gave(opt_in, tiny_model, tmp_path, monkeypatch):
    """run.json records the recipe's opt-in, and eval loads the run's models and tokenizers (base and trained) with
    it: a model that needs its own code to train needs it to be evaluated, and no other model gets it."""
    import json

    import transformers

    from eval.model_spec import load_model, run_specs

    run = tmp_path / "runs" / "full"
    run.mkdir(parents=True)
    (run / "model").symlink_to(tiny_model, target_is_directory=True)  # a full fine-tune's weights
    meta = {"status": "finished", "recipe": "full", "trainer": "sft", "base_model": tiny_model, "model_dir": "model"}
    (run / "run.json").write_text(json.dumps({**meta, **({"trust_remote_code": True} if opt_in else {})}))
    base, trained = run_specs(run)
    assert base.trust_remote_code is opt_in and trained.trust_remote_code is opt_in
    assert trained.without_adapter().trust_remote_code is opt_in  # the reference model of a metric
    assert ("trust_remote_code" in trained.describe()) is opt_in  # the report names it only when it is on

    seen: list[tuple[str, object]] = []
    for kind, cls in (("tokenizer", transformers.AutoTokenizer), ("model", transformers.AutoModelForCausalLM)):
        real = cls.from_pretrained

        def spy(*args, _kind=kind, _real=real, **kwargs):
            seen.append((_kind, kwargs.get("trust_remote_code", "unset")))
            return _real(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    for spec in (base, trained):
        load_model(spec)
    assert sorted({kind for kind, _ in seen}) == ["model", "tokenizer"] and len(seen) == 4, seen
    assert all(value is opt_in for _, value in seen), seen


def test_a_trained_run_records_its_trust_in_run_json(tiny_model, tmp_path):
    import json

    out = tmp_path / "runs" / "sft"
    args = ["train", "sft-smol", f"model_name_or_path={tiny_model}", f"output_dir={out}", "max_steps=1"]
    args += [f"dataset={sft_card(tmp_path)}", "max_train_samples=4", "per_device_train_batch_size=2"]
    args += ["save_strategy=no", "--no-eval"]
    assert main(args) == 0
    assert json.loads((out / "run.json").read_text())["trust_remote_code"] is False
