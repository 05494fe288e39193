"""alignkit's eval against lm-eval 0.4.13's HF backend (``HFLM``): same model, same inputs, same numbers, how fast.

Two comparisons on the embedded SmolLM2-135M-Instruct, fp32 on both sides, in one process:

* **perplexity** -- the per-text rolling log-likelihood of ``--texts`` held-out ShareGPT answers (the
  ``alignkit_sharegpt_ppl`` task's texts, through its builder ``eval/tasks/build_sharegpt_ppl.py``).
  alignkit: :func:`alignkit.eval.perplexity.text_nlls` (BOS + text, windows of the smol suite's ``max_length``
  batched by length with its batch size, logits only where scored). lm-eval: ``HFLM.loglikelihood_rolling`` on one
  ``Instance`` per text (its prefix token is the same BOS; every text here fits both sides' window, which is checked).
* **generation** -- greedy replies to ``--prompts`` held-out ShareGPT prompts (user turn only), ``--new`` new tokens
  at most. alignkit: :func:`alignkit.eval.generation.generate_with_model`, the path ``alignkit eval`` takes on a cache
  miss (decode engine, shared chat-template prefix once), with the smol suite's batch size and ``stop_loops`` off
  (lm-eval has no loop stop; the same work on both sides). lm-eval: ``HFLM.generate_until`` with
  ``{"until": [], "max_gen_toks": new, "do_sample": False}`` (it adds the EOS string ``<|im_end|>`` as the stop) on
  the prompt string lm-eval's own ``HFLM.apply_chat_template`` gives (what ``--apply_chat_template`` feeds it); the
  bench checks it is, character for character, the string alignkit's eval renders (``alignkit.chat_format``).

Arms, per comparison (lm-eval as users run it: ``HFLM(pretrained=<path>, batch_size=..., device="cpu",
dtype="float32")``, peers at their defaults and like for like):

* ``alignkit`` and ``alignkit-again`` (the same call again: the A/A control, its ratio to ``alignkit`` is the noise
  floor of this shared machine);
* ``lmeval-bs1`` -- lm-eval at its default ``batch_size=1``;
* ``lmeval-bsB`` -- lm-eval at alignkit's batch size (the smol suite's: perplexity 4, generation 64).

Method: models are loaded once, before any timing (alignkit through ``alignkit.eval.model_spec.load_model``, lm-eval
one ``HFLM`` per batch size). One untimed warm-up call per arm on 2 inputs (generation: 8 new tokens). Then
``--rounds`` rounds; in each round each comparison's four arms run back to back, whole runs (strings in, numbers out:
tokenization, batching, forwards, decoding), in a Williams-balanced order (bench/benchlib.py), so load from other
jobs hits every arm alike. Each call records wall and process CPU seconds.

Verdict statistic, fixed before the first run (issue 13), per comparison: the **smaller** of the two paired-median
speed-ups ``median_k(lmeval_k / alignkit_k)`` (against lm-eval at batch 1 and at alignkit's batch size: alignkit must
beat lm-eval at either), goal >= 3.0, **and** the numbers equal: every per-text summed NLL within 1e-4 nats of both
lm-eval arms' (perplexity), every reply token-identical to both lm-eval arms' (generation). Also reported: each
speed-up with its 95 % percentile-bootstrap CI (4000 resamples), ratios of medians on wall and CPU seconds, the A/A
ratio with CI, per-token-mean NLL gaps, identical-text counts, tokens per second, determinism across rounds, and
(unless ``--no-profile``) one profiled call of ``alignkit`` and ``lmeval-bsB`` per comparison split by operator kind,
to show where the time goes.

    OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE taskset -c 1 .venv/bin/python bench/lmeval_peer.py
    .venv/bin/python bench/lmeval_peer.py --quick      # tiny model, 4 texts, 4 prompts x 4 tokens; temp dir
    .venv/bin/python bench/lmeval_peer.py --rerender bench/results/lmeval_peer.json   # rebuild, no measuring
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import (
    balanced_orders,
    bench_model_path,
    command_line,
    figure,
    fmt_times,
    header_command,
    header_cpu,
    load_average,
    result_header,
    result_record,
    results_dir,
    set_offline_env,
    write_raw_result,
)

ROOT = Path(__file__).resolve().parents[1]
GOAL = 3.0
NLL_TOL = 1e-4  # nats, per text (summed over its tokens)
VERDICT = (
    "min over lm-eval arms (batch 1, alignkit's batch) of the median over rounds of the paired speed-up "
    "lmeval_k / alignkit_k; met if >= 3 and the numbers equal (per-text NLL within 1e-4 nats / every reply "
    "token-identical, against both lm-eval arms)"
)
COMPARISONS = ("perplexity", "generation")
RAW_KEYS = ("header", "settings", "comparisons", "profile", "load_average_end")


# ------------------------------------------------------------------------------------------------------------ inputs
def sharegpt_inputs(n_texts: int, n_prompts: int) -> tuple[list[str], list[str]]:
    """``(texts, prompts)``: the lm-eval ShareGPT task's first ``n_texts`` answers (its builder's own helpers, so
    exactly the task's rows) and the first ``n_prompts`` held-out user turns, in id order."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_sharegpt_ppl", ROOT / "eval/tasks/build_sharegpt_ppl.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    rows = builder.build_rows(builder.held_out_rows("test"), max(n_texts, n_prompts))
    if len(rows) < max(n_texts, n_prompts):
        raise SystemExit(f"only {len(rows)} held-out ShareGPT rows")
    return [r["text"] for r in rows[:n_texts]], [r["prompt"] for r in rows[:n_prompts]]


