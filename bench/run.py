"""Run every benchmark one after another (``make bench``), or a smoke version of each (``make bench QUICK=1``).

    .venv/bin/python bench/run.py                 # full runs: each writes bench/results/<bench>.json + .md
    .venv/bin/python bench/run.py --quick         # smoke runs on a tiny model into a temp dir, in seconds each
    .venv/bin/python bench/run.py --only eval_speed,eval_roofline

Full runs take hours (efficacy: three seeds of the default recipe; make_time: a cold `make`) and rewrite
bench/results/RESULTS.md at the end. Smoke runs never touch bench/results: they write to a temporary directory
(``$ALIGNKIT_BENCH_RESULTS``), share one tiny random model (``$ALIGNKIT_BENCH_MODEL``), and check that every bench
wrote a result JSON of the schema and that the results table renders from them; ``tests/test_bench_quick.py`` runs
them inside ``make test`` so that no bench rots.

One process per benchmark, so that each starts from a clean torch/accelerate state and a failure in one does not
hide the others; the exit status is non-zero if any failed. Full runs are sequential, never parallel: they measure
time on the same CPU. Smoke runs measure nothing, so they run in two lanes of one thread each (the machine's two
cores; ``--lanes``), each bench's output printed whole when it ends; benches that read another's result stay in
one lane, in order (``AFTER``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
TRL112 = BENCH / ".venv-trl112" / "bin" / "python"
# name -> (script, arguments of a full run, arguments of a smoke run or None, result JSON names a run writes)
BENCHMARKS: dict[str, tuple[str, list[str], list[str] | None, list[str]]] = {
    "plugin_overhead": ("plugin_overhead.py", ["--steps", "16"], ["--quick", "--no-control"], ["plugin_overhead*"]),
    "precision": ("precision.py", [], ["--quick"], ["precision_*"]),
    "lora_vs_qlora": ("lora_vs_qlora.py", [], ["--quick"], ["lora_vs_qlora"]),
    "generation_speed": ("generation_speed.py", [], ["--quick"], ["generation_speed*"]),  # one result per CPU kind
    "eval_speed": ("eval_speed.py", ["--n", "256"], ["--quick"], ["eval_speed"]),
    "eval_roofline": ("eval_roofline.py", ["--n", "256"], ["--quick"], ["eval_roofline"]),  # after eval_speed
    "eval_precision": ("eval_precision.py", [], ["--quick"], ["eval_precision"]),  # needs efficacy's seed-0 run
    "lmeval_peer": ("lmeval_peer.py", [], ["--quick"], ["lmeval_peer"]),  # vs lm-eval's HFLM, fp32, same numbers
    "omp_wait": ("omp_wait.py", [], ["--quick"], ["omp_wait"]),
    "train_speed": ("train_speed.py", [], ["--quick"], ["train_speed_*"]),  # cpu_fast_path on vs off, per CPU kind
    "mfu": ("mfu.py", [], ["--quick"], ["mfu_*"]),  # one result per CPU kind, as precision
    # loss and gradients of one step, cpu_fast_path on vs off, on the embedded model; one result per CPU kind
    "fast_path_equivalence": ("fast_path_equivalence.py", [], ["--quick"], ["fast_path_equivalence_*"]),
    "mfu_sft": ("mfu.py", ["--recipe", "sft-smol"], ["--quick", "--recipe", "sft-smol"], ["mfu_*_sft-smol"]),
    "ppo_sampling_precision": ("ppo_sampling_precision.py", [], ["--quick"], ["ppo_sampling_precision"]),
    "ppo_efficacy": ("ppo_efficacy.py", [], ["--quick"], ["ppo_efficacy"]),
    "arith_headroom": ("arith_headroom.py", [], ["--quick"], ["arith_headroom"]),  # pass@k bound on RL gains
    "ppo_peer": ("ppo_peer/compare.py", [], None, ["ppo_peer"]),  # run by run_ppo_peer(): two runners, then this
    "make_time": ("make_time.py", [], ["--quick"], ["make_time_*"]),  # one result per CPU kind
    "pipeline_time": ("make_time.py", ["--pipeline"], None, ["pipeline_time_*"]),  # make pipeline, cold: ~1 h
    # default's seed loop, kl's combination and rdpo's quick skip cost ~nothing; unlikelihood's two extra processes
    # (train + eval, ~50 s on the tiny model) are left to `efficacy.py --quick --figures unlikelihood` and mocked tests
    "efficacy": ("efficacy.py", [], ["--quick", "--seeds", "0", "--figures", "default,kl,rdpo"], ["efficacy"]),
    "callback_cost": ("callback_cost.py", [], ["--quick", "--trainers", "dpo"], ["callback_cost"]),
}
# bench -> the bench whose result it reads: run after it, in the same lane.
AFTER = {"eval_roofline": "eval_speed"}
# Why a bench has no smoke run (it is still part of `make bench`).
NO_QUICK = {
    "ppo_peer": "its peer side needs TRL 1.12 in bench/.venv-trl112; the alignkit PPO path is smoke-run by "
    "ppo_sampling_precision and ppo_efficacy",
    "pipeline_time": "the same script as make_time, whose smoke run covers it; tests/test_make_time.py checks the "
    "pipeline's phases and report, tests/test_stages.py the pipeline itself",
}
# Scripts in bench/ that are not benchmarks (the last two: analyses that results quote).
NOT_BENCHES = {
    "benchlib.py", "run.py", "make_results.py", "legacy_results.py", "rm_agreement.py", "kl_reading_noise.py",
}  # fmt: skip


def run_ppo_peer(env: dict) -> int:
    """Each arm's two runners at the same time (they must see the same load), one thread each, then the comparison:
    the fp32 headline (alignkit's shared-base LoRA critic) at the seeds of ppo_peer/common.SEEDS, then the like-for-
    like arm (--full-value-model) at the same seeds. TRL 1.12's side is the same command in both arms, so each pair's
    TRL 1.12 run rewrites out/trl112[-seed<N>].json; compare.py (run after every pair) re-measures only the pairs
    that ran side by side and keeps the others' rows."""
    if not TRL112.exists():
        print(f"ppo_peer: cannot run: {TRL112} is missing (see bench/ppo_peer/run_trl112.py)", file=sys.stderr)
        return 1
    sys.path.insert(0, str(BENCH / "ppo_peer"))
    from common import SEEDS

    env = {**env, "OMP_NUM_THREADS": "1", "TRL_EXPERIMENTAL_SILENCE": "1"}
    pairs = [(["--seed", str(seed)], ["--seed", str(seed)]) for seed in SEEDS]
    pairs += [(["--full-value-model", "--seed", str(seed)], ["--seed", str(seed)]) for seed in SEEDS]
    for ours, peer in pairs:
        procs = [
            subprocess.Popen(
                [sys.executable, str(BENCH / "ppo_peer" / "run_alignkit.py"), "--updates", "6", *ours], env=env
            ),
            subprocess.Popen(
                [str(TRL112), str(BENCH / "ppo_peer" / "run_trl112.py"), "--updates", "6", *peer], env=env
            ),
        ]
        if any([p.wait() for p in procs]):  # a list: wait for both, even when the first failed
            return 1
        if code := subprocess.call([sys.executable, str(BENCH / "ppo_peer" / "compare.py")], cwd=ROOT, env=env):
            return code
    return 0


def check_results(folder: Path, names: list[str]) -> list[str]:
    """Problems with the result JSONs the given benches should have written into ``folder``."""
    sys.path.insert(0, str(BENCH))
    from benchlib import validate_result

    problems = []
    for name in names:
        for pattern in BENCHMARKS[name][3]:
            found = sorted(folder.glob(f"{pattern}.json"))
            if not found:
                problems.append(f"{name}: wrote no {pattern}.json")
            for path in found:
                data = json.loads(path.read_text())
                if path.stem == "efficacy":
                    continue  # issue 12's flat keys; make_results reads them
                problems += [f"{path.name}: {p}" for p in validate_result(data)]
    return problems


def chains(names: list[str]) -> list[list[str]]:
    """``names`` grouped so that a bench runs after the one it reads (:data:`AFTER`), in the given order."""
    groups: list[list[str]] = []
    for name in names:
        home = next((g for g in groups if AFTER.get(name) in g), None)
        if home is None:
            groups.append([name])
        else:
            home.append(name)
    return groups


def run_one(name: str, args: argparse.Namespace, env: dict, capture: bool) -> tuple[int, str]:
    """Run one bench in its own process; (exit status, its output if captured). Prints its start and end lines."""
    script, full, quick, _ = BENCHMARKS[name]
    start = time.perf_counter()
    if name == "ppo_peer" and not args.quick:
        print("==> ppo_peer: both runners, then compare.py", flush=True)
        code, output, cpu = run_ppo_peer(env), "", float("nan")
    else:
        cmd = [sys.executable, str(BENCH / script), *(quick if args.quick else full)]
        print(f"==> {' '.join(cmd)}", flush=True)
        with tempfile.TemporaryFile("w+") as log:
            sink = log if capture else None
            # From the repository root: the scripts' default paths are relative to it.
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT if capture else None)
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own CPU time, even with another lane running
            proc.returncode = code = os.waitstatus_to_exitcode(status)
            log.seek(0)
            output = log.read()
        cpu = usage.ru_utime + usage.ru_stime
    end = f"<== {name}: exit {code} after {time.perf_counter() - start:.0f} s ({cpu:.0f} CPU s)"
    return code, output + end + "\n"


