"""lm-eval bridge: our offline tasks run on a tiny model, adapters apply the same way in peft and merge modes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from alignkit.errors import AlignkitError
from alignkit.eval import lm_eval_bridge
from alignkit.eval.lm_eval_bridge import TASKS_DIR, load_local_jsonl, run_tasks


@pytest.fixture(scope="module")
def tiny_adapter(tiny_model, tmp_path_factory) -> str:
    """A LoRA adapter on the tiny model whose B matrices are random, so it really changes the logits.

    PEFT's default init sets B = 0 (the adapter starts as the identity); an identity adapter would make peft == merge
    == base trivially true and the comparison below worthless.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    config = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    path = tmp_path_factory.mktemp("tiny-adapter")
    peft_model.save_pretrained(path)
    return str(path)


def test_arith_mc_runs_on_tiny_model(tiny_model, tmp_path):
    out = tmp_path / "lm_eval.json"
    result = run_tasks(tiny_model, None, ["alignkit_arith_mc"], limit=8, batch_size=4, output=out)
    acc = result["alignkit_arith_mc"]["acc"]
    assert 0.0 <= acc["value"] <= 1.0
    assert acc["n"] == 8
    assert acc["stderr"] is not None and acc["stderr"] >= 0.0
    written = json.loads(out.read_text())
    assert written["tasks"] == result
    assert "samples" not in written["lm_eval"]


def test_unknown_task_lists_local_tasks(tiny_model):
    with pytest.raises(AlignkitError, match=r"unknown lm-eval task.*no_such_task.*alignkit_arith_mc"):
        run_tasks(tiny_model, None, ["no_such_task"], limit=2)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"mode": "fuse"}, "mode: must be 'peft' or 'merge'"),
        ({"limit": 0}, "limit: must be positive"),
        ({"tasks": "alignkit_arith_mc"}, "tasks: expected a non-empty list"),
        ({"adapter": "/nonexistent/adapter"}, "not a PEFT adapter directory"),
    ],
)
def test_bad_arguments(tiny_model, kwargs, pattern):
    args = {"base_model": tiny_model, "adapter": None, "tasks": ["alignkit_arith_mc"], "limit": 2, **kwargs}
    with pytest.raises(AlignkitError, match=pattern):
        run_tasks(**args)


def test_lm_eval_failure_is_one_line_alignkit_error(tmp_path):
    broken = tmp_path / "not-a-model"
    broken.mkdir()
    with pytest.raises(AlignkitError, match=r"lm-eval failed on tasks \['alignkit_arith_mc'\]") as info:
        run_tasks(str(broken), None, ["alignkit_arith_mc"], limit=2)
    assert "\n" not in str(info.value)


def test_peft_and_merge_modes_agree(tiny_model, tiny_adapter):
    def ppl(adapter, mode):
        result = run_tasks(tiny_model, adapter, ["alignkit_sharegpt_ppl"], limit=2, batch_size=2, mode=mode)
        return result["alignkit_sharegpt_ppl"]["word_perplexity"]["value"]

    base, peft, merged = ppl(None, "peft"), ppl(tiny_adapter, "peft"), ppl(tiny_adapter, "merge")
    assert math.isfinite(base) and base > 1.0
    assert peft == pytest.approx(merged, rel=1e-4)  # the same weights, applied two ways
    assert abs(peft - base) / base > 1e-3  # and the adapter was applied at all


def test_merge_mode_cleans_up_its_checkpoint(tiny_model, tiny_adapter, monkeypatch):
    seen: list[str] = []
    original = lm_eval_bridge.merged_checkpoint

    def spy(*args, **kwargs):
        cm = original(*args, **kwargs)

        class Wrapper:
            def __enter__(self):
                seen.append(cm.__enter__())
                return seen[-1]

            def __exit__(self, *exc):
                return cm.__exit__(*exc)

        return Wrapper()

    monkeypatch.setattr(lm_eval_bridge, "merged_checkpoint", spy)
    run_tasks(tiny_model, tiny_adapter, ["alignkit_arith_mc"], limit=2, mode="merge")
    assert seen and not Path(seen[0]).exists()


def test_task_data_loads_from_any_working_directory(tmp_path, monkeypatch):
    # datasets would resolve a relative data_files against the cwd; our loader must not
    monkeypatch.chdir(tmp_path)
    ds = load_local_jsonl(data_files="alignkit_arith_mc/alignkit_arith_mc.jsonl")
    assert ds["test"].num_rows == 300
    assert set(ds["test"].column_names) == {"id", "question", "choices", "label"}


def test_local_task_names():
    assert {"alignkit_arith_mc", "alignkit_sharegpt_ppl"} <= set(lm_eval_bridge.local_task_names())


def test_arith_jsonl_is_reproducible(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_arith_mc", TASKS_DIR / "build_arith_mc.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    assert builder.main(["--check"]) == 0
    rows = builder.build_rows()
    for row in rows:  # exactly one correct choice, and it is the arithmetic answer
        a, op, b = row["question"].removeprefix("What is ").removesuffix("?").split()
        answer = {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]
        assert row["choices"][row["label"]] == str(answer)
        assert len(set(row["choices"])) == 4


def test_sharegpt_extract_is_small_and_held_out():
    from alignkit.data.sharegpt import conversation_key
    from alignkit.data.splits import split_of

    path = TASKS_DIR / "alignkit_sharegpt_ppl" / "alignkit_sharegpt_ppl.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert 0 < len(rows) <= 200 and path.stat().st_size < 1_000_000
    assert all(row["text"].strip() for row in rows)
    # every answer is from the test split: perplexity on training answers would flatter an SFT model
    assert all(split_of(conversation_key(row["id"])) == "test" for row in rows)
