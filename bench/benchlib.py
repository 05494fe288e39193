"""Shared machinery for the step-time benchmarks: interleaved arms in separate processes, data, summaries.

Why separate processes: every arm runs the real ``Trainer.train()`` loop (so accelerate's autocast wrapping,
gradient checkpointing, GRPO's generation buffer and our callbacks all behave exactly as in a recipe run), and one
process per arm keeps global state apart: accelerate's ``AcceleratorState`` singleton (which holds the mixed-precision
mode the precision benchmark varies), torch's global RNG (GRPO sampling) and the autocast state.

Why a baton: the machine has 2 cores shared with other jobs, so arms must never run at the same time and load must
hit every arm alike. A :class:`Baton` callback makes the arms take turns, one optimizer step each, in an order that
changes every round so that each arm takes each position and follows each other arm equally often. A step is timed
from ``on_step_begin`` to ``on_step_end``: the forward/backward of every micro-batch (for GRPO, generation and reward
scoring too), gradient clipping and ``optimizer.step()``. The batch is fetched just before ``on_step_begin`` and
logging happens after ``on_step_end``; an arm keeps the baton through both, so neither overlaps another arm's timed
step. Each step records wall time and process CPU time (all threads).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import statistics
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

BATON_TIMEOUT_S = 3600  # an arm waiting this long means another arm died; fail instead of hanging forever


def balanced_orders(n_arms: int) -> list[list[int]]:
    """Williams-design turn orders: across the orders every arm takes every position equally often and directly
    follows every other arm equally often. A plain rotation (A B C, B C A, ...) balances positions but keeps B
    always right after A, which would charge any hand-over effect to the same pair of arms every round."""
    base, lo, hi = [0], 1, n_arms - 1
    while len(base) < n_arms:
        base.append(lo)
        lo += 1
        if len(base) < n_arms:
            base.append(hi)
            hi -= 1
    orders = [[(b + r) % n_arms for b in base] for r in range(n_arms)]
    if n_arms % 2:  # odd n needs the mirrored square too for first-order balance
        orders += [list(reversed(o)) for o in orders]
    return orders


def balanced_schedule(n_arms: int, n_rounds: int) -> list[int]:
    """The turn sequence for ``n_rounds`` rounds, cycling through :func:`balanced_orders`."""
    orders = balanced_orders(n_arms)
    return [arm for r in range(n_rounds) for arm in orders[r % len(orders)]]


class Baton(TrainerCallback):
    """Turn-taking between processes along a shared schedule, one optimizer step per turn, timing each step."""

    def __init__(self, index: int, semaphores: list, schedule: list[int]):
        self.index, self.semaphores, self.schedule = index, semaphores, schedule
        self.positions = [pos for pos, arm in enumerate(schedule) if arm == index]  # this arm's turns
        self.turn = -1  # index into self.positions of the turn held (or last held)
        self.holding = False
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def pass_on(self) -> None:
        if self.holding:
            nxt = self.positions[self.turn] + 1
            if nxt < len(self.schedule):
                self.semaphores[self.schedule[nxt]].release()
            self.holding = False

    def on_step_begin(self, args, state, control, **kwargs):
        self.pass_on()
        if not self.semaphores[self.index].acquire(timeout=BATON_TIMEOUT_S):
            raise RuntimeError(f"arm {self.index}: no turn within {BATON_TIMEOUT_S} s (another arm died?)")
        self.turn += 1
        self.holding = True
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        self.wall.append(time.perf_counter() - self._t0)
        self.cpu.append(time.process_time() - self._c0)


@dataclass
class ArmResult:
    name: str
    wall: list[float] = field(default_factory=list)  # seconds per optimizer step, warm-up included
    cpu: list[float] = field(default_factory=list)
    logs: list[dict] = field(default_factory=list)  # trainer.state.log_history
    info: dict = field(default_factory=dict)  # whatever the builder reports (resolved settings, data source)
    error: str | None = None


def _worker(index, name, semaphores, schedule, queue, finished, build: Callable, build_kwargs: dict, threads):
    """One arm: build its trainer, say it is ready, then train under the baton and report the step times.

    After its last step the arm keeps the baton until its result is queued (the end of ``train()`` and pickling the
    log are real work that must not overlap another arm's timed step), and it exits only when every arm is done:
    freeing gigabytes of tensors at exit would otherwise land on whichever arm is still running."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    baton = None
    try:
        trainer, info = build(**build_kwargs)
        baton = Baton(index, semaphores, schedule)
        trainer.add_callback(baton)
        info = {**info, "torch_threads": torch.get_num_threads()}
        queue.put(("ready", name))
        trainer.train()  # the first on_step_begin blocks until the parent starts the schedule
        queue.put(("done", ArmResult(name, baton.wall, baton.cpu, trainer.state.log_history, info)))
        baton.pass_on()
        finished.wait(timeout=BATON_TIMEOUT_S)
    except BaseException:
        queue.put(("done", ArmResult(name, error=traceback.format_exc())))


def _collect(queue, procs: dict, kind: str, count: int) -> list:
    """``count`` messages of ``kind``, failing fast if an arm dies without a word (e.g. killed by the OOM killer)."""
    import queue as queue_mod

    got: list = []
    while len(got) < count:
        try:
            tag, payload = queue.get(timeout=10)
        except queue_mod.Empty:
            dead = {n: p.exitcode for n, p in procs.items() if p.exitcode not in (None, 0)}
            if dead:
                msg = f"arm(s) died without reporting (exit codes {dead}; -9 is usually the OOM killer)"
                raise RuntimeError(msg) from None
            continue
        if tag == "done" and kind == "ready":  # an arm failed while building
            raise RuntimeError(f"arm {payload.name} failed while building:\n{payload.error}")
        got.append(payload)
        if tag == "done" and payload.error:
            raise RuntimeError(f"arm {payload.name} failed:\n{payload.error}")
    return got


class RNGIsolatedBaton(Baton):
    """A :class:`Baton` for arms that share one process: each arm keeps its own torch/NumPy/``random`` streams.

    In a process of its own an arm's random draws (dropout masks, GRPO sampling) depend only on its seed; threads of
    one process share the global generators, so every turn restores the arm's streams and every hand-over saves
    them. The first ``on_step_begin`` captures the state ``train()`` seeded before the loop."""

    def __init__(self, index: int, semaphores: list, schedule: list[int], ready, abort):
        super().__init__(index, semaphores, schedule)
        self.ready, self.abort, self.rng = ready, abort, None

    def pass_on(self) -> None:
        if self.holding:
            self.rng = _rng_state()
        super().pass_on()

    def on_step_begin(self, args, state, control, **kwargs):
        if self.rng is None:
            self.rng = _rng_state()
            self.ready.set()  # this arm's train() set-up is done; the next arm may start its own
        super().on_step_begin(args, state, control, **kwargs)
        if self.abort.is_set():
            raise RuntimeError("stopped: another arm failed")
        _set_rng_state(self.rng)


def _rng_state() -> tuple:
    import random

    import numpy as np
    import torch

    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _set_rng_state(state: tuple) -> None:
    import random

    import numpy as np
    import torch

    torch.set_rng_state(state[0])
    np.random.set_state(state[1])
    random.setstate(state[2])


def _one_malloc_arena() -> None:
    """glibc gives each thread its own malloc arena, and memory freed in one arena is not reused by another: four
    arms, each freeing several GB of activations per step, held 11 GB where one arm needs 3. Only one arm runs at a
    time, so one shared arena costs no lock contention. No-op outside glibc."""
    import ctypes
    import ctypes.util

    m_arena_max = -8  # from glibc's malloc.h
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(m_arena_max, 1)
    except (OSError, AttributeError):
        pass


def run_interleaved_in_process(
    arms: dict[str, tuple[Callable, dict]], steps: int, threads: int | None = None
) -> dict[str, ArmResult]:
    """Like :func:`run_interleaved`, but every arm is a thread of *this* process, each running its own real
    ``trainer.train()`` on its own model copy.

    Why: separate processes carry a per-process speed bias (allocator and cache layout, where the scheduler puts
    them) that an A/A control showed at up to 9 % for identical code, above the 2 % the plugin-overhead goal must
    resolve. Threads of one process share that layout, so only the code path differs between arms. The baton lets
    one arm run at a time (the others wait on a semaphore, outside the GIL), and :class:`RNGIsolatedBaton` keeps each
    arm's random streams its own. Arms must not differ in process-wide state (accelerate's mixed-precision mode):
    :func:`run_interleaved` is the tool for that. Builders run one after another, untimed.
    """
    import threading

    import torch

    if threads:
        torch.set_num_threads(threads)
    _one_malloc_arena()
    schedule = balanced_schedule(len(arms), steps)
    semaphores = [threading.Semaphore(0) for _ in arms]
    abort = threading.Event()
    results: dict[str, ArmResult] = {}
    workers = []

    def stop_all() -> None:  # wake every waiting arm; each sees `abort` and leaves its train()
        abort.set()
        for sem in semaphores:
            sem.release(len(schedule))

    def train(name, trainer, baton, info):
        try:
            trainer.train()
            results[name] = ArmResult(name, baton.wall, baton.cpu, trainer.state.log_history, info)
        except BaseException:
            results[name] = ArmResult(name, error=traceback.format_exc())
            stop_all()
        finally:
            baton.ready.set()  # also when train() failed before its first step
            baton.pass_on()

    try:
        for index, (name, (build, kwargs)) in enumerate(arms.items()):
            trainer, info = build(**kwargs)
            baton = RNGIsolatedBaton(index, semaphores, schedule, threading.Event(), abort)
            trainer.add_callback(baton)
            info = {**info, "torch_threads": torch.get_num_threads(), "process": "shared (one thread per arm)"}
            worker = threading.Thread(target=train, args=(name, trainer, baton, info), name=name, daemon=True)
            workers.append(worker)
            worker.start()
            baton.ready.wait()  # arms start one by one: train()'s seeding and set-up never overlap another arm's
            if abort.is_set():
                break
        else:
            semaphores[schedule[0]].release()
    except BaseException:
        stop_all()
        raise
    finally:
        for worker in workers:
            worker.join()
    if failed := [r for r in results.values() if r.error and "another arm failed" not in r.error]:
        raise RuntimeError(f"arm {failed[0].name} failed:\n{failed[0].error}")
    return {name: results[name] for name in arms}


def run_interleaved(
    arms: dict[str, tuple[Callable, dict]], steps: int, threads: int | None = None
) -> dict[str, ArmResult]:
    """Run ``{name: (build, kwargs)}`` side by side; ``build(**kwargs) -> (trainer, info)`` runs in the arm's process.

    Every arm must train exactly ``steps`` optimizer steps (the schedule assumes it). Builders run concurrently
    (untimed); the schedule starts only once every arm is built. Any failure stops all arms and raises.
    """
    schedule = balanced_schedule(len(arms), steps)
    ctx = mp.get_context("spawn")  # fork after torch has started its thread pool is unsafe
    semaphores = [ctx.Semaphore(0) for _ in arms]
    queue = ctx.Queue()
    finished = ctx.Event()
    procs = {}
    for index, (name, (build, kwargs)) in enumerate(arms.items()):
        worker_args = (index, name, semaphores, schedule, queue, finished, build, kwargs, threads)
        # daemon: if this process dies, the arms go with it instead of lingering as orphans
        procs[name] = ctx.Process(target=_worker, args=worker_args, name=name, daemon=True)
        procs[name].start()
    try:
        _collect(queue, procs, "ready", len(arms))
        semaphores[schedule[0]].release()  # the schedule's first arm starts
        results = {r.name: r for r in _collect(queue, procs, "done", len(arms))}
    except BaseException:
        for proc in procs.values():  # the surviving arms would wait for a turn forever
            proc.terminate()
        raise
    finished.set()
    for proc in procs.values():
        proc.join(timeout=60)
    return {name: results[name] for name in arms}


# --------------------------------------------------------------------------------------------------------- summaries
def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def paired_ratios(arm: list[float], base: list[float]) -> list[float]:
    """Per-round ratios arm_k / base_k: the steps of one round ran back to back, so they share the machine's load."""
    return [a / b for a, b in zip(arm, base, strict=True)]


def quartiles(xs: list[float]) -> tuple[float, float]:
    if len(xs) < 2:
        return (xs[0], xs[0]) if xs else (float("nan"), float("nan"))
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[2]


def fmt_times(xs: list[float]) -> str:
    return ", ".join(f"{x:.2f}" for x in xs)


def load_average() -> str:
    try:
        return " ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "n/a"


def cpu_model_and_flags(wanted=("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")) -> tuple[str, list[str]]:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return "unknown", []
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
    present = set(flags.group(1).split()) if flags else set()
    return (model.group(1).strip() if model else "unknown"), [f for f in wanted if f in present]


# -------------------------------------------------------------------------------------------------------------- data
def _fallback_chats(n: int) -> list[dict[str, Any]]:
    """Deterministic chat rows of ShareGPT-like length, for when the embedded card cannot be loaded."""
    topics = [
        "sorting a list in Python",
        "the causes of inflation",
        "writing a cover letter",
        "photosynthesis",
        "HTTP caching headers",
        "a healthy weekly meal plan",
        "the rules of chess",
        "unit testing",
    ]
    rows = []
    for i in range(n):
        topic = topics[i % len(topics)]
        answer = (
            f"Here is a short overview of {topic}. First, consider the basics and why they matter. "
            f"Second, look at a concrete example of {topic} step by step. Finally, summarise the key points "
            "and note the common mistakes people make, so you can avoid them next time."
        )
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"Can you explain {topic} in simple terms? ({i})"},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    return rows


