"""The eval harness: generate once per model, score with every metric of a suite, compare against a baseline.

Flow (each model is loaded once, and released before the next, so a comparison of N runs never holds N models)::

    preflight   suite, prompt sets, reward model and judge resolution  (user errors surface before any compute)
    per model   generations (cached) -> held-out perplexity (a) -> preference metrics
    shared      RM scores -> response perplexity under the reference (b) -> judges / win rates -> lm-eval
    report      report.json, report.md, charts, metrics.json -- rendered in memory, then written atomically

The first model is the baseline: win rates are "model vs baseline" (> 0.5 means the model wins). For a run
directory the baseline is the base checkpoint (no adapter) and the other model is the trained one. Nothing is
written until every metric has been computed, so a failure leaves no partial report behind.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from alignkit.chat_format import Messages, as_messages
from alignkit.errors import AlignkitError
from alignkit.eval.generation import Generations, generate
from alignkit.eval.model_spec import ModelSpec, load_model
from alignkit.eval.stats import mean_std_ci
from alignkit.eval.suite import PromptSet, Suite

logger = logging.getLogger(__name__)


@dataclass
class PromptData:
    """A loaded prompt set: chat prompts, optional reference answers (graded sets) and reference completions."""

    spec: PromptSet
    prompts: list[Messages]
    references: list[Any] | None = None
    completions: list[str] | None = None  # the dataset's own answers (held-out texts)


def _load_rows(card: str, split: str, n: int) -> list[dict[str, Any]]:
    """Rows of a dataset card split (``alignkit.data.cards``), or of a local JSON/JSONL file (tests, ad-hoc sets)."""
    path = Path(card)
    if path.suffix in (".jsonl", ".json"):
        if not path.is_file():
            raise AlignkitError(f"prompt file {path} does not exist")
        text = path.read_text(encoding="utf-8")
        rows = json.loads(text) if path.suffix == ".json" else [json.loads(x) for x in text.splitlines() if x.strip()]
        return rows[:n]
    try:
        from alignkit.data.cards import load_card, load_split
    except ImportError as exc:
        raise AlignkitError(f"dataset cards are unavailable ({exc}); cannot load card '{card}'") from exc
    return list(load_split(load_card(card), split, n))


def _split_conversation(messages: Messages) -> tuple[Messages, str | None]:
    """A conversation ending in an assistant turn -> (prompt messages, final answer); otherwise (messages, None)."""
    if messages and messages[-1].get("role") == "assistant":
        return [dict(m) for m in messages[:-1]], messages[-1].get("content") or ""
    return [dict(m) for m in messages], None


def rows_to_prompts(rows: list[dict[str, Any]], ps: PromptSet) -> PromptData:
    """TRL-format rows -> prompts. ``prompt`` (+ ``completion``/``chosen``) or ``messages`` (final turn = answer)."""
    if not rows:
        raise AlignkitError(f"prompt set '{ps.name}': card '{ps.card}' split '{ps.split}' has no rows")
    cols = set(rows[0])
    prompts: list[Messages] = []
    completions: list[str | None] = []
    for i, row in enumerate(rows):
        if "prompt" in row:
            prompts.append(as_messages(row["prompt"]))
            answer = row.get("completion", row.get("chosen"))
            completions.append(None if answer is None else _split_conversation(as_messages(answer))[1] or "")
        elif "messages" in row:
            prompt, answer = _split_conversation(row["messages"])
            if not prompt:
                raise AlignkitError(f"prompt set '{ps.name}': row {i} has no prompt turn before its answer")
            prompts.append(prompt)
            completions.append(answer)
        else:
            raise AlignkitError(
                f"prompt set '{ps.name}': rows need 'prompt' or 'messages', got columns {sorted(cols)}"
            )
    references = None
    if ps.grader:
        if ps.reference_column not in cols:
            raise AlignkitError(
                f"prompt set '{ps.name}': grader needs column '{ps.reference_column}'; has {sorted(cols)}"
            )
        references = [row[ps.reference_column] for row in rows]
    held = [c for c in completions if c is not None]
    return PromptData(ps, prompts, references, held if len(held) == len(prompts) else None)


def judge_prompt_text(messages: Messages) -> str:
    """The request shown to an LLM judge: the user turn, or a transcript for multi-turn prompts."""
    turns = [m for m in messages if m.get("role") != "system"]
    if len(turns) == 1:
        return turns[0]["content"]
    return "\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in turns)


class _LazyModel:
    """``(model, tokenizer)`` loaded on first call; :meth:`release` frees it."""

    def __init__(self, spec: ModelSpec):
        self.spec, self.value = spec, None

    def __call__(self) -> tuple[Any, Any]:
        if self.value is None:
            self.value = load_model(self.spec)
        return self.value

    def release(self) -> None:
        self.value = None
        gc.collect()


class _MemoScorer:
    """Memoizes a ``scorer(prompts, completions)`` by (prompt, completion), so the RM judge reuses the RM scores."""

    def __init__(self, scorer: Callable[..., list[float]]):
        self.scorer, self.memo = scorer, {}
        self.__name__ = getattr(scorer, "__name__", "scorer")

    def __call__(self, prompts: list[Any], completions: list[str]) -> list[float]:
        keys = [(json.dumps(p, sort_keys=True), c) for p, c in zip(prompts, completions, strict=True)]
        todo = [i for i, k in enumerate(keys) if k not in self.memo]
        if todo:
            scores = self.scorer([prompts[i] for i in todo], [completions[i] for i in todo])
            self.memo.update({keys[i]: float(s) for i, s in zip(todo, scores, strict=True)})
        return [self.memo[k] for k in keys]


@dataclass
class EvalResult:
    report: dict[str, Any]
    files: dict[str, bytes | str]


def run_eval(
    specs: list[ModelSpec],
    suite: Suite,
    use_cache: bool = True,
    runs_root: str | Path = "runs",
    run_dir: Path | None = None,
) -> dict[str, Any]:
    """Compute every metric of ``suite`` for ``specs`` (first = baseline) and return the report dict (no I/O)."""
    if not specs:
        raise AlignkitError("eval: no model to evaluate")
    if len({s.name for s in specs}) != len(specs):
        raise AlignkitError(f"eval: model names must be unique, got {[s.name for s in specs]}")
    timing: dict[str, float] = {}
    cpu: dict[str, float] = {}  # process CPU seconds (all threads): comparable across machines under load
    notes: list[str] = []
    clock, cpu_clock = time.perf_counter(), time.process_time()

    def lap(phase: str) -> None:
        nonlocal clock, cpu_clock
        now, cpu_now = time.perf_counter(), time.process_time()
        timing[phase] = round(timing.get(phase, 0.0) + now - clock, 2)
        cpu[phase] = round(cpu.get(phase, 0.0) + cpu_now - cpu_clock, 2)
        clock, cpu_clock = now, cpu_now

    # ---- preflight: every user error before any compute
    data = {ps.name: rows_to_prompts(_load_rows(ps.card, ps.split, ps.max_prompts), ps) for ps in suite.prompt_sets}
    heldout = _load_heldout(suite)
    pairs = _load_pairs(suite)
    lap("preflight")
    rm_ref = _resolve_rm(suite, runs_root, notes)  # may train the suite's reward model (rm_score.train_missing)
    lap("reward model")
    judge_cfg = suite.metric("win_rate") if len(specs) > 1 else None
    if suite.metric("win_rate") is not None and len(specs) < 2:
        notes.append("win_rate skipped: it needs at least two models (a baseline and a model to compare)")
    lap("preflight")

    per_model: dict[str, dict[str, Any]] = {s.name: {"sets": {n: {} for n in data}} for s in specs}
    gens: dict[str, dict[str, Generations]] = {s.name: {} for s in specs}
    pair_cache: dict[str, Any] = {}
    for spec in specs:
        lazy = _LazyModel(spec)
        for name, pd in data.items():
            gens[spec.name][name] = generate(
                spec, pd.prompts, suite.generation, use_cache, lazy, f"{spec.name}/{name}"
            )
        lap("generation")
        _per_model_metrics(spec, lazy, suite, heldout, pairs, per_model[spec.name], notes, pair_cache)
        lazy.release()
        lap("perplexity+preference")

    for spec in specs:
        for name, pd in data.items():
            _response_stats(suite, pd, gens[spec.name][name], per_model[spec.name]["sets"][name])
    lap("diversity")

    scorer = _rm_scores(suite, rm_ref, specs, data, gens, per_model)
    lap("rm_score")
    _response_perplexity(suite, specs, data, gens, per_model)
    lap("perplexity")
    win_rates = _win_rates(judge_cfg, scorer, specs, data, gens, notes) if judge_cfg is not None else {}
    lap("win_rate")
    _lm_eval(suite, specs, per_model, notes)
    lap("lm_eval")

    samples = [
        {
            "prompt_set": name,
            "index": i,
            "prompt": judge_prompt_text(pd.prompts[i]),
            "responses": {s.name: gens[s.name][name].responses[i] for s in specs},
        }
        for name, pd in data.items()
        for i in range(min(suite.samples, len(pd.prompts)))
    ]
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "suite": {"name": suite.name, "path": str(suite.path), "description": suite.description},
        "run_dir": str(run_dir) if run_dir else None,
        "baseline": specs[0].name,
        "models": [s.describe() for s in specs],
        "prompt_sets": [
            {**asdict(pd.spec), "n": len(pd.prompts), "graded": pd.references is not None} for pd in data.values()
        ],
        "generation": asdict(suite.generation),
        "generation_cache": {s.name: {n: str(g.cache_path) for n, g in gens[s.name].items()} for s in specs},
        "metrics": per_model,
        "win_rates": win_rates,
        "lengths": {s.name: {n: g.n_tokens for n, g in gens[s.name].items()} for s in specs},
        "samples": samples,
        "notes": notes,
        "timing_s": {**timing, "total": round(sum(timing.values()), 2)},
        "cpu_s": {**cpu, "total": round(sum(cpu.values()), 2)},
    }


def _load_heldout(suite: Suite) -> PromptData | None:
    opts = suite.metric("perplexity")
    if not opts or not opts.get("heldout"):
        return None
    h = opts["heldout"]
    if "card" not in h:
        raise AlignkitError(f"suite {suite.path}: metrics.perplexity.heldout needs a 'card'")
    ps = PromptSet(name="heldout", card=h["card"], split=h.get("split", "test"), max_prompts=h.get("max_samples", 64))
    pd = rows_to_prompts(_load_rows(ps.card, ps.split, ps.max_prompts), ps)
    if pd.completions is None:
        raise AlignkitError(f"suite {suite.path}: held-out card '{ps.card}' has rows without a reference answer")
    return pd


def _load_pairs(suite: Suite) -> list[dict[str, Any]] | None:
    opts = suite.metric("preference")
    if opts is None:
        return None
    if "card" not in opts:
        raise AlignkitError(f"suite {suite.path}: metrics.preference needs a 'card' of chosen/rejected pairs")
    rows = _load_rows(opts["card"], opts.get("split", "test"), opts.get("max_pairs", 64))
    missing = {"prompt", "chosen", "rejected"} - set(rows[0] if rows else {})
    if not rows or missing:
        raise AlignkitError(f"preference card '{opts['card']}': needs prompt/chosen/rejected rows, missing {missing}")
    return rows


def _resolve_rm(suite: Suite, runs_root: str | Path, notes: list[str]) -> tuple[str, str | None] | None:
    opts = suite.metric("rm_score")
    if opts is None:
        return None
    from alignkit.eval.rm_score import resolve_reward_model

    ref = opts.get("reward_model")
    if not ref:
        raise AlignkitError(f"suite {suite.path}: metrics.rm_score needs a 'reward_model' (a path or run:NAME)")
    resolved = resolve_reward_model(str(ref), runs_root)
    if resolved is None and opts.get("train_missing") and str(ref).startswith("run:"):
        recipe = opts["train_missing"] if isinstance(opts["train_missing"], str) else str(ref)[len("run:") :]
        resolved = _train_missing_reward_model(str(ref)[len("run:") :], recipe, runs_root, notes)
    if resolved is None:
        run = Path(runs_root) / str(ref)[len("run:") :]
        notes.append(
            f"rm_score and the rm judge skipped: reward model '{ref}' is not available ({run} has no finished run); "
            f"train it with `alignkit train {run.name}`"
        )
    return resolved


def _train_missing_reward_model(
    name: str, recipe_ref: str, runs_root: str | Path, notes: list[str]
) -> tuple[str, str | None] | None:
    """Train ``recipe_ref`` into ``<runs_root>/name`` (suite option ``rm_score.train_missing``), then resolve it.

    ``train_missing: true`` trains the recipe called ``name`` (``run:rm-smol`` -> recipe rm-smol); a string names
    another recipe or a recipe file. The smol suite uses this so that `make` can report RM scores on a fresh
    machine: the reward model is a dependency of the evaluation, built once and reused, like a dataset card's
    build. An interrupted earlier attempt (``NAME.partial``) is resumed rather than refused."""
    from alignkit.eval.rm_score import resolve_reward_model
    from alignkit.recipe import load_recipe
    from alignkit.train import train

    final = Path(runs_root) / name
    recipe = load_recipe(recipe_ref, [f"output_dir={final}"])  # an unknown recipe is a one-line error, pre-compute
    if recipe.args.trainer != "reward":
        trainer = recipe.args.trainer
        raise AlignkitError(f"rm_score.train_missing: recipe '{recipe_ref}' trains '{trainer}', not reward")
    print(f"alignkit eval: reward model run:{name} is missing; training recipe {recipe.name} into {final} (once)")
    train(recipe, resume=final.with_name(final.name + ".partial").exists())
    notes.append(f"reward model trained for this eval from recipe {recipe.name} into {final}; later evals reuse it")
    return resolve_reward_model(f"run:{name}", runs_root)


def _per_model_metrics(
    spec: ModelSpec,
    lazy: _LazyModel,
    suite: Suite,
    heldout: PromptData | None,
    pairs: list[dict[str, Any]] | None,
    out: dict[str, Any],
    notes: list[str],
    pair_cache: dict[str, Any],
) -> None:
    """Metrics that need the evaluated model's weights: held-out perplexity (a) and preference metrics."""
    from alignkit.eval.perplexity import completion_perplexity

    if heldout is not None:
        opts = suite.metrics["perplexity"]
        model, tok = lazy()
        out["perplexity_heldout"] = completion_perplexity(
            model,
            tok,
            heldout.prompts,
            heldout.completions,
            opts.get("max_length", 1024),
            opts.get("stride"),
            opts.get("batch_size", 8),
            desc=f"held-out ppl {spec.name}",
        )
    if pairs is not None:
        _preference(spec, lazy, suite, pairs, out, notes, pair_cache)


