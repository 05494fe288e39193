"""Write bench/results/ppo_peer.md from bench/ppo_peer/out/{alignkit,trl112}.json (run both runners first).

.venv/bin/python bench/ppo_peer/compare.py
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).parent
RESULT = HERE.parent / "results" / "ppo_peer.md"


def main() -> None:
    ours, peer = (json.loads((HERE / "out" / f"{n}.json").read_text()) for n in ("alignkit", "trl112"))
    # The first update includes one-off warm-up (allocations, first generation); report the median of the rest.
    t_ours = statistics.median(ours["update_seconds"][1:] or ours["update_seconds"])
    t_peer = statistics.median(peer["update_seconds"][1:] or peer["update_seconds"])
    n = max(len(ours["reward_curve"]), len(peer["reward_curve"]))
    curve = [f"| {i + 1} | {_at(ours['reward_curve'], i)} | {_at(peer['reward_curve'], i)} |" for i in range(n)]
    lines = [
        "# PPO peer comparison: alignkit PPOTrainer (TRL 1.16) vs trl==1.12.0 experimental PPOTrainer",
        "",
        "Commands: `.venv/bin/python bench/ppo_peer/run_alignkit.py " + " ".join(sys.argv[1:]) + "`, "
        "`bench/.venv-trl112/bin/python bench/ppo_peer/run_trl112.py`, `.venv/bin/python bench/ppo_peer/compare.py`.",
        f"Settings (both): `{json.dumps(ours['settings'])}`; embedded SmolLM2-135M-Instruct, fp32, CPU.",
        "",
        "| | alignkit | TRL 1.12 | ratio (goal <= 0.8) |",
        "|---|---|---|---|",
        f"| median seconds per PPO update (rollout + epochs) | {t_ours:.1f} | {t_peer:.1f} | {t_ours / t_peer:.2f} |",
        f"| peak RSS (MiB, whole process) | {ours['peak_rss_mib']:.0f} | {peer['peak_rss_mib']:.0f} | "
        f"{ours['peak_rss_mib'] / peer['peak_rss_mib']:.2f} |",
        "",
        "Reward (math_answer mean per rollout):",
        "",
        "| update | alignkit | TRL 1.12 |",
        "|---|---|---|",
        *curve,
        "",
    ]
    RESULT.write_text("\n".join(lines))
    print("\n".join(lines))


def _at(values: list[float], i: int) -> str:
    return f"{values[i]:.3f}" if i < len(values) else "-"


if __name__ == "__main__":
    main()