def sharegpt_chats(n: int, seed: int = 0) -> tuple[list[dict[str, Any]], str]:
    """``n`` single-turn chats from the embedded ``sharegpt-sft-smol`` card (train split), or in-script fallbacks.

    Returns ``(rows, source)``; rows are ``{"messages": [user, assistant]}``."""
    try:
        from alignkit.data.cards import load_split

        ds = load_split("sharegpt-sft-smol", "train", max_samples=n, seed=seed)
        return [{"messages": row["messages"]} for row in ds], f"sharegpt-sft-smol card (train, {n} rows, seed {seed})"
    except Exception as exc:  # the benchmark measures step time; any realistic text will do
        return _fallback_chats(n), f"in-script fallback chats ({type(exc).__name__}: {exc})"


def degrade(answer: str, target_chars: int = 380) -> str:
    """A plausible *rejected* reply: the reference's opening clause looped and cut, like a small model's greedy
    output cut at its token limit (the failure the sharegpt-pairs-smol card describes). Lengths differ from the
    chosen reply, which R-DPO and the length-decorrelation penalty need to see."""
    head = re.split(r"(?<=[.!?,;:])\s", answer.strip(), maxsplit=1)[0][:120] or "I am not sure"
    text = head
    while len(text) < target_chars:
        text += " " + head
    return text[:target_chars]