def suite_batches() -> dict[str, Any]:
    """What ``alignkit eval`` runs by default (the smol suite): batch sizes and the perplexity window."""
    from alignkit.eval.suite import load_suite

    suite = load_suite("smol")
    ppl = suite.metric("perplexity")
    return {"ppl_batch": ppl.batch_size, "ppl_max_length": ppl.max_length, "gen_batch": suite.generation.batch_size}


# -------------------------------------------------------------------------------------------------------------- arms
class Recorder:
    """Keeps the ids lm-eval's ``_model_generate`` returns, keyed by each row's unpadded context ids, so that
    replies can be compared token by token (lm-eval itself returns only decoded, stop-cut strings). Wrapping the
    bound method adds a dict insert per row, nothing else, to lm-eval's path."""

    def __init__(self, lm: Any):
        self.rows: dict[tuple[int, ...], list[int]] = {}
        inner = lm._model_generate

        def recording(context, max_length, stop, **kwargs):
            out = inner(context=context, max_length=max_length, stop=stop, **kwargs)
            mask = kwargs.get("attention_mask")
            for r in range(context.shape[0]):
                ids = context[r][mask[r].bool()] if mask is not None else context[r]
                self.rows[tuple(ids.tolist())] = out[r, context.shape[1] :].tolist()
            return out

        lm._model_generate = recording


def load_lmeval(path: str, batch_size: int) -> Any:
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=path, batch_size=batch_size, device="cpu", dtype="float32")
    lm.recorder = Recorder(lm)
    return lm


def run_alignkit(kind: str, model: Any, tok: Any, inputs: list[str], s: dict[str, Any]) -> dict[str, Any]:
    """One alignkit call: per-text (NLL, count), or per-prompt (reply text, token ids incl. the end-of-turn id)."""
    if kind == "perplexity":
        from alignkit.eval.perplexity import text_nlls

        nll, count = text_nlls(model, tok, inputs, s["ppl_max_length"], None, s["ppl_batch"], desc="alignkit ppl")
        return {"nll": [float(x) for x in nll], "count": [int(c) for c in count]}
    from alignkit.eval.generation import GenerationConfig, generate_with_model

    config = GenerationConfig(max_new_tokens=s["new"], batch_size=s["gen_batch"], stop_loops=False)
    out = generate_with_model(model, tok, inputs, config, desc="alignkit")
    return {"text": list(out.responses), "ids": [list(map(int, r)) for r in out.token_ids]}