def _preference(spec, lazy, suite, pairs, out, notes, pair_cache: dict[str, Any]) -> None:
    """Preference metrics; pair log-probs are cached per weights identity, so a trained model's reference pass
    reuses the base model's pass from the same eval (the base *is* the reference of an adapter or a full FT)."""
    from alignkit.eval.model_spec import spec_key
    from alignkit.eval.preference import pair_logps, preference_from_logps, reference_pair_logps

    opts = suite.metrics["preference"]
    size = dict(max_length=opts.get("max_length", 1024), batch_size=opts.get("batch_size", 8))
    columns = [r["prompt"] for r in pairs], [r["chosen"] for r in pairs], [r["rejected"] for r in pairs]
    model, tok = lazy()
    policy = pair_logps(model, tok, *columns, **size, desc=f"preference {spec.name}")
    pair_cache[spec_key(spec)] = policy
    beta = spec.beta if spec.trainer == "dpo" else None
    if spec.trainer == "dpo" and beta is None:
        notes.append(f"{spec.name}: DPO run without 'beta' in run.json; implicit reward skipped")
    ref = None
    if beta is not None:
        ref = pair_cache.get(spec_key(spec.without_adapter()))
        if ref is None and spec.adapter is not None:
            ref = reference_pair_logps(model, tok, *columns, **size)  # adapter disabled
        elif ref is None:  # full fine-tune: the reference is a separate checkpoint
            ref_lazy = _LazyModel(spec.without_adapter("reference"))
            ref = pair_logps(*ref_lazy(), *columns, **size)
            ref_lazy.release()
    out["preference"] = preference_from_logps(policy, ref, beta)