def preference_pairs(chats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Conversational preference rows (explicit prompt) from chats: chosen = reference, rejected = :func:`degrade`."""
    rows = []
    for i, chat in enumerate(chats):
        user, assistant = chat["messages"][0], chat["messages"][-1]
        rejected = degrade(assistant["content"], target_chars=240 + 40 * (i % 5))
        rows.append(
            {"prompt": [user], "chosen": [assistant], "rejected": [{"role": "assistant", "content": rejected}]}
        )
    return rows


def set_offline_env() -> None:
    """No hub on these machines: a forgotten hub id must fail fast, not hang (children inherit this)."""
    for key, value in (
        ("HF_HUB_OFFLINE", "1"),
        ("HF_DATASETS_OFFLINE", "1"),
        ("TOKENIZERS_PARALLELISM", "false"),
        ("WANDB_DISABLED", "true"),
    ):
        os.environ.setdefault(key, value)


# ------------------------------------------------------------------------------------------------------------ results
# Every benchmark writes bench/results/<bench>.json in this shape (next to whatever raw data it keeps in the same
# file), and bench/make_results.py renders bench/results/RESULTS.md from those files alone, so the table cannot drift
# from what was measured. A figure's verdict statistic is fixed in the bench's code before it runs; a statistic that
# was the verdict earlier (or is shown beside it) goes in the figure's ``also`` list, with its own met/missed mark.
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SCHEMA = "alignkit-bench-result/1"
CPU_FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
NOT_REMEASURED = "not re-measured"  # a figure quoted from an older .md that kept no raw numbers


def results_dir(quick: bool = False) -> Path:
    """Where a bench writes its result: ``$ALIGNKIT_BENCH_RESULTS`` if set (``bench/run.py --quick`` points it at a
    temporary directory), else a fresh temporary directory for a ``--quick`` smoke run (a smoke run never overwrites
    a measured result), else ``bench/results``."""
    env = os.environ.get("ALIGNKIT_BENCH_RESULTS")
    if env:
        path = Path(env)
    elif quick:
        path = Path(tempfile.mkdtemp(prefix="alignkit-bench-quick-"))
    else:
        path = RESULTS_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def bench_model_path(quick: bool = False) -> str:
    """The embedded SmolLM2-135M checkpoint, or for a ``--quick`` smoke run a tiny random model with the same
    tokenizer (``$ALIGNKIT_BENCH_MODEL`` when ``bench/run.py`` built one already): smoke runs check that a bench still
    runs end to end and writes a valid result, in seconds, not what it measures."""
    if not quick:
        from alignkit.models import materialize_embedded

        return str(materialize_embedded())
    if not os.environ.get("ALIGNKIT_BENCH_MODEL"):
        from alignkit.models import build_tiny_model

        os.environ["ALIGNKIT_BENCH_MODEL"] = str(
            build_tiny_model(Path(tempfile.mkdtemp(prefix="alignkit-bench-tiny-")), tied=False)
        )
    return os.environ["ALIGNKIT_BENCH_MODEL"]


def cpu_info() -> dict[str, Any]:
    """CPU model, every flag /proc/cpuinfo lists, the flags that decide precision, and the core count."""
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        text = ""
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags_line = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
    flags = sorted(set(flags_line.group(1).split())) if flags_line else []
    return {
        "model": model.group(1).strip() if model else "unknown",
        "flags_of_interest": [f for f in CPU_FLAGS_OF_INTEREST if f in flags],
        "flags": flags,
        "cores": os.cpu_count(),
    }


def command_line(argv: list[str] | None = None, env_keys=("OMP_NUM_THREADS", "OMP_WAIT_POLICY")) -> str:
    """The command as typed (from the repository root), with the thread environment that shapes the timing."""
    import sys

    script = sys.argv[0]
    try:
        script = str(Path(script).resolve().relative_to(Path(__file__).resolve().parent.parent))
    except ValueError:
        pass
    env = [f"{k}={os.environ[k]}" for k in env_keys if k in os.environ]
    return " ".join([*env, ".venv/bin/python", script, *(sys.argv[1:] if argv is None else argv)])


def met(value: float | None, op: str, threshold: float) -> bool | None:
    """Whether ``value op threshold`` holds; None when there is no value (not measured)."""
    import operator

    ops = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
    if value is None or (isinstance(value, float) and value != value):
        return None
    return bool(ops[op](value, threshold))


def figure(
    key: str,
    label: str,
    goal: str,
    measured: float | None,
    met_: bool | None,
    statistic: str,
    *,
    unit: str = "",
    also: list[dict] | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    """One row of RESULTS.md. ``goal`` is text ("<= 1.02", "none: decides X"); ``met_`` is True/False, or None when
    the figure has no goal or was not measured; ``statistic`` names the verdict statistic fixed in the bench's code;
    ``also`` holds other statistics shown beside it, each ``{"statistic", "measured", "met", "note"}``."""
    row: dict[str, Any] = {
        "figure": key,
        "label": label,
        "goal": goal,
        "measured": measured,
        "unit": unit,
        "met": met_,
        "verdict_statistic": statistic,
    }
    if also:
        row["also"] = also
    if note:
        row["note"] = note
    return row


def result_record(
    bench: str,
    command: str,
    date: str,
    threads: int | dict | None,
    statistics: dict[str, Any],
    figures: list[dict[str, Any]],
    cpu: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The schema every bench's JSON carries at its top level (raw data may sit beside it under other keys)."""
    return {
        "schema": SCHEMA,
        "bench": bench,
        "command": command,
        "date": date,
        "cpu": cpu if cpu is not None else cpu_info(),
        "threads": threads,
        "statistics": statistics,
        "figures": figures,
        **extra,
    }


def validate_result(record: dict[str, Any]) -> list[str]:
    """Problems that make ``record`` unusable for RESULTS.md (empty when it is valid)."""
    problems = []
    for key in ("schema", "bench", "command", "date", "cpu", "threads", "statistics", "figures"):
        if key not in record:
            problems.append(f"missing key '{key}'")
    if problems:
        return problems
    if record["schema"] != SCHEMA:
        problems.append(f"schema {record['schema']!r}, expected {SCHEMA!r}")
    if not isinstance(record["cpu"], dict) or "model" not in record["cpu"]:
        problems.append("cpu must be a dict with 'model'")
    for i, fig in enumerate(record["figures"]):
        for key in ("figure", "goal", "measured", "met", "verdict_statistic"):
            if key not in fig:
                problems.append(f"figure {i} ({fig.get('figure')}): missing '{key}'")
        if fig.get("met") not in (True, False, None):
            problems.append(f"figure {fig.get('figure')}: met must be true, false or null")
        if fig.get("measured") is None and fig.get("met") is not None:
            problems.append(f"figure {fig.get('figure')}: met without a measured value")
        for other in fig.get("also", []):
            if other.get("met") not in (True, False, None) or "statistic" not in other:
                problems.append(f"figure {fig.get('figure')}: bad 'also' entry {other}")
    return problems


def write_result(record: dict[str, Any], out_dir: Path | str | None = None, raw: dict | None = None) -> Path:
    """Validate ``record`` and write ``<out_dir>/<bench>.json`` (raw data, if any, under its own keys); a result
    written to bench/results also regenerates RESULTS.md."""
    import json

    from alignkit.io import atomic_write_text

    if problems := validate_result(record):
        raise ValueError(f"bench result {record.get('bench')}: " + "; ".join(problems))
    path = Path(out_dir if out_dir is not None else RESULTS_DIR) / f"{record['bench']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({**(raw or {}), **record}, indent=1, default=str) + "\n")
    if path.parent.resolve() == RESULTS_DIR:  # a measured result: the table follows it at once
        import make_results

        make_results.main([])
    return path


def with_hand_notes(path: Path | str, generated: str, marker: str = "## Reading (by hand") -> str:
    """``generated`` plus the hand-written section of the report already at ``path`` (from ``marker`` on), so that
    re-rendering a report from its raw JSON never drops what a person wrote under it."""
    try:
        old = Path(path).read_text(encoding="utf-8")
    except OSError:
        return generated
    at = old.find(marker)
    return generated if at < 0 else generated.rstrip("\n") + "\n\n" + old[at:]


def result_header(threads: int | None = None) -> dict[str, Any]:
    """What every result JSON records about its run: command, UTC date, CPU model and all its flags, thread count
    (torch's and the CPUs this process may run on), load average, OpenMP policy, git commit."""
    import datetime
    import sys

    import torch

    model, wanted = cpu_model_and_flags()
    try:
        flags_line = re.search(r"^flags\s*:\s*(.+)$", open("/proc/cpuinfo").read(), re.M)
        all_flags = flags_line.group(1).split() if flags_line else []
    except OSError:
        all_flags = []
    return {
        "command": " ".join([os.path.relpath(sys.executable), *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": model,
        "cpu_bf16_flags": wanted,
        "cpu_flags": all_flags,
        "torch_threads": threads or torch.get_num_threads(),
        "cpus_allowed": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "omp": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY")},
        "load_average_start": load_average(),
        "versions": {"torch": torch.__version__},
        "git": _git_state(),
    }


def header_command(header: dict) -> str:
    """The command a :func:`result_header` recorded, with the OpenMP environment it ran under (older headers kept
    that apart from the command)."""
    env = [f"{k}={v}" for k, v in header.get("omp", {}).items() if v is not None and f"{k}=" not in header["command"]]
    return " ".join([*env, header["command"]])


def cpu_kind(flags: list[str]) -> str:
    """The CPU classes bf16 speed depends on (:func:`alignkit.hardware.cpu_kind`). Benches whose figures differ by
    kind (precision, matmul peak) keep one result per kind: ``<bench>_<kind>.json``."""
    from alignkit.hardware import cpu_kind as kind_of

    return kind_of(flags)


def header_cpu(header: dict) -> dict:
    """The result schema's ``cpu`` entry from a :func:`result_header`."""
    return {"model": header["cpu_model"], "flags_of_interest": header["cpu_bf16_flags"], "flags": header["cpu_flags"]}


def write_raw_result(raw: dict, record: dict, markdown: str, out: Path) -> Path:
    """``<out>.json`` (the schema ``record`` beside the bench's ``raw`` report) and ``<out>.md`` (``markdown`` plus
    any hand-written notes already there); into bench/results this also regenerates RESULTS.md."""
    path = write_result(record, out.parent, raw=raw)
    md = out.with_suffix(".md")
    md.write_text(with_hand_notes(md, markdown), encoding="utf-8")
    return path


def _git_state() -> str:
    """``<commit>`` of the checkout the bench ran from, ``+dirty`` if tracked files differ from it."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False).stdout.strip()

    commit = git("rev-parse", "HEAD") or "unknown"
    return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
