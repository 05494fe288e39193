"""Result JSONs for benchmarks whose committed report predates the result schema and kept no raw numbers.

Each figure is written with ``measured: null`` and ``met: null`` and says "not re-measured", with the date and the
command of the report it stands for: RESULTS.md then lists the row without inventing a number, and the bench's next
real run replaces the file. Reports with raw numbers are re-derived by their own bench instead (plugin_overhead
``--resummarize``, generation_speed and ppo_sampling_precision ``--from-json``, eval_speed ``--from-md``).

    .venv/bin/python bench/legacy_results.py     # writes only the files listed below that do not exist yet
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import NOT_REMEASURED, RESULTS_DIR, figure, result_record, write_result  # noqa: E402

# bench -> (report, date, command, threads, CPU as the report names it, [(figure, label, goal, verdict statistic)])
LEGACY = {
    "precision_amx": (
        "precision_amx.md",
        "2026-11-22 03:20",
        "python bench/precision.py --steps 5",
        1,
        {
            "model": "Intel(R) Xeon(R) Processor",
            "flags_of_interest": ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"],
        },
        [
            (
                "precision.amx.auto_vs_fastest",
                "dpo-smol step: alignkit's precision choice vs the fastest arm (amx CPU)",
                "<= 1.03",
                "median step time of alignkit / the smallest median step time of any arm run",
            ),
            (
                "precision.amx.trl_defaults",
                "dpo-smol step: TRL's defaults (use_cpu) / alignkit (amx CPU)",
                "none: shows what the automatic choice saves",
                "ratio of median step times",
            ),
        ],
    ),
    "lora_vs_qlora": (
        "lora_vs_qlora.md",
        "2026-11-22",
        ".venv/bin/python bench/lora_vs_qlora.py --steps 6 --batch 4 --seq 320",
        2,
        {"model": "not recorded by the run", "flags_of_interest": None},
        [
            (
                "lora_vs_qlora.step_ratio",
                "QLoRA (nf4 base) / LoRA (fp32 base) step time",
                "none: decides LoRA or QLoRA for the smol recipes",
                "ratio of median step times, arms interleaved step by step",
            )
        ],
    ),
    "omp_wait": (
        "omp_wait.md",
        "2026-11-22 04:44",
        "python bench/omp_wait.py --rounds 2 --batch 8 --new-tokens 24 --out /tmp/omp_wait.md",
        {"2 threads, default": "2", "2 threads, PASSIVE": "2", "2 threads, spin 10k": "2", "1 thread": "1"},
        {"model": "not recorded by the run", "flags_of_interest": None},
        [
            (
                f"omp_wait.{c}.default_vs_passive",
                f"Greedy generation, 2 threads: OpenMP default (spin) / PASSIVE, {c} CPU",
                "none: decides the README's advice on OMP_WAIT_POLICY",
                "ratio of median seconds, each measurement in a fresh process",
            )
            for c in ("quiet", "contended")
        ],
    ),
    "eval_roofline": (
        "eval_speed.md",
        "2026-12-01",
        "OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 .venv/bin/python bench/eval_roofline.py --n 256",
        1,
        {"model": "not recorded by the run (its report says AMD EPYC, with avx512_bf16)", "flags_of_interest": None},
        [
            (
                "eval_roofline.ceiling",
                "Eval speed-up ceiling at the best measured fp32 GEMM rate (upper bound)",
                "none: bounds eval_speed's goal",
                "loop CPU s / (batched GFLOP / best measured GEMM GFLOPS)",
            )
        ],
    ),
    "ppo_efficacy": (
        "ppo_efficacy.md",
        "2026-12-01 10:45",
        "OMP_NUM_THREADS=2 .venv/bin/python bench/ppo_efficacy.py",
        2,
        {"model": "not recorded by the run (its reading says AMD EPYC with avx512_bf16)", "flags_of_interest": None},
        [
            (
                "ppo_efficacy.accuracy_gain",
                "ppo-smol held-out arithmetic accuracy, trained minus base",
                ">= 0.2",
                "greedy accuracy on the card's test rows (max_eval_samples), trained - base, one seed",
            ),
            ("ppo_efficacy.train_minutes", "ppo-smol training time", "<= 15", "train_seconds / 60 from run.json"),
            (
                "ppo_efficacy.kl_in_band_fraction",
                "Adaptive KL (PPO): last-half readings within +-25 % of target",
                ">= 0.8",
                "share of the last half's per-rollout KL readings in [0.75, 1.25] x kl_target",
            ),
        ],
    ),
    "ppo_peer": (
        "ppo_peer.md",
        "2026-12-01 09:25",
        ".venv/bin/python bench/ppo_peer/compare.py",
        1,
        {
            "model": "not recorded by the run (notes of the same day: AMD EPYC with avx512_bf16, no AMX)",
            "flags_of_interest": None,
        },
        [
            (
                "ppo_peer.seconds_per_update",
                "PPO seconds per update, alignkit / TRL 1.12 (fp32 on both sides)",
                "<= 0.8",
                "seconds per update while both ran, alignkit / TRL 1.12",
            ),
            (
                "ppo_peer.peak_rss",
                "PPO peak RSS, alignkit / TRL 1.12 (fp32 on both sides)",
                "<= 0.8",
                "ru_maxrss of each runner process, alignkit / TRL 1.12",
            ),
        ],
    ),
}


def legacy_record(bench: str) -> dict:
    report, date, command, threads, cpu, rows = LEGACY[bench]
    note = f"{NOT_REMEASURED}: bench/results/{report} ({date}) kept no raw numbers; run the bench to measure it"
    figures = [figure(key, label, goal, None, None, stat, note=note) for key, label, goal, stat in rows]
    record = result_record(bench, command, date, threads, {}, figures, cpu=cpu)
    record["source"] = f"bench/results/{report} (not re-measured)"
    return record


def main() -> int:
    for bench in LEGACY:
        if (RESULTS_DIR / f"{bench}.json").exists():
            print(f"kept {bench}.json (a measured result exists)")
            continue
        print(f"wrote {write_result(legacy_record(bench))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