def _response_stats(suite: Suite, pd: PromptData, gen: Generations, out: dict[str, Any]) -> None:
    from alignkit.eval.diversity import diversity_report

    out["length_tokens"] = mean_std_ci(gen.n_tokens)
    out["truncated_rate"] = float(np.mean(gen.truncated))
    if suite.metric("diversity") is not None:
        out["diversity"] = diversity_report(
            gen.responses, repetition_n=suite.metrics["diversity"].get("repetition_n", 3)
        )
    if pd.references is not None:
        from alignkit.plugins.graders import get_grader

        grader = get_grader(pd.spec.grader)
        out["grader_accuracy"] = mean_std_ci(
            [grader.score(r, ref) for r, ref in zip(gen.responses, pd.references, strict=True)]
        )


def _rm_scores(suite, rm_ref, specs, data, gens, per_model) -> _MemoScorer | None:
    if rm_ref is None:
        return None
    from alignkit.eval.rm_score import load_reward_scorer, score_summary

    opts = suite.metrics["rm_score"]
    scorer = _MemoScorer(
        load_reward_scorer(
            *rm_ref,
            batch_size=opts.get("batch_size", 8),
            max_length=opts.get("max_length", 1024),
            name=str(opts["reward_model"]),
        )
    )
    for spec in specs:
        for name, pd in data.items():
            scores = scorer(pd.prompts, gens[spec.name][name].responses)
            per_model[spec.name]["sets"][name]["rm_score"] = {**score_summary(scores), "scores": scores}
    return scorer


