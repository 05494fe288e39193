"""The bad-input matrix (issue 15): one case table, run by the tests and rendered into bench/results/reliability.md.

Each case builds its inputs in a fresh directory and returns the ``alignkit`` argv to run. :func:`run_case` calls the
CLI in-process (``alignkit.cli.main``), with stderr captured, and records what a user would see: the exit code, the
stderr lines, and every file the call left behind in the case directory or the alignkit cache. The test
(tests/test_bad_input_matrix.py) requires exit 2, exactly one stderr line matching the case's regex, no traceback
and nothing written; tests/reliability_table.py renders the same results into the table, so the two cannot drift.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import shutil
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

PAIRS = [
    {
        "prompt": [{"role": "user", "content": f"Say something about the number {i}."}],
        "chosen": [{"role": "assistant", "content": f"The number {i} is a fine number."}],
        "rejected": [{"role": "assistant", "content": "no no no no no"}],
    }
    for i in range(12)
]
CARD_TAIL = "splits: {train: train, test: test}\nlicense: test\nsize: 12 rows\nrebuild: written by the test\n"


@dataclass
class Ctx:
    """What a case builds its inputs from: its own directory, the tiny model fixtures, patches and env overrides."""

    tmp: Path
    tiny_model: str
    patches: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def runs(self) -> Path:
        return self.tmp / "runs"

    def write(self, name: str, text: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
        return path

    def jsonl(self, name: str, rows: list[dict]) -> Path:
        return self.write(name, "".join(json.dumps(r) + "\n" for r in rows))

    def pair_card(self, name: str = "pairs", train: str | None = None, test: str | None = None, **fmt: Any) -> Path:
        """A file card over ``{name}-train.jsonl``/``{name}-test.jsonl`` (written from PAIRS unless given)."""
        ext = fmt.get("ext", "jsonl")
        self.write(f"{name}-train.{ext}", train if train is not None else _jsonl_text(PAIRS[:8]))
        self.write(f"{name}-test.{ext}", test if test is not None else _jsonl_text(PAIRS[8:]))
        kind = fmt.get("type", "preference")
        return self.write(
            f"{name}.yaml",
            f"name: {name}\ndescription: test data\nsource: {{file: '{name}-{{split}}.{ext}'}}\n"
            f"format: {{type: {kind}, conversational: true}}\n"
            "columns: {prompt: prompt, chosen: chosen, rejected: rejected}\n" + CARD_TAIL,
        )

    def train(self, *overrides: str, recipe: str = "dpo-smol", model: str | None = None, flags=()) -> list[str]:
        """``alignkit train`` on the tiny model and the test pairs, 1 step, into ``runs/out``; overrides win."""
        keys = {
            "model_name_or_path": model or self.tiny_model,
            "dataset": str(self.pair_card()) if recipe.startswith("dpo") else None,
            "output_dir": str(self.runs / "out"),
            "max_steps": "1",
            "per_device_train_batch_size": "2",
            "gradient_accumulation_steps": "1",
            "max_length": "64",
        }
        for item in overrides:
            key, _, value = item.partition("=")
            keys[key] = value
        # an empty value drops a key (GRPO has no max_length)
        return ["train", recipe, *(f"{k}={v}" for k, v in keys.items() if v), "--no-eval", *flags]

    def patch(self, target: str, value: Any) -> None:
        self.patches.enter_context(mock.patch(target, value))

    def suite(self, body: str, prompts: list[dict] | None = None) -> Path:
        self.jsonl("prompts.jsonl", prompts if prompts is not None else [{"prompt": "Say hi."}])
        return self.write(
            "suite.yaml",
            f"name: t\nprompt_sets:\n  - {{name: p, card: {self.tmp / 'prompts.jsonl'}, max_prompts: 2}}\n"
            "generation: {max_new_tokens: 4, do_sample: false}\n" + body,
        )

    def finished_run(self, name: str, **meta: Any) -> Path:
        """A run directory that looks finished (run.json + an empty adapter dir), without training."""
        run = self.runs / name
        (run / "adapter").mkdir(parents=True, exist_ok=True)
        record = {"recipe": name, "trainer": "dpo", "status": "finished", "base_model": self.tiny_model}
        (run / "run.json").write_text(json.dumps({**record, "adapter_dir": "adapter", **meta}))
        return run


def _jsonl_text(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


@dataclass(frozen=True)
class Case:
    id: str
    area: str
    what: str  # the bad input, in words
    setup: Callable[[Ctx], list[str]]
    expect: str  # regex the one stderr line must match (re.search)
    code: int = 2


# --- recipes ---------------------------------------------------------------------------------------------------------


def _yaml_syntax(ctx: Ctx) -> list[str]:
    path = ctx.write("broken.yaml", "trainer: dpo\ndataset: x\nbeta: [0.1\nmax_steps: 2\n")
    return ["train", str(path)]


def _bf16_without_hardware(ctx: Ctx) -> list[str]:
    from alignkit.hardware import Hardware

    ctx.patch("alignkit.hardware.detect", lambda: Hardware(device="cpu", cpu_count=2, cpu_bf16=False))
    return ctx.train("bf16=true")


def _four_bit_without_bnb(ctx: Ctx) -> list[str]:
    ctx.patch("alignkit.hardware.four_bit_problem", lambda: "bitsandbytes is not installed")
    return ctx.train("load_in_4bit=true", "use_peft=true")


def _unfinished_run_model(ctx: Ctx) -> list[str]:
    (ctx.runs / "sft-half").mkdir(parents=True)
    (ctx.runs / "sft-half" / "run.json").write_text(json.dumps({"status": "running", "trainer": "sft"}))
    return ctx.train(model="run:sft-half")


def _bool_typo_suite(ctx: Ctx) -> Path:
    path = ctx.suite("metrics:\n  diversity: {}\n")
    path.write_text(path.read_text().replace("do_sample: false", "do_sample: maybe"))
    return path


def _grpo(ctx: Ctx, *overrides: str) -> list[str]:
    return ctx.train("max_length=", "per_device_train_batch_size=4", *overrides, recipe="grpo-smol-rloo")


def _reward_module_broken(ctx: Ctx) -> list[str]:
    ctx.write("broken_rewards.py", "def my_fn(prompts, completions, **kw):\n    return [0.0]\n\n\n1 / 0\n")
    ctx.patch("sys.path", [str(ctx.tmp), *sys.path])  # as if on PYTHONPATH
    ctx.patch("sys.dont_write_bytecode", True)  # no __pycache__ left in the case directory
    return _grpo(ctx, "reward_funcs=[broken_rewards:my_fn]")


# --- data ------------------------------------------------------------------------------------------------------------


def _missing_column(ctx: Ctx) -> list[str]:
    rows = _jsonl_text([{"prompt": "p", "chosen": "c"}])
    return ctx.train(f"dataset={ctx.pair_card('nocol', train=rows, test=rows)}")


def _preference_to_sft(ctx: Ctx) -> list[str]:
    return ctx.train(f"dataset={ctx.pair_card()}", recipe="sft-smol")


def _empty_train_split(ctx: Ctx) -> list[str]:
    return ctx.train(f"dataset={ctx.pair_card('empty', train='')}")


def _non_utf8(ctx: Ctx) -> list[str]:
    bad = _jsonl_text(PAIRS[:3]).encode() + '{"prompt": "caf\u00e9"}\n'.encode("latin-1")
    return ctx.train(f"dataset={ctx.pair_card('latin', train=bad)}")


def _bad_line_in_middle(ctx: Ctx) -> list[str]:
    lines = _jsonl_text(PAIRS[:6]).splitlines()
    lines[2] = lines[2][:-5] + ", ,}"
    return ctx.train(f"dataset={ctx.pair_card('midbad', train=chr(10).join(lines) + chr(10))}")


def _truncated_jsonl(ctx: Ctx) -> list[str]:
    cut = _jsonl_text(PAIRS[:1])[:40]  # the only row, cut mid-record: nothing complete remains
    return ctx.train(f"dataset={ctx.pair_card('cut', train=cut)}")


def _truncated_json(ctx: Ctx) -> list[str]:
    text = json.dumps(PAIRS[:8], indent=1)
    card = ctx.pair_card("cutjson", train=text[: len(text) // 2], test=json.dumps(PAIRS[8:]), ext="json")
    return ctx.train(f"dataset={card}")


def _all_rows_too_long(ctx: Ctx) -> list[str]:
    return ctx.train("max_length=4")


def _bad_card_field(ctx: Ctx) -> list[str]:
    card = ctx.pair_card("badfmt")
    card.write_text(card.read_text().replace("type: preference", "type: preferences"))
    return ctx.train(f"dataset={card}")


# --- models ----------------------------------------------------------------------------------------------------------


def _dir_without_weights(ctx: Ctx) -> list[str]:
    model = ctx.tmp / "noweights"
    model.mkdir()
    shutil.copy(Path(ctx.tiny_model) / "config.json", model / "config.json")
    return ctx.train(model=str(model))


def _bin_weights_only(ctx: Ctx) -> list[str]:
    import torch
    from safetensors.torch import load_file

    model = ctx.tmp / "pickled"
    shutil.copytree(ctx.tiny_model, model)
    weights = model / "model.safetensors"
    torch.save(load_file(str(weights)), model / "pytorch_model.bin")
    weights.unlink()
    return ctx.train(model=str(model))


def _no_chat_template(ctx: Ctx) -> list[str]:
    model = ctx.tmp / "notemplate"
    shutil.copytree(ctx.tiny_model, model)
    (model / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    return ctx.train(model=str(model))


def _rm_not_classifier(ctx: Ctx) -> list[str]:
    suite = ctx.suite(f"metrics:\n  rm_score: {{reward_model: {ctx.tiny_model}}}\n")
    return ["eval", ctx.tiny_model, "--suite", str(suite), "--out", str(ctx.tmp / "out"), "--runs-root", str(ctx.runs)]


def _adapter_base_mismatch(ctx: Ctx) -> list[str]:
    from alignkit.models import build_tiny_model

    other = build_tiny_model(ctx.tmp / "qwen-base", arch="qwen2")
    run = ctx.finished_run("mismatch", base_model=str(other))
    (run / "adapter" / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "base_model_name_or_path": ctx.tiny_model, "r": 4})
    )
    suite = ctx.suite("metrics:\n  diversity: {}\n")
    return ["eval", str(run), "--suite", str(suite), "--out", str(ctx.tmp / "out"), "--runs-root", str(ctx.runs)]


# --- eval ------------------------------------------------------------------------------------------------------------


def _eval(ctx: Ctx, suite: Path, *targets: str) -> list[str]:
    return ["eval", *(targets or [ctx.tiny_model]), "--suite", str(suite), "--out", str(ctx.tmp / "out"),
            "--runs-root", str(ctx.runs)]  # fmt: skip


def _compare_different_suites(ctx: Ctx) -> list[str]:
    a = ctx.finished_run("a", eval_suite="smol")
    b = ctx.finished_run("b", eval_suite="default")
    return ["eval", str(a), "--compare", str(b), "--out", str(ctx.tmp / "out"), "--runs-root", str(ctx.runs)]


# --- files -----------------------------------------------------------------------------------------------------------


def _finished_run_exists(ctx: Ctx) -> list[str]:
    ctx.finished_run("out")
    return ctx.train()


def _interrupted_run_exists(ctx: Ctx) -> list[str]:
    (ctx.runs / "out.partial").mkdir(parents=True)
    return ctx.train()


def _unwritable_output(ctx: Ctx) -> list[str]:
    ctx.write("blocker", "a file where a directory should be")
    return ctx.train(f"output_dir={ctx.tmp / 'blocker' / 'runs' / 'out'}")


def _live_lock(ctx: Ctx) -> list[str]:
    from alignkit.run_lock import LOCK_FILE

    (ctx.runs / "out.partial").mkdir(parents=True)
    (ctx.runs / "out.partial" / LOCK_FILE).write_text(
        json.dumps({"pid": os.getppid(), "host": socket.gethostname(), "started": "2026-12-02T09:00:00+0000"})
    )
    return ctx.train(flags=("--resume",))


CASES: list[Case] = [
    # recipes
    Case("recipe-unknown-key", "recipe", "a misspelled key", lambda c: c.train("max_stepz=3"),
         r"unknown key\(s\) 'max_stepz' for trainer 'dpo'"),
    Case("recipe-wrong-type", "recipe", "a string where a float belongs", lambda c: c.train("learning_rate=fast"),
         r"dpo-smol\.yaml: field learning_rate.*'fast'"),
    Case("recipe-yaml-syntax", "recipe", "a YAML syntax error", _yaml_syntax, r"broken\.yaml:\d+: invalid YAML"),
    Case("recipe-unknown-name", "recipe", "a recipe name that does not exist", lambda c: ["train", "dpo-smoll"],
         r"unknown recipe 'dpo-smoll'; available: .*alignkit list"),
    Case("recipe-unknown-trainer", "recipe", "trainer: orpo", lambda c: c.train("trainer=orpo"),
         r"field 'trainer' must be one of \['cpo'.*got 'orpo'"),
    Case("recipe-bf16-without-hardware", "recipe", "bf16: true on a CPU without avx512_bf16/AMX",
         _bf16_without_hardware, r"field 'bf16'.*avx512_bf16.*bf16: false"),
    Case("recipe-4bit-without-bitsandbytes", "recipe", "load_in_4bit where bitsandbytes cannot run",
         _four_bit_without_bnb, r"field 'load_in_4bit'.*bitsandbytes.*load_in_4bit: false"),
    Case("recipe-negative-beta", "recipe", "beta: -1 (DPO), which TRL accepts and trains inverted",
         lambda c: c.train("beta=-1"), r"dpo-smol\.yaml: field 'beta' must be a finite number > 0, got -1"),
    Case("recipe-zero-learning-rate", "recipe", "learning_rate: 0, which transformers accepts",
         lambda c: c.train("learning_rate=0"), r"field 'learning_rate' must be a finite number > 0, got 0"),
    Case("recipe-zero-temperature", "recipe", "temperature: 0 (GRPO), which TRL accepts",
         lambda c: _grpo(c, "temperature=0"), r"field 'temperature' must be a finite number > 0, got 0"),
    Case("recipe-float-count", "recipe", "max_steps: 2.5, which reached the trainer as a float",
         lambda c: c.train("max_steps=2.5"), r"field 'max_steps' must be a whole number, got 2\.5"),
    Case("recipe-zero-batch", "recipe", "per_device_train_batch_size: 0, which fails only after sampling",
         lambda c: c.train("per_device_train_batch_size=0"),
         r"field 'per_device_train_batch_size' must be a finite number >= 1, got 0"),
    Case("recipe-zero-lora-rank", "recipe", "lora_r: 0, which PEFT rejects with a traceback",
         lambda c: c.train("lora_r=0"), r"field 'lora_r' must be a finite number >= 1, got 0"),
    Case("recipe-overwrite-and-resume", "recipe", "--overwrite with --resume",
         lambda c: c.train(flags=("--overwrite", "--resume")), r"OVERWRITE=1 and RESUME=1 contradict.*choose one"),
    Case("plugin-kl-target-zero", "recipe", "kl_target: 0", lambda c: c.train("kl_target=0", "kl_horizon=100"),
         r"kl_target.*> 0|kl_target.*positive"),
    Case("plugin-unknown-advantage", "recipe", "advantage_method: zscore",
         lambda c: _grpo(c, "advantage_method=zscore"), r"advantage_method must be one of \[.*'rloo'.*got 'zscore'"),
    Case("plugin-penalty-twice", "recipe", "a length penalty as a field and as a reward function",
         lambda c: _grpo(c, "length_penalty_coef=0.1", "length_penalty_target=32",
                         "reward_funcs=[math_answer, length_penalty]"),
         r"'length_penalty_coef' and reward_funcs entry 'length_penalty'.*keep one"),
    Case("recipe-model-run-missing", "recipe", "model_name_or_path: run:NAME with no such run",
         lambda c: c.train(model="run:sft-nope"), r"model_name_or_path.*run:sft-nope.*alignkit train sft-nope"),
    Case("recipe-model-run-unfinished", "recipe", "model_name_or_path: run:NAME of an unfinished run",
         _unfinished_run_model, r"model_name_or_path.*run:sft-half.*not finished.*--resume"),
    Case("recipe-reward-module-missing", "recipe", "reward_funcs: [mypkg.rewards:my_fn], no such module",
         lambda c: _grpo(c, "reward_funcs=[mypkg.rewards:my_fn]"),
         r"grpo-smol-rloo\.yaml: reward_funcs: 'mypkg\.rewards:my_fn': no module named 'mypkg'.*PYTHONPATH"),
    Case("recipe-reward-function-missing", "recipe", "reward_funcs: [json:my_fn], no such function in the module",
         lambda c: _grpo(c, "reward_funcs=[json:my_fn]"),
         r"reward_funcs: 'json:my_fn': module json has no attribute 'my_fn'; check the name after ':'"),
    Case("recipe-reward-not-callable", "recipe", "reward_funcs: [math:pi], not a function",
         lambda c: _grpo(c, "reward_funcs=[math:pi]"), r"reward_funcs: 'math:pi' is a float, not a function"),
    Case("recipe-reward-path-malformed", "recipe", "reward_funcs: [mypkg.rewards:], no function named",
         lambda c: _grpo(c, "reward_funcs=['mypkg.rewards:']"),
         r"reward_funcs: 'mypkg\.rewards:' is not an import path of the form package\.module:function"),
    Case("recipe-reward-module-broken", "recipe", "reward_funcs: a module that raises when imported",
         _reward_module_broken,
         r"'broken_rewards:my_fn': importing broken_rewards failed \(ZeroDivisionError: .*fix that module"),
    # data
    Case("data-missing-column", "data", "a preference file without 'rejected'", _missing_column,
         r"source column 'rejected' is missing"),
    Case("data-wrong-format", "data", "a preference card given to an SFT recipe", _preference_to_sft,
         r"card 'pairs'.*preference.*sft.*(language_modeling|prompt_completion)"),
    Case("data-empty-train-split", "data", "a train split with no rows", _empty_train_split,
         r"card 'empty'.*train.*no rows"),
    Case("data-non-utf8", "data", "a JSONL file in Latin-1", _non_utf8, r"latin-train\.jsonl:4: not UTF-8"),
    Case("data-jsonl-bad-line", "data", "one malformed line in the middle of a JSONL", _bad_line_in_middle,
         r"midbad-train\.jsonl:3: invalid JSON.*not skipped"),
    Case("data-truncated-jsonl", "data", "a JSONL cut inside its only record", _truncated_jsonl,
         r"cut-train\.jsonl:1: .*truncated.*no complete row"),
    Case("data-truncated-json", "data", "a JSON array cut in half", _truncated_json,
         r"cutjson-train\.json:\d+: .*(truncated|invalid JSON)"),
    Case("data-all-rows-too-long", "data", "max_length shorter than every prompt", _all_rows_too_long,
         r"field 'max_length' 4.*all 8 rows.*raise max_length"),
    Case("data-unknown-card", "data", "dataset: a card that does not exist",
         lambda c: c.train("dataset=sharegpt-nope"),
         r"unknown dataset card 'sharegpt-nope'; available:"),
    Case("data-card-bad-field", "data", "format.type: preferences", _bad_card_field,
         r"badfmt\.yaml: field 'format\.type' must be one of"),
    # models
    Case("model-missing-path", "model", "a local model path that does not exist",
         lambda c: c.train(model="/nonexistent/model"), r"model path '/nonexistent/model' does not exist"),
    Case("model-hub-offline", "model", "a hub id while offline", lambda c: c.train(model="some-org/some-model"),
         r"model 'some-org/some-model' is not in the local cache.*HF_HUB_OFFLINE"),
    Case("model-dir-without-weights", "model", "a model directory with config.json only", _dir_without_weights,
         r"noweights.*no weights"),
    Case("model-bin-weights-only", "model", "a model directory with pickled .bin weights only", _bin_weights_only,
         r"pickled.*only pickled \*\.bin weights.*safetensors only.*safe_serialization=True"),
    Case("model-no-chat-template", "model", "a tokenizer without chat template on conversational data",
         _no_chat_template, r"notemplate.*no chat template.*conversational"),
    Case("model-rm-not-classifier", "model", "a causal LM given as reward model", _rm_not_classifier,
         r"reward_model.*not a sequence classifier"),
    Case("model-adapter-base-mismatch", "model", "an adapter evaluated on a different base", _adapter_base_mismatch,
         r"adapter.*trained on.*not.*base"),
    # eval
    Case("eval-empty-prompt-set", "eval", "a prompt file with no rows",
         lambda c: _eval(c, c.suite("metrics:\n  diversity: {}\n", prompts=[])),
         r"prompt set 'p'.*no rows; add prompts"),
    Case("eval-missing-judge", "eval", "win_rate rm_judge: a path that does not exist",
         lambda c: _eval(c, c.suite("metrics:\n  win_rate: {judges: [rm], rm_judge: /nonexistent/judge}\n")),
         r"rm_judge.*'/nonexistent/judge' does not exist"),
    Case("eval-compare-different-suites", "eval", "--compare on runs evaluated with different suites",
         _compare_different_suites, r"different eval suites.*--suite"),
    Case("eval-unknown-metric", "eval", "metrics: {rouge: {}}",
         lambda c: _eval(c, c.suite("metrics:\n  rouge: {}\n")), r"unknown key 'rouge' in 'metrics'"),
    Case("eval-suite-bad-count", "eval", "perplexity batch_size: 0, which failed only after generating",
         lambda c: _eval(c, c.suite("metrics:\n  perplexity: {batch_size: 0}\n")),
         r"'metrics\.perplexity\.batch_size' must be >= 1, got 0"),
    Case("eval-suite-bool-typo", "eval", "do_sample: maybe, which read as true",
         lambda c: _eval(c, _bool_typo_suite(c)),
         r"'generation\.do_sample' must be true or false"),
    Case("eval-unknown-judge", "eval", "win_rate judges: [gpt4]",
         lambda c: _eval(c, c.suite("metrics:\n  win_rate: {judges: [gpt4]}\n")),
         r"win_rate: unknown judge 'gpt4' \(known: "),
    # files
    Case("files-finished-run-exists", "files", "train onto a finished run", _finished_run_exists,
         r"already holds a finished run; OVERWRITE=1 replaces it, RESUME=1 continues it"),
    Case("files-interrupted-run-exists", "files", "train onto an interrupted run", _interrupted_run_exists,
         r"an interrupted run is in .*out\.partial; RESUME=1 continues it"),
    Case("files-nothing-to-resume", "files", "--resume with no run", lambda c: c.train(flags=("--resume",)),
         r"nothing to resume"),
    Case("files-unwritable-output", "files", "an output_dir that cannot be created", _unwritable_output,
         r"cannot create run directory .*blocker"),
    Case("files-run-locked", "files", "a run directory held by a live process", _live_lock,
         r"out\.partial is in use by process \d+.*wait for it"),
]  # fmt: skip


@dataclass
class Outcome:
    case: Case
    code: int | None
    stderr: str
    left_behind: list[str]

    @property
    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    @property
    def message(self) -> str:
        return self.lines[-1] if self.lines else ""

    def problems(self) -> list[str]:
        """What is wrong with this outcome against the matrix's rules (empty when the case passes)."""
        out = []
        if self.code != self.case.code:
            out.append(f"exit code {self.code}, expected {self.case.code}")
        if len(self.lines) != 1:
            out.append(f"{len(self.lines)} stderr lines, expected 1: {self.lines[:12]}")
        if "Traceback" in self.stderr:
            out.append("a traceback on stderr")
        if not re.search(self.case.expect, self.message):
            out.append(f"message {self.message!r} does not match {self.case.expect!r}")
        if self.left_behind:
            out.append(f"left behind: {self.left_behind}")
        return out