def lmeval_requests(kind: str, lm: Any, inputs: list[str], new: int) -> list[Any]:
    from lm_eval.api.instance import Instance

    if kind == "perplexity":
        return [Instance("loglikelihood_rolling", {"text": t}, (t,), i) for i, t in enumerate(inputs)]
    gen_kwargs = {"until": [], "max_gen_toks": new, "do_sample": False}
    contexts = [lm.apply_chat_template([{"role": "user", "content": p}]) for p in inputs]
    return [
        Instance("generate_until", {"prompt": p}, (c, dict(gen_kwargs)), i)
        for i, (p, c) in enumerate(zip(inputs, contexts, strict=True))
    ]


def run_lmeval(kind: str, lm: Any, requests: list[Any], stop: list[int]) -> dict[str, Any]:
    """One lm-eval call on prepared ``Instance`` s (``requests``); token ids from the recorder, cut after the first
    end-of-turn id as alignkit keeps them."""
    if kind == "perplexity":
        return {"nll": [-float(x) for x in lm.loglikelihood_rolling(requests, disable_tqdm=True)]}
    lm.recorder.rows.clear()
    texts = lm.generate_until(requests, disable_tqdm=True)
    ids = []
    for req in requests:
        row = lm.recorder.rows[tuple(lm.tok_encode(req.args[0]))]
        end = next((k for k, t in enumerate(row) if t in stop), None)
        ids.append(row if end is None else row[: end + 1])
    return {"text": [t.strip() for t in texts], "ids": ids}


def timed(fn, *args) -> tuple[Any, float, float]:
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - t0, time.process_time() - c0


# --------------------------------------------------------------------------------------------------------- summaries
def bootstrap_median(values: list[float]) -> tuple[float, float, float]:
    import numpy as np

    from alignkit.eval.stats import bootstrap_ci

    if len(values) < 2:
        v = values[0] if values else float("nan")
        return v, float("nan"), float("nan")
    return bootstrap_ci(values, np.median, n_resamples=4000)


def equality(kind: str, outs: dict[str, dict], lm_arms: list[str], counts: list[int] | None) -> dict[str, Any]:
    """How alignkit's numbers compare with each lm-eval arm's (first round's outputs; determinism is checked apart)."""
    import numpy as np

    a = outs["alignkit"]
    eq: dict[str, Any] = {}
    for arm in lm_arms:
        b = outs[arm]
        if kind == "perplexity":
            gaps = [abs(x - y) for x, y in zip(a["nll"], b["nll"], strict=True)]
            mean_gaps = [g / c for g, c in zip(gaps, a["count"], strict=True)]
            # lm-eval sums a window's log-probs in fp32: a gap of one or two ulps of the sum is rounding alone
            ulps = [g / float(np.spacing(np.float32(y))) for g, y in zip(gaps, b["nll"], strict=True)]
            eq[arm] = {
                "max_abs_nll_gap_nats": max(gaps),
                "max_gap_in_fp32_ulps_of_lmeval_nll": max(ulps),
                "largest_nll_of_a_text_over_tol": max(
                    (y for g, y in zip(gaps, b["nll"], strict=True) if g > NLL_TOL), default=None
                ),
                "median_abs_nll_gap_nats": statistics.median(gaps),
                "max_abs_mean_nll_gap_nats_per_token": max(mean_gaps),
                "texts_within_tol": sum(g <= NLL_TOL for g in gaps),
                "equal": max(gaps) <= NLL_TOL,
            }
        else:
            same_ids = [x == y for x, y in zip(a["ids"], b["ids"], strict=True)]
            same_text = [x == y for x, y in zip(a["text"], b["text"], strict=True)]
            first_diff = [
                next((k for k, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), min(len(x), len(y)))
                for x, y, same in zip(a["ids"], b["ids"], same_ids, strict=True)
                if not same
            ]
            eq[arm] = {
                "rows_token_identical": sum(same_ids),
                "rows_text_identical": sum(same_text),
                "first_differing_token_of_differing_rows": first_diff,
                "equal": all(same_ids),
            }
    if kind == "perplexity" and counts is not None:
        eq["alignkit_counts_equal_text_tokens"] = a["count"] == counts
    return eq