def _response_perplexity(suite, specs, data, gens, per_model) -> None:
    """Convention (b): each model's responses scored under one reference model (default: the baseline's base)."""
    opts = suite.metric("perplexity")
    if opts is None or opts.get("reference_model") in (None, "none"):
        return
    from alignkit.eval.perplexity import completion_perplexity
    from alignkit.models import resolve_model_path

    ref = opts["reference_model"]
    ref_spec = (
        specs[0].without_adapter("reference") if ref == "base" else ModelSpec("reference", resolve_model_path(ref))
    )
    lazy = _LazyModel(ref_spec)
    model, tok = lazy()
    for spec in specs:
        for name, pd in data.items():
            per_model[spec.name]["sets"][name]["perplexity_responses"] = {
                **completion_perplexity(
                    model,
                    tok,
                    pd.prompts,
                    gens[spec.name][name].responses,
                    opts.get("max_length", 1024),
                    opts.get("stride"),
                    opts.get("batch_size", 8),
                    desc=f"response ppl {spec.name}/{name}",
                ),
                "reference_model": ref_spec.base,
            }
    lazy.release()


def _win_rates(opts, scorer, specs, data, gens, notes) -> dict[str, Any]:
    """``{"<model> vs <baseline>": {prompt_set: {judge: {"raw": win_rate, "lc": lc_win_rate, "verdicts"}}}}``."""
    from alignkit.eval.judges import GraderJudge, PairwiseLLMJudge, RewardModelJudge, hf_preference_fn
    from alignkit.eval.winrate import length_controlled_win_rate, win_rate

    judges: dict[str, Any] = {}
    tie_band = float(opts.get("tie_band", 0.0))
    wanted = opts.get("judges", ["rm", "llm", "grader"])
    if "rm" in wanted and scorer is not None:
        judges["rm"] = RewardModelJudge(scorer, tie_band=tie_band)
    llm = None
    if "llm" in wanted:
        from alignkit.models import resolve_model_path

        llm = _LazyModel(ModelSpec("judge", resolve_model_path(opts.get("llm_judge", "smollm2-135m-instruct"))))
        model, tok = llm()
        judges["llm"] = PairwiseLLMJudge(hf_preference_fn(model, tok, batch_size=opts.get("batch_size", 8)))
    out: dict[str, Any] = {}
    base = specs[0]
    for spec in specs[1:]:
        key = f"{spec.name} vs {base.name}"
        out[key] = {}
        for name, pd in data.items():
            a, b = gens[spec.name][name], gens[base.name][name]
            set_judges = dict(judges)
            if "grader" in wanted and pd.references is not None:
                from alignkit.plugins.graders import get_grader

                set_judges["grader"] = GraderJudge(get_grader(pd.spec.grader), tie_band=tie_band)
            out[key][name] = {}
            for jname, judge in set_judges.items():
                # the LLM judge reads two full answers per order: the costliest judge, so it may see fewer rows
                n = (
                    min(len(pd.prompts), int(opts.get("llm_max_prompts") or len(pd.prompts)))
                    if jname == "llm"
                    else None
                )
                rows = slice(0, n)
                prompts = pd.prompts[rows] if jname == "rm" else [judge_prompt_text(p) for p in pd.prompts[rows]]
                refs = pd.references[rows] if pd.references is not None else None
                entry: dict[str, Any] = {}
                if jname == "llm":
                    first, second = judge.votes(prompts, a.responses[rows], b.responses[rows])
                    # PairwiseLLMJudge's rule: a verdict stands only when both orders agree, else a tie
                    verdicts = [u if u == v else 0 for u, v in zip(first, second, strict=True)]
                    entry["order_agreement"] = float(np.mean([u == v for u, v in zip(first, second, strict=True)]))
                    if entry["order_agreement"] < 0.5:
                        notes.append(
                            f"llm judge on {name}: the two answer orders agreed on only {entry['order_agreement']:.0%}"
                            " of pairs (position bias); its win rate is mostly ties"
                        )
                else:
                    verdicts = judge.judge(prompts, a.responses[rows], b.responses[rows], refs)
                entry.update(
                    raw=win_rate(verdicts),
                    lc=length_controlled_win_rate(verdicts, a.n_tokens[rows], b.n_tokens[rows]),
                    verdicts=verdicts,
                )
                out[key][name][jname] = entry
    if llm is not None:
        llm.release()
    return out