def _tree(root: Path) -> set[str]:
    """Every file and non-empty directory under ``root`` (an empty parent such as ``runs/`` holds nothing)."""
    if not root.exists():
        return set()
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir() or any(p.iterdir())}


def run_case(case: Case, base: Path, tiny_model: str) -> Outcome:
    """Run one case in-process in ``base/<case id>``; see the module docstring."""
    from alignkit.cli import main

    ctx = Ctx(base / case.id, tiny_model)
    shutil.rmtree(ctx.tmp, ignore_errors=True)
    ctx.tmp.mkdir(parents=True)
    # a cache of its own: whatever the case writes there shows, and other processes' cache writes do not
    cache = base / f"{case.id}.cache"
    shutil.rmtree(cache, ignore_errors=True)
    ctx.env.setdefault("ALIGNKIT_CACHE", str(cache))
    stderr = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_env = root.handlers[:], dict(os.environ)
    with ctx.patches:
        try:
            argv = case.setup(ctx)
        except Exception as exc:  # a broken case setup is a failing case, not a crashed matrix
            return Outcome(case, None, f"case setup failed: {type(exc).__name__}: {exc}", [])
        before, cache_before = _tree(ctx.tmp), _tree(cache)
        os.environ.update(ctx.env)
        root.handlers[:] = []  # the CLI's own logging setup then writes to the captured stderr
        try:
            with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
                try:
                    code = main(argv)
                except SystemExit as exc:
                    code = exc.code
        finally:
            root.handlers[:] = saved_handlers
            os.environ.clear()
            os.environ.update(saved_env)
    left = sorted(_tree(ctx.tmp) - before) + sorted(f"<cache>/{p}" for p in _tree(cache) - cache_before)
    return Outcome(case, code, stderr.getvalue(), left)


