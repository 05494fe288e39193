"""OpenMP wait policy on a shared CPU: greedy generation with torch's default (spinning) vs passive waiting.

Why the README tells users of a shared CPU to export ``OMP_WAIT_POLICY=PASSIVE``, and why alignkit does not set it
itself: with the default policy, torch's intra-op threads spin at every barrier. That is fastest on an idle machine,
but when another job holds one of the two cores, a 2-thread run waits on a descheduled partner while its own
spinning eats the time slice that partner needs. ``alignkit.hardware`` records the policy in the run's config.yaml
(``hardware_reasons.omp_wait_policy``).

Workload: the embedded SmolLM2-135M-Instruct generates ``--new-tokens`` tokens greedily for a batch of ``--batch``
identical chat prompts (the eval harness's and the pair builder's inner loop), after one short warm-up generation.
Each measurement runs in a fresh process (the policy is read once, when torch loads). Arms:

* ``2 threads, default``  -- OMP_WAIT_POLICY unset (what a plain torch script gets);
* ``2 threads, PASSIVE``  -- threads sleep at barriers;
* ``2 threads, spin 10k`` -- libgomp spins 10,000 rounds, then sleeps;
* ``1 thread``            -- OMP_NUM_THREADS=1, the usual workaround.

Conditions: ``quiet`` (nothing added; the machine's own background load is recorded) and ``contended`` (one extra
process spinning in pure Python for the whole measurement, i.e. one of the two cores taken by another job). Arms run
in a rotating order, ``--rounds`` times per condition; the report gives medians and ratios to ``2 threads, PASSIVE``.

    .venv/bin/python bench/omp_wait.py [--rounds 2] [--batch 8] [--new-tokens 24]
    .venv/bin/python bench/omp_wait.py --quick    # smoke run: tiny model, quiet only, two arms; temp dir

No goal: the ratios decide what the README advises (the figure is the contended default / PASSIVE ratio).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    bench_model_path,
    command_line,
    cpu_info,
    figure,
    result_record,
    results_dir,
    write_result,
)

ARMS = {
    "2 threads, default": {"OMP_NUM_THREADS": "2"},
    "2 threads, PASSIVE": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
    "2 threads, spin 10k": {"OMP_NUM_THREADS": "2", "GOMP_SPINCOUNT": "10000"},  # libgomp: spin, then sleep
    "1 thread": {"OMP_NUM_THREADS": "1"},
}
BASELINE = "2 threads, PASSIVE"

WORKER = """
import json, sys, time, torch
from transformers import AutoModelForCausalLM
from alignkit.models import load_tokenizer, materialize_embedded
path = sys.argv[3] if len(sys.argv) > 3 else str(materialize_embedded())
tok = load_tokenizer(path); tok.padding_side = "left"
model = AutoModelForCausalLM.from_pretrained(path).eval()
chat = [{"role": "user", "content": "Tell me about the history of Rome in some detail."}]
text = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
batch = tok([text] * int(sys.argv[1]), return_tensors="pt")
n = int(sys.argv[2])
with torch.inference_mode():
    model.generate(**batch, max_new_tokens=4, do_sample=False)
    start = time.perf_counter()
    model.generate(**batch, max_new_tokens=n, min_new_tokens=n, do_sample=False)
print(json.dumps({"seconds": time.perf_counter() - start, "threads": torch.get_num_threads()}))
"""

SPINNER = "import time\nend = time.time() + 3600\nwhile time.time() < end:\n    pass\n"


def measure(arm: str, batch: int, new_tokens: int, model: str | None = None) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "GOMP_SPINCOUNT")}
    env.update(ARMS[arm], HF_HUB_OFFLINE="1")
    out = subprocess.run(
        [sys.executable, "-c", WORKER, str(batch), str(new_tokens), *([model] if model else [])],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])["seconds"]


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=24)
    parser.add_argument("--out", default=None, help="report path (default bench/results/omp_wait.md)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny model, quiet only, two arms")
    args = parser.parse_args(argv)
    out = Path(args.out) if args.out else results_dir(args.quick) / "omp_wait.md"
    model = bench_model_path(True) if args.quick else None
    conditions = ("quiet",) if args.quick else ("quiet", "contended")
    if args.quick:
        args.rounds, args.batch, args.new_tokens = 1, 2, 4

    names = [BASELINE, "1 thread"] if args.quick else list(ARMS)
    times: dict[str, dict[str, list[float]]] = {}
    loads: dict[str, str] = {}
    date = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    for condition in conditions:
        spinner = subprocess.Popen([sys.executable, "-c", SPINNER]) if condition == "contended" else None
        loads[condition] = load_average()
        try:
            times[condition] = {arm: [] for arm in names}
            for r in range(args.rounds):
                for arm in names[r % len(names) :] + names[: r % len(names)]:
                    seconds = measure(arm, args.batch, args.new_tokens, model)
                    times[condition][arm].append(seconds)
                    print(f"{condition:9s} round {r + 1}: {arm:20s} {seconds:7.2f} s", flush=True)
        finally:
            if spinner is not None:
                spinner.kill()

    command = command_line(argv)
    cpu = cpu_info()
    lines = [
        "# OpenMP wait policy on a shared 2-core CPU: greedy generation time",
        "",
        f"Command: `{command.strip()}` (run {date} UTC).",
        "",
        f"CPU: {cpu['model']} ({', '.join(cpu['flags_of_interest']) or 'no bf16 flags'}).",
        "",
        f"Workload: embedded SmolLM2-135M-Instruct, batch {args.batch}, {args.new_tokens} new tokens, greedy, fp32; "
        f"each measurement in a fresh process; {args.rounds} rounds per condition, arm order rotating. "
        "`contended` adds one process spinning in pure Python (another job holding a core). "
        "Load average at the start of each condition: " + ", ".join(f"{c} {v}" for c, v in loads.items()) + " "
        "(other jobs may share the machine).",
        "",
        "| condition | arm | median (s) | ratio vs 2 threads, PASSIVE | measurements (s) |",
        "|---|---|---|---|---|",
    ]
    for condition, per_arm in times.items():
        base = statistics.median(per_arm[BASELINE])
        for arm, values in per_arm.items():
            med = statistics.median(values)
            shown = ", ".join(f"{v:.2f}" for v in values)
            lines.append(f"| {condition} | {arm} | {med:.2f} | **{med / base:.2f}** | {shown} |")
    report = "\n".join(lines) + "\n"
    print(report)
    out.write_text(report, encoding="utf-8")
    ratios = {
        c: {arm: statistics.median(v) / statistics.median(per_arm[BASELINE]) for arm, v in per_arm.items()}
        for c, per_arm in times.items()
    }
    figures = [
        figure(
            f"omp_wait.{c}.default_vs_passive",
            f"Greedy generation, 2 threads: OpenMP default (spin) / PASSIVE, {c} CPU",
            "none: decides the README's advice on OMP_WAIT_POLICY",
            ratios[c][arm],
            None,
            "ratio of median seconds, each measurement in a fresh process",
            unit="x",
        )
        for c in times
        for arm in ("2 threads, default",)
        if arm in ratios[c]
    ]
    stats = {"seconds": times, "ratio_vs_passive": ratios, "load_average": loads}
    record = result_record("omp_wait", command, date, {a: ARMS[a]["OMP_NUM_THREADS"] for a in names}, stats, figures)
    print(f"wrote {out} and {write_result(record, out.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
