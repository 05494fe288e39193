"""Cost of the training-time callbacks of issue 16: the reward-hacking monitor and the held-out win-rate callback.

* **Monitor overhead** (goal <= 2 % of step time, everything else off). alignkit's DPOTrainer with the dpo-smol
  settings that shape a step (LoRA r=16 all-linear, 4 pairs per step, max_length 256, cpu_fast_path, alignkit's
  precision for this CPU), no other plugin, logging every step (the monitor's worst case: it runs on every log entry),
  on the embedded SmolLM2-135M; and GRPO (4 generations of 32 tokens, a cheap task-free reward), where the monitor
  also tokenizes the batch's completions for its per-sample statistics. Each optimizer step is timed from
  ``on_step_begin`` to ``on_step_end``; the monitor runs in ``on_log``, outside that window, so its own wall time is
  timed around each call. Verdict statistic, fixed here: total monitor time / total timed step time, per trainer.
* **Win-rate callback cost per call**: on the same DPO policy, the callback as ``winrate_steps`` builds it (16 held-out
  prompts of the smol suite's chat set, greedy, 64 new tokens, judged by ``rm-judge-smol``) is measured ``--calls``
  times after its one-off start generation. Reported: median seconds per call, and per call / median DPO step, i.e.
  the share of training time at ``winrate_steps: N`` is that ratio / N.

    OMP_NUM_THREADS=1 .venv/bin/python bench/callback_cost.py --runs-root runs     # -> bench/results/callback_cost
    .venv/bin/python bench/callback_cost.py --quick                                 # smoke run, tiny model, temp dir
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchlib import (
    bench_model_path,
    command_line,
    figure,
    met,
    preference_pairs,
    result_header,
    result_record,
    results_dir,
    set_offline_env,
    sharegpt_chats,
    write_raw_result,
)
from transformers import TrainerCallback

GOAL_MONITOR = 0.02
VERDICT_MONITOR = "total monitor on_log wall time / total timed optimizer-step wall time (logging every step)"
VERDICT_WINRATE = "median wall time of one WinRateCallback.measure call (generate + judge + log)"


class StepTimer(TrainerCallback):
    """Wall time of each optimizer step, on_step_begin to on_step_end."""

    def __init__(self):
        self.steps: list[float] = []
        self._began = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._began = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append(time.perf_counter() - self._began)


def timed_monitor():
    """A RewardHackingMonitor that times its own on_log calls (nested Trainer.log calls included)."""
    from alignkit.eval.monitor_callback import RewardHackingMonitor

    class TimedMonitor(RewardHackingMonitor):
        def __init__(self):
            super().__init__(plot=False)
            self.calls: list[float] = []

        def on_log(self, *args, **kwargs):
            began = time.perf_counter()
            try:
                return super().on_log(*args, **kwargs)
            finally:
                if not self._logging:  # the outer call only: it contains the nested one
                    self.calls.append(time.perf_counter() - began)

    return TimedMonitor()


def distinct_words(prompts, completions, **kwargs) -> list[float]:
    """Cheap task-free GRPO reward: the fraction of distinct words."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [len(set(t.split())) / max(1, len(t.split())) for t in texts]


def build(kind: str, model_path: str, steps: int, quick: bool, out_dir: str, callbacks: list):
    from datasets import Dataset
    from peft import LoraConfig

    import alignkit.plugins as ak
    from alignkit.hardware import detect

    chats, source = sharegpt_chats(8 if quick else 48)
    common = dict(output_dir=out_dir, max_steps=steps, per_device_train_batch_size=4, learning_rate=2e-4,
                  bf16=detect().cpu_bf16, use_cpu=True, gradient_checkpointing=False, report_to="none", seed=0,
                  logging_steps=1, save_strategy="no", disable_tqdm=True, dataloader_num_workers=0)  # fmt: skip
    lora = LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear")
    if kind == "dpo":
        args = ak.DPOConfig(**common, max_length=128 if quick else 256, beta=0.1, cpu_fast_path=True)
        data = Dataset.from_list(preference_pairs(chats))
        trainer = ak.DPOTrainer(model=model_path, args=args, train_dataset=data, peft_config=lora, callbacks=callbacks)
    else:
        args = ak.GRPOConfig(**common, num_generations=4, max_completion_length=8 if quick else 32, beta=0.0)
        data = Dataset.from_list([{"prompt": [c["messages"][0]]} for c in chats])
        trainer = ak.GRPOTrainer(
            model=model_path, reward_funcs=[distinct_words], args=args, train_dataset=data, peft_config=lora,
            callbacks=callbacks,
        )  # fmt: skip
    return trainer, source