def normalize(text: str, replacements: dict[str, str]) -> str:
    """Machine-specific paths replaced by placeholders, longest first (for the committed table)."""
    for old in sorted(replacements, key=len, reverse=True):
        text = text.replace(old, replacements[old])
    return text


def render_table(outcomes: list[Outcome], replacements: dict[str, str]) -> str:
    """bench/results/reliability.md from the outcomes of every case, in table order."""
    lines = [
        "# Reliability: the bad-input matrix",
        "",
        "Generated by `tests/reliability_table.py` from the case table in `tests/bad_input_cases.py`; "
        "`tests/test_bad_input_matrix.py` runs the same cases and fails when this file differs from what they print.",
        "Every case exits with code 2, prints exactly this one line on stderr (no traceback; `--debug` shows it) and "
        "leaves no run directory, report or cache entry behind. Paths: `<tmp>` is the case's directory, `<tiny>` a "
        "tiny test model, `<repo>` the checkout. Regenerate: `.venv/bin/python tests/reliability_table.py`.",
        "",
        "| case | bad input | exit | the one line on stderr |",
        "|---|---|---|---|",
    ]
    for o in outcomes:
        message = normalize(o.message, replacements).replace("|", "\\|")
        lines.append(f"| `{o.case.id}` | {o.case.what} | {o.code} | {message} |")
    return "\n".join(lines) + "\n"


def replacements_for(base: Path, tiny_model: str) -> dict[str, str]:
    repo = str(Path(__file__).resolve().parent.parent)
    out = {tiny_model: "<tiny>", repo: "<repo>"}
    out.update({f"process {os.getppid()} on {socket.gethostname()}": "process <pid> on <host>"})  # files-run-locked
    for case in CASES:
        out[str(base / case.id)] = "<tmp>"
    return out


if __name__ == "__main__":  # a quick look: python tests/bad_input_cases.py [case-id ...]
    import tempfile

    from alignkit.models import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="alignkit-matrix-"))
    tiny = str(build_tiny_model(work / "tiny"))
    for case in CASES:
        if sys.argv[1:] and case.id not in sys.argv[1:]:
            continue
        outcome = run_case(case, work / "cases", tiny)
        print(f"{'FAIL' if outcome.problems() else 'ok  '} {case.id}: {outcome.code} {outcome.message!r}")
        for problem in outcome.problems():
            print(f"       {problem[:600]}")
    shutil.rmtree(work, ignore_errors=True)