def _lm_eval(suite: Suite, specs: list[ModelSpec], per_model: dict[str, Any], notes: list[str]) -> None:
    tasks = suite.lm_eval.get("tasks") or []
    if not tasks:
        return
    try:
        from alignkit.eval.lm_eval_bridge import run_tasks
    except ImportError as exc:
        notes.append(f"lm_eval skipped: the lm-eval bridge is unavailable ({exc})")
        return
    opts = {k: v for k, v in suite.lm_eval.items() if k != "tasks"}
    for spec in specs:
        try:
            per_model[spec.name]["lm_eval"] = run_tasks(spec.base, spec.adapter, list(tasks), **opts)
        except AlignkitError as exc:  # keep the rest of the report; the failure is stated, never hidden
            notes.append(f"lm_eval FAILED for {spec.name}: {exc}")


def write_report(report: dict[str, Any], out_dir: str | Path) -> Path:
    """Render every file in memory first, then write each atomically; ``report.md`` goes last, so its presence
    means the set is complete. Returns the path of ``report.md``."""
    from alignkit.eval.report import render_files
    from alignkit.io import atomic_write_bytes, atomic_write_text

    files = render_files(report)
    out_dir = Path(out_dir)
    for name in sorted(files, key=lambda n: n == "report.md"):
        content = files[name]
        if isinstance(content, bytes):
            atomic_write_bytes(out_dir / name, content)
        else:
            atomic_write_text(out_dir / name, content)
    return out_dir / "report.md"


def evaluate(
    specs: list[ModelSpec],
    suite: Suite,
    out_dir: str | Path,
    use_cache: bool = True,
    runs_root: str | Path = "runs",
    run_dir: Path | None = None,
) -> Path:
    """:func:`run_eval` then :func:`write_report`; returns the path of ``report.md``."""
    report = run_eval(specs, suite, use_cache=use_cache, runs_root=runs_root, run_dir=run_dir)
    return write_report(report, out_dir)