def measure_monitor(kind: str, model_path: str, steps: int, quick: bool) -> tuple[dict, object]:
    timer, monitor = StepTimer(), timed_monitor()
    with tempfile.TemporaryDirectory() as tmp:
        trainer, source = build(kind, model_path, steps, quick, tmp, [timer, monitor])
        monitor.trainer = trainer
        trainer.train()
    logged = sum(1 for e in trainer.state.log_history if any(k.startswith("monitor/") for k in e))
    return {
        "data": source,
        "step_s": timer.steps,
        "monitor_s": monitor.calls,
        "monitor_entries": logged,
        "overhead": sum(monitor.calls) / sum(timer.steps),
        "monitor_ms_per_call": 1000 * statistics.median(monitor.calls),
    }, trainer


def judge_and_prompts(quick: bool, runs_root: str, model_path: str):
    """The win-rate callback's inputs as `winrate_steps` builds them (quick: tiny RM, a few prompts)."""
    from alignkit.eval.judges import RewardModelJudge
    from alignkit.eval.rm_score import load_reward_scorer

    if quick:
        from alignkit.models import build_tiny_reward_model

        rm = build_tiny_reward_model(Path(tempfile.mkdtemp(prefix="alignkit-bench-rm-")))
        prompts = [[{"role": "user", "content": f"Tell me about {x}."}] for x in ("cats", "tea", "rain", "maps")]
        return prompts, RewardModelJudge(load_reward_scorer(str(rm))), "tiny random RM"
    from alignkit.eval.winrate_callback import callback_from_suite

    cb = callback_from_suite("smol", runs_root, every_n_steps=1, n_prompts=16, max_new_tokens=64)
    return cb.prompts, cb.judge, "run:rm-judge-smol"


def measure_winrate(trainer, calls: int, quick: bool, runs_root: str, model_path: str) -> dict:
    from alignkit.eval.generation import GenerationConfig
    from alignkit.eval.winrate_callback import WinRateCallback

    prompts, judge, judge_name = judge_and_prompts(quick, runs_root, model_path)
    new_tokens = 8 if quick else 64
    cb = WinRateCallback(prompts, judge, 1, GenerationConfig(max_new_tokens=new_tokens, batch_size=len(prompts)),
                         trainer=trainer, plot=False)  # fmt: skip
    state, tok = trainer.state, trainer.processing_class
    began = time.perf_counter()
    cb.on_train_begin(trainer.args, state, trainer.control, model=trainer.model, processing_class=tok)
    start_s = time.perf_counter() - began
    for _ in range(calls):
        cb.measure(trainer.args, state, trainer.model, tok)
    return {
        "prompts": len(prompts),
        "max_new_tokens": new_tokens,
        "judge": judge_name,
        "start_generation_s": start_s,
        "call_s": cb.seconds,
    }