def summarize(kind: str, runs: dict[str, list[dict]], lm_arms: list[str], counts: list[int] | None) -> dict:
    wall = {arm: [r["wall"] for r in rs] for arm, rs in runs.items()}
    cpu = {arm: [r["cpu"] for r in rs] for arm, rs in runs.items()}
    first = {arm: rs[0]["out"] for arm, rs in runs.items()}
    s: dict[str, Any] = {"rounds": len(wall["alignkit"]), "wall_s": wall, "cpu_s": cpu}
    s["median_wall_s"] = {arm: statistics.median(w) for arm, w in wall.items()}
    s["median_cpu_s"] = {arm: statistics.median(c) for arm, c in cpu.items()}
    speedups = {}
    for arm in lm_arms:
        paired = [b / a for a, b in zip(wall["alignkit"], wall[arm], strict=True)]
        point, low, high = bootstrap_median(paired)
        speedups[arm] = {
            "paired": paired,
            "median": point,
            "ci95": [low, high],
            "ratio_of_medians": s["median_wall_s"][arm] / s["median_wall_s"]["alignkit"],
            "cpu_ratio_of_medians": s["median_cpu_s"][arm] / s["median_cpu_s"]["alignkit"],
        }
    s["speedup"] = speedups
    aa = [b / a for a, b in zip(wall["alignkit"], wall["alignkit-again"], strict=True)]
    point, low, high = bootstrap_median(aa)
    s["aa"] = {"paired": aa, "median": point, "ci95": [low, high]}
    s["equality"] = equality(kind, first, lm_arms, counts)
    s["deterministic_across_rounds"] = {arm: all(r["out"] == rs[0]["out"] for r in rs) for arm, rs in runs.items()}
    s["aa_outputs_equal"] = first["alignkit"] == first["alignkit-again"]
    if kind == "perplexity":
        s["tokens"] = sum(first["alignkit"]["count"])
    else:
        s["tokens"] = sum(map(len, first["alignkit"]["ids"]))
        s["tokens_by_arm"] = {arm: sum(map(len, o["ids"])) for arm, o in first.items()}
    s["tokens_per_second_median"] = {arm: s["tokens"] / m for arm, m in s["median_wall_s"].items()}
    s["verdict_speedup"] = min(speedups[arm]["median"] for arm in lm_arms)
    s["verdict_arm"] = min(lm_arms, key=lambda arm: speedups[arm]["median"])
    s["numbers_equal"] = all(s["equality"][arm]["equal"] for arm in lm_arms)
    s["met"] = bool(s["verdict_speedup"] >= GOAL and s["numbers_equal"])
    return s


# ----------------------------------------------------------------------------------------------------------- profile
OP_KINDS = (  # (kind, substrings of an aten op name); first match wins
    ("matmul", ("mm", "matmul", "linear", "bmm", "addmm")),
    ("softmax / cross-entropy", ("softmax", "nll_loss", "cross_entropy", "logsumexp")),
    ("attention", ("attention", "sdpa", "_flash")),
    ("copies / casts / cat", ("copy_", "to_copy", "cat", "clone", "contiguous", "index", "gather", "where")),
)


def op_kind(name: str) -> str:
    low = name.lower()
    return next((kind for kind, keys in OP_KINDS if any(k in low for k in keys)), "other ops")