def run_lanes(names: list[str], args: argparse.Namespace, env: dict, lanes: int) -> list[tuple[str, int]]:
    """Run the benches, ``lanes`` at a time (1: in order, output live); [(name, exit status)] in the order run."""
    import threading

    if lanes <= 1:
        done = []
        for name in names:
            code, end = run_one(name, args, env, capture=False)
            print(end, end="", flush=True)
            done.append((name, code))
        return done
    queue, done, lock = chains(names), [], threading.Lock()

    def lane() -> None:
        while True:
            with lock:
                if not queue:
                    return
                chain = queue.pop(0)
            for name in chain:
                code, output = run_one(name, args, env, capture=True)
                with lock:
                    print(output, end="", flush=True)
                    done.append((name, code))

    workers = [threading.Thread(target=lane) for _ in range(lanes)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke-run every benchmark (tiny model, temp dir)")
    parser.add_argument("--only", help="comma-separated subset of: " + ",".join(BENCHMARKS))
    parser.add_argument("--lanes", type=int, help="smoke runs at a time, one thread each (default 2 with --quick)")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    if unknown := [n for n in names if n not in BENCHMARKS]:
        parser.error(f"--only: unknown {unknown}")
    lanes = args.lanes if args.lanes is not None else (2 if args.quick else 1)
    if lanes > 1 and not args.quick:
        parser.error("--lanes: full runs measure time on this CPU and run one at a time")
    env = dict(os.environ)
    tmp = None
    if args.quick:
        tmp = tempfile.TemporaryDirectory(prefix="alignkit-bench-quick-")
        env["ALIGNKIT_BENCH_RESULTS"] = str(Path(tmp.name) / "results")
        if "ALIGNKIT_BENCH_MODEL" not in env:  # one tiny model for every smoke run (each would build its own)
            code = "from alignkit.models import build_tiny_model as b; import sys; b(sys.argv[1], tied=False)"
            model = Path(tmp.name) / "tiny"
            subprocess.run([sys.executable, "-c", code, str(model)], check=True, env=env, capture_output=True)
            env["ALIGNKIT_BENCH_MODEL"] = str(model)
    failed, ran = [], []
    try:
        for name in names:
            if args.quick and BENCHMARKS[name][2] is None:
                print(f"==> {name}: no smoke run ({NO_QUICK[name]})", flush=True)
        runnable = [n for n in names if not (args.quick and BENCHMARKS[n][2] is None)]
        if lanes > 1:
            env["OMP_NUM_THREADS"] = "1"  # one core per lane
        for name, code in run_lanes(runnable, args, env, lanes):
            (failed if code else ran).append(name)
        folder = Path(env["ALIGNKIT_BENCH_RESULTS"]) if args.quick else BENCH / "results"
        problems = check_results(folder, ran)
        sys.path.insert(0, str(BENCH))
        import make_results

        if args.quick:
            make_results.render(make_results.load_results(folder))  # the table renders from smoke results too
        elif not args.only:
            make_results.main([])
        for problem in problems:
            print(f"result: {problem}", file=sys.stderr)
    finally:
        if tmp is not None:
            tmp.cleanup()
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed or problems else 0


if __name__ == "__main__":
    sys.exit(main())