def render(report: dict) -> tuple[dict, str]:
    h = report["header"]
    dpo, wr = report["monitor"]["dpo"], report["winrate"]
    step = statistics.median(dpo["step_s"])
    per_call = statistics.median(wr["call_s"])
    figures = [
        figure(f"monitor_overhead_{kind}", f"Reward-hacking monitor overhead, {kind.upper()} (% of step time)",
               f"<= {100 * GOAL_MONITOR:g}", 100 * r["overhead"], met(r["overhead"], "<=", GOAL_MONITOR),
               VERDICT_MONITOR + ", in %",
               also=[{"statistic": "median ms per monitor call", "measured": r["monitor_ms_per_call"], "met": None}])
        for kind, r in report["monitor"].items()
    ] + [
        figure("winrate_call_s", "WinRateCallback cost per call (s)", "none: measured for the recipe header",
               per_call, None, VERDICT_WINRATE,
               also=[{"statistic": "per call / median DPO step", "measured": per_call / step, "met": None},
                     {"statistic": "one-off start generation (s)", "measured": wr["start_generation_s"], "met": None}])
    ]  # fmt: skip
    stats = {"dpo_median_step_s": step, "winrate_median_call_s": per_call, "winrate_call_over_step": per_call / step}
    stats.update({f"monitor_overhead_{k}": r["overhead"] for k, r in report["monitor"].items()})
    record = result_record("callback_cost", h["command"], h["date"], h["torch_threads"], stats, figures,
                           cpu={"model": h["cpu_model"], "flags_of_interest": h["cpu_bf16_flags"]})  # fmt: skip
    lines = [
        "# Callback cost (issue 16)\n",
        f"`{h['command']}`, {h['date']}, {h['cpu_model']} ({', '.join(h['cpu_bf16_flags'])}), "
        f"{h['torch_threads']} torch thread(s), load {h['load_average_start']}.\n",
        "| trainer | steps | median step (s) | monitor: median ms per call | monitor total / step total | goal |",
        "|---|---|---|---|---|---|",
    ]
    for kind, r in report["monitor"].items():
        lines.append(f"| {kind} | {len(r['step_s'])} | {statistics.median(r['step_s']):.2f} | "
                     f"{r['monitor_ms_per_call']:.2f} | **{r['overhead']:.4f}** | <= {GOAL_MONITOR} |")  # fmt: skip
    lines += [
        "",
        f"WinRateCallback on the DPO policy: {wr['prompts']} prompts, greedy, {wr['max_new_tokens']} new tokens, "
        f"judge {wr['judge']}: **{per_call:.1f} s per call** (median of {len(wr['call_s'])}: "
        f"{', '.join(f'{s:.1f}' for s in wr['call_s'])}), {per_call / step:.1f}x a median DPO step ({step:.2f} s); "
        f"the one-off start generation took {wr['start_generation_s']:.1f} s. At `winrate_steps: N` it adds about "
        f"{per_call / step:.1f}/N of the training time.",
    ]
    return record, "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="training steps per trainer for the monitor")
    parser.add_argument("--calls", type=int, default=3, help="win-rate callback measurements")
    parser.add_argument("--trainers", default="dpo,grpo")
    parser.add_argument("--runs-root", default="runs", help="where runs/rm-judge-smol lives (the judge)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny model, 2 steps; writes to a temp dir")
    parser.add_argument("--out", default=None, help="path stem of the .json/.md (default bench/results/callback_cost)")
    parser.add_argument("--rerender", metavar="JSON", help="rebuild the result and .md from a run's JSON (no run)")
    args = parser.parse_args(argv)
    if args.rerender:
        import json

        report = json.loads(Path(args.rerender).read_text(encoding="utf-8"))
        report = {k: report[k] for k in ("header", "monitor", "winrate")}
        record, md = render(report)
        out = Path(args.out) if args.out else Path(args.rerender).with_suffix("")
        path = write_raw_result(report, record, md, out)
        print(f"wrote {path} and {path.with_suffix('.md')} from {args.rerender}")
        return 0
    set_offline_env()
    import torch

    torch.set_num_threads(args.threads)
    header = result_header(args.threads)
    header["command"] = command_line(argv)
    model_path = bench_model_path(args.quick)
    steps, calls = (2, 1) if args.quick else (args.steps, args.calls)
    report: dict = {"header": header, "monitor": {}}
    dpo_trainer = None
    for kind in args.trainers.split(","):
        report["monitor"][kind], trainer = measure_monitor(kind, model_path, steps, args.quick)
        print(f"{kind}: monitor overhead {report['monitor'][kind]['overhead']:.4f}", flush=True)
        if kind == "dpo":
            dpo_trainer = trainer
    if dpo_trainer is None:
        raise SystemExit("--trainers must include dpo: the win-rate callback is measured on the DPO policy")
    report["winrate"] = measure_winrate(dpo_trainer, calls, args.quick, args.runs_root, model_path)
    record, md = render(report)
    out = Path(args.out) if args.out else results_dir(args.quick) / "callback_cost"
    path = write_raw_result(report, record, md, out)
    print(md)
    print(f"wrote {path} and {path.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
