"""Run the step-time benchmarks one after another (``make bench``), each in its own Python process.

    .venv/bin/python bench/run.py            # full runs; each writes its bench/results/*.md
    .venv/bin/python bench/run.py --quick    # smoke runs (print only, nothing written)

One process per benchmark so that each starts from a clean torch/accelerate state and a failure in one does not
hide the others; the exit status is non-zero if any failed. Sequential, never parallel: they measure time on the
same CPU.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# (script, arguments for a full run, arguments for --quick)
BENCHMARKS = [
    ("plugin_overhead.py", [], ["--quick"]),
    ("precision.py", [], ["--quick"]),
    # lora_vs_qlora.py has no --quick; a short run still measures both arms, written to /tmp rather than results/.
    ("lora_vs_qlora.py", [], ["--steps", "2", "--batch", "2", "--seq", "128", "--out", "/tmp/lora_vs_qlora.quick.md"]),
    ("generation_speed.py", [], ["--quick"]),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke-run every benchmark")
    args = parser.parse_args(argv)
    failed = []
    for script, full, quick in BENCHMARKS:
        cmd = [sys.executable, str(BENCH / script), *(quick if args.quick else full)]
        print(f"==> {' '.join(cmd)}", flush=True)
        start = time.perf_counter()
        # Run from the repository root: the scripts' default --out paths are relative to it.
        code = subprocess.call(cmd, cwd=BENCH.parent)
        print(f"<== {script}: exit {code} after {time.perf_counter() - start:.0f} s", flush=True)
        if code:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
