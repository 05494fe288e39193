"""Write bench/results/reliability.md: every case of the bad-input matrix with the one line a user sees.

The cases and their runner live in tests/bad_input_cases.py, which tests/test_bad_input_matrix.py also runs and
checks against this file, so the table cannot drift from the tests. Runs in about 20 s on one core.

    .venv/bin/python tests/reliability_table.py           # rewrite bench/results/reliability.md
    .venv/bin/python tests/reliability_table.py --check   # exit 1 if the committed file differs
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "results" / "reliability.md"
sys.path.insert(0, str(ROOT / "tests"))  # bad_input_cases sits beside this script

import bad_input_cases as matrix  # noqa: E402


def generate() -> str:
    from alignkit.models import build_tiny_model

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # as in the test suite: the hub is never asked
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="alignkit-reliability-"))
    try:
        tiny = str(build_tiny_model(work / "tiny"))
        outcomes = [matrix.run_case(case, work / "cases", tiny) for case in matrix.CASES]
        return matrix.render_table(outcomes, matrix.replacements_for(work / "cases", tiny))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed file instead of writing")
    args = parser.parse_args()
    text = generate()
    if args.check:
        if OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is out of date: run tests/reliability_table.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