def profile_call(fn, *args) -> dict[str, Any]:
    """Self CPU seconds of one call by operator kind (torch.profiler), plus the call's wall seconds; the part of
    wall time no aten op accounts for is Python and framework overhead."""
    from torch.profiler import ProfilerActivity, profile

    t0 = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn(*args)
    wall = time.perf_counter() - t0
    kinds: dict[str, float] = {}
    top = []
    for ev in prof.key_averages():
        if not ev.key.startswith("aten::"):
            continue
        secs = ev.self_cpu_time_total / 1e6
        kinds[op_kind(ev.key)] = kinds.get(op_kind(ev.key), 0.0) + secs
        top.append((ev.key, secs, ev.count))
    top.sort(key=lambda x: -x[1])
    return {
        "wall_s": wall,
        "self_cpu_s_by_kind": kinds,
        "aten_total_s": sum(kinds.values()),
        "top_ops": [{"op": k, "self_s": s, "calls": c} for k, s, c in top[:8]],
    }


# ---------------------------------------------------------------------------------------------------------- reporting
def markdown(report: dict) -> str:
    h, st = report["header"], report["settings"]
    lines = [
        "# alignkit eval vs lm-eval 0.4.13's HF backend (bench/lmeval_peer.py)",
        "",
        f"Command: `{header_command(h)}`  ",
        f"Date: {h['date']}; CPU: {h['cpu_model']} (bf16 flags: {', '.join(h['cpu_bf16_flags']) or 'none'}); "
        f"torch threads {h['torch_threads']}, CPUs allowed {h['cpus_allowed']}, OMP {h['omp']}; load average "
        f"{h['load_average_start']} at start, {report['load_average_end']} at end; lm-eval {st['lm_eval']}, "
        f"transformers {st['transformers']}, torch {h['versions']['torch']}.",
        "",
        f"Model: {st['model']} (fp32 on both sides). Perplexity: {st['texts']} held-out ShareGPT answers "
        f"({st['ppl_tokens']} scored tokens; longest text {st['longest_text_tokens']} tokens, alignkit window "
        f"{st['ppl_max_length']}, lm-eval window {st['lmeval_max_length']}); alignkit batch {st['ppl_batch']}. "
        f"Generation: {st['prompts']} held-out prompts x up to {st['new']} new tokens, greedy; alignkit batch "
        f"{st['gen_batch']}, `stop_loops` off; lm-eval's chat-templated prompts identical to alignkit's: "
        f"{st['prompts_identical']}. {st['rounds']} rounds, arms interleaved in balanced order in one process.",
        "",
        f"Verdict statistic (fixed in the code before the run): {VERDICT}. Goal >= {GOAL:g}x.",
        "",
        "| comparison | alignkit s | lm-eval bs1 s | lm-eval like-for-like s | speed-up vs bs1 [95 % CI] | "
        "speed-up vs like-for-like [95 % CI] | A/A [95 % CI] | equal numbers | verdict | met? |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kind, s in report["comparisons"].items():
        bs1, bsb = s["lm_arms"]
        m, sp = s["median_wall_s"], s["speedup"]
        eq = s["equality"]
        if kind == "perplexity":
            equal = "; ".join(
                f"{arm}: max gap {eq[arm]['max_abs_nll_gap_nats']:.1e} nats, {eq[arm]['texts_within_tol']}/"
                f"{st['texts']} within 1e-4"
                for arm in (bs1, bsb)
            )
        else:
            equal = "; ".join(
                f"{arm}: {eq[arm]['rows_token_identical']}/{st['prompts']} token-identical" for arm in (bs1, bsb)
            )
        lines.append(
            f"| {kind} | {m['alignkit']:.2f} | {m[bs1]:.2f} | {m[bsb]:.2f} | {sp[bs1]['median']:.2f}x "
            f"[{sp[bs1]['ci95'][0]:.2f}, {sp[bs1]['ci95'][1]:.2f}] | {sp[bsb]['median']:.2f}x "
            f"[{sp[bsb]['ci95'][0]:.2f}, {sp[bsb]['ci95'][1]:.2f}] | {s['aa']['median']:.3f} "
            f"[{s['aa']['ci95'][0]:.3f}, {s['aa']['ci95'][1]:.3f}] | {equal} | {s['verdict_speedup']:.2f}x "
            f"({s['verdict_arm']}) | {'met' if s['met'] else 'MISSED'} |"
        )
    lines += ["", "Every statistic computed:", ""]
    for kind, s in report["comparisons"].items():
        lines += [f"## {kind}", ""]
        for arm in s["wall_s"]:
            lines.append(
                f"- {arm}: wall s per round {fmt_times(s['wall_s'][arm])}; CPU s {fmt_times(s['cpu_s'][arm])}; "
                f"{s['tokens_per_second_median'][arm]:.0f} tokens/s at the median"
            )
        for arm, sp in s["speedup"].items():
            lines.append(
                f"- speed-up vs {arm}: paired per round {fmt_times(sp['paired'])}; median {sp['median']:.3f} "
                f"[{sp['ci95'][0]:.3f}, {sp['ci95'][1]:.3f}]; ratio of medians {sp['ratio_of_medians']:.3f}; "
                f"CPU-time ratio of medians {sp['cpu_ratio_of_medians']:.3f}"
            )
        lines.append(
            f"- A/A alignkit-again / alignkit: per round {fmt_times(s['aa']['paired'])}; "
            f"median {s['aa']['median']:.3f}"
        )
        lines.append(f"- equality: `{json.dumps(s['equality'])}`")
        lines.append(
            f"- same outputs every round: {s['deterministic_across_rounds']}; alignkit == alignkit-again: "
            f"{s['aa_outputs_equal']}; tokens {s['tokens']}"
            + (f" (by arm {s['tokens_by_arm']})" if "tokens_by_arm" in s else "")
        )
        lines.append("")
    if report.get("profile"):
        lines += [
            "## Where the time goes (one profiled call each, after the rounds; self CPU s by operator kind)",
            "",
            "| comparison / arm | wall s (profiled) | matmul | softmax / cross-entropy | attention | copies / casts "
            "/ cat | other ops | wall not in aten ops |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for key, p in report["profile"].items():
            k = p["self_cpu_s_by_kind"]
            cells = [f"{k.get(name, 0.0):.2f}" for name, _ in OP_KINDS] + [f"{k.get('other ops', 0.0):.2f}"]
            lines.append(
                f"| {key} | {p['wall_s']:.2f} | " + " | ".join(cells) + f" | {p['wall_s'] - p['aten_total_s']:.2f} |"
            )
        lines += ["", "Top operators per profiled call are in the JSON (`profile`).", ""]
    return "\n".join(lines) + "\n"


def result(report: dict) -> dict:
    """The bench/results JSON record (benchlib schema): one figure per comparison."""
    h, st = report["header"], report["settings"]
    figures = []
    for kind, s in report["comparisons"].items():
        bs1, bsb = s["lm_arms"]
        also = []
        for arm in (bs1, bsb):
            sp = s["speedup"][arm]
            also.append(
                {
                    "statistic": f"paired-median speed-up vs {arm} [95% CI {sp['ci95'][0]:.2f}, {sp['ci95'][1]:.2f}]",
                    "measured": sp["median"],
                    "met": bool(sp["median"] >= GOAL and s["equality"][arm]["equal"]),
                }
            )
            also.append(
                {
                    "statistic": f"process-CPU-time ratio of medians vs {arm}",
                    "measured": sp["cpu_ratio_of_medians"],
                    "met": bool(sp["cpu_ratio_of_medians"] >= GOAL and s["equality"][arm]["equal"]),
                }
            )
        if kind == "perplexity":
            gap = max(s["equality"][arm]["max_abs_nll_gap_nats"] for arm in (bs1, bsb))
            eq_note = f"largest per-text NLL gap {gap:.1e} nats over {st['texts']} texts"
        else:
            same = min(s["equality"][arm]["rows_token_identical"] for arm in (bs1, bsb))
            eq_note = f"{same}/{st['prompts']} replies token-identical (worst lm-eval arm)"
        figures.append(
            figure(
                f"lmeval_peer.{kind}",
                f"alignkit eval vs lm-eval 0.4.13 HFLM, {kind}, speed-up (fp32, same numbers)",
                f">= {GOAL:g}x vs lm-eval at batch 1 and at alignkit's batch, numbers equal",
                s["verdict_speedup"],
                s["met"],
                VERDICT,
                unit="x",
                also=also,
                note=f"{eq_note}; A/A {s['aa']['median']:.3f}; {s['rounds']} rounds",
            )
        )
    stats = {
        kind: {k: v for k, v in s.items() if k not in ("wall_s", "cpu_s")} for kind, s in report["comparisons"].items()
    }
    extra = {"load_average": {"start": h["load_average_start"], "end": report.get("load_average_end")}}
    return result_record(
        "lmeval_peer", header_command(h), h["date"], h["torch_threads"], stats, figures, header_cpu(h), **extra
    )


def write(report: dict, out: Path) -> Path:
    raw = {k: report[k] for k in RAW_KEYS if k in report}
    return write_raw_result(raw, result(raw), markdown(raw), out)


# --------------------------------------------------------------------------------------------------------------- run
def measure(args: argparse.Namespace) -> dict:
    import lm_eval
    import torch
    import transformers

    from alignkit.chat_format import prompt_text
    from alignkit.eval.model_spec import ModelSpec, load_model
    from alignkit.stop_tokens import stop_token_ids

    torch.set_num_threads(args.threads)
    header = result_header(args.threads)
    header["command"] = command_line()
    s = {**suite_batches(), "new": args.new}
    if args.quick:
        s.update(ppl_batch=2, gen_batch=2)  # one like-for-like HFLM for both: fewer loads
    path = bench_model_path(args.quick)
    texts, prompts = sharegpt_inputs(args.texts, args.prompts)
    model, tok = load_model(ModelSpec(name="smollm2-135m-instruct", base=path))
    lms = {f"lmeval-bs{b}": load_lmeval(path, b) for b in sorted({1, s["ppl_batch"], s["gen_batch"]})}
    torch.set_num_threads(args.threads)  # HFLM's set-up must not have changed it
    for lm in lms.values():
        assert next(lm.model.parameters()).dtype == torch.float32
    assert next(model.parameters()).dtype == torch.float32
    stop = stop_token_ids(tok, model)
    lm_arms = {
        "perplexity": ["lmeval-bs1", f"lmeval-bs{s['ppl_batch']}"],
        "generation": ["lmeval-bs1", f"lmeval-bs{s['gen_batch']}"],
    }
    if s["ppl_batch"] == 1 or s["gen_batch"] == 1:
        raise SystemExit("alignkit's batch size is 1: the like-for-like arm would be the default arm")
    inputs = {"perplexity": texts, "generation": prompts}
    lm0 = lms["lmeval-bs1"]
    counts = [len(lm0.tok_encode(t)) for t in texts]  # lm-eval scores every text token after its prefix token
    rendered = [prompt_text(tok, p) for p in prompts]
    templated = [lm0.apply_chat_template([{"role": "user", "content": p}]) for p in prompts]
    settings = {
        **s,
        "texts": len(texts),
        "prompts": len(prompts),
        "rounds": args.rounds,
        "model": "tiny random model (smoke run)" if args.quick else "embedded SmolLM2-135M-Instruct",
        "model_path": path,
        "lm_eval": lm_eval.__version__ if hasattr(lm_eval, "__version__") else "0.4.x",
        "transformers": transformers.__version__,
        "lmeval_max_length": lm0.max_length,
        "ppl_tokens": sum(counts),
        "longest_text_tokens": max(counts) + 1,
        "texts_over_alignkit_window": sum(c + 1 > s["ppl_max_length"] for c in counts),
        "prompts_identical": f"{sum(a == b for a, b in zip(rendered, templated, strict=True))}/{len(prompts)}",
        "stop_ids": stop,
        "lm_arms": lm_arms,
    }
    if rendered != templated:
        raise SystemExit("lm-eval's chat-templated prompts differ from alignkit's: the comparison would be unfair")
    if settings["texts_over_alignkit_window"] or max(counts) + 1 > lm0.max_length:
        print(f"warning: texts longer than a window: {settings['texts_over_alignkit_window']}", file=sys.stderr)

    def call(kind: str, arm: str, xs: list[str], new: int = s["new"]):
        if arm.startswith("alignkit"):
            return run_alignkit(kind, model, tok, xs, {**s, "new": new})
        lm = lms[arm]
        return run_lmeval(kind, lm, lmeval_requests(kind, lm, xs, new), stop)

    arms = {kind: ["alignkit", "alignkit-again", *lm_arms[kind]] for kind in COMPARISONS}
    for kind in COMPARISONS:  # untimed warm-up: first-touch allocations, lazy initialisation
        for arm in arms[kind]:
            call(kind, arm, inputs[kind][:2], 8)
    runs = {kind: {arm: [] for arm in arms[kind]} for kind in COMPARISONS}
    orders = balanced_orders(4)
    for r in range(args.rounds):
        for kind in COMPARISONS:
            for a in orders[r % len(orders)]:
                arm = arms[kind][a]
                out, wall, cpu = timed(call, kind, arm, inputs[kind])
                runs[kind][arm].append({"wall": wall, "cpu": cpu, "out": out})
                print(
                    f"round {r} {kind:10s} {arm:15s} {wall:7.2f} s (cpu {cpu:.2f}) load {load_average()}", flush=True
                )
    comparisons = {}
    for kind in COMPARISONS:
        summary = summarize(kind, runs[kind], lm_arms[kind], counts if kind == "perplexity" else None)
        summary["lm_arms"] = lm_arms[kind]
        comparisons[kind] = summary
        print(f"{kind}: verdict {summary['verdict_speedup']:.2f}x vs {summary['verdict_arm']}, equal "
              f"{summary['numbers_equal']}, met {summary['met']}", flush=True)  # fmt: skip
    profiles = {}
    if args.profile:
        for kind in COMPARISONS:
            for arm in ("alignkit", lm_arms[kind][1]):
                profiles[f"{kind} / {arm}"] = profile_call(call, kind, arm, inputs[kind])
    outputs = {  # the first round's outputs, so a reader can check the equality claims
        kind: {arm: rs[0]["out"] for arm, rs in runs[kind].items() if arm != "alignkit-again"} for kind in COMPARISONS
    }
    for kind in COMPARISONS:
        comparisons[kind]["outputs_first_round"] = outputs[kind]
    return {
        "header": header,
        "settings": settings,
        "comparisons": comparisons,
        "profile": profiles,
        "load_average_end": load_average(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=32, help="held-out ShareGPT answers for perplexity")
    parser.add_argument("--prompts", type=int, default=32, help="held-out ShareGPT prompts for generation")
    parser.add_argument("--new", type=int, default=128, help="max new tokens (lm-eval: max_gen_toks)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: pin the process with taskset)")
    parser.add_argument("--no-profile", dest="profile", action="store_false", help="skip the profiled calls")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny model, 4 texts, 4 prompts x 4 tokens")
    parser.add_argument("--out", default=None, help="path stem of the .json/.md (default bench/results/lmeval_peer)")
    parser.add_argument(
        "--rerender", metavar="JSON", help="rebuild the result and .md from a run's JSON, no measuring"
    )
    args = parser.parse_args(argv)
    if args.rerender:
        report = json.loads(Path(args.rerender).read_text(encoding="utf-8"))
        path = write(report, Path(args.out) if args.out else Path(args.rerender).with_suffix(""))
        print(f"wrote {path} and {path.with_suffix('.md')} from {args.rerender}")
        return 0
    if args.quick:
        args.texts, args.prompts, args.new, args.rounds, args.profile = 4, 4, 4, 1, False
    set_offline_env()
    report = measure(args)
    print(markdown(report))
    path = write(report, Path(args.out) if args.out else results_dir(args.quick) / "lmeval_peer")
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
