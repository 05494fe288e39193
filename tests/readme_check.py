"""`make check`: every path and command the README mentions must exist and work.

- every `backticked` token that looks like a repository path must exist;
- every `make TARGET` must be a Makefile target and every `recipe=NAME` a shipped recipe;
- every `alignkit ...` command must parse (``--help`` of its subcommand runs), and `alignkit list` runs.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATH_PREFIXES = ("recipes/", "plugins/", "eval/", "datasets_cards/", "tests/", "bench/", "alignkit/", "runs/", ".ci/")


def main(readme: str) -> int:
    text = (ROOT / readme).read_text()
    problems: list[str] = []
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-zA-Z_-]+):", makefile, flags=re.M))
    recipes = {p.stem for p in (ROOT / "recipes").glob("*.yaml")}
    for token in set(re.findall(r"`([^`\n]+)`", text)) | set(re.findall(r"^\s*(make[^\n]*)$", text, flags=re.M)):
        token = token.strip()
        if token.startswith(PATH_PREFIXES) and " " not in token:
            path = token.split("<")[0].rstrip("/")
            if "<" not in token and not token.startswith("runs/") and not (ROOT / path).exists():
                problems.append(f"path {token} does not exist")
        if token.startswith("make"):
            words = shlex.split(token.split(" #", 1)[0])  # drop the trailing comment; keep quoted ARGS together
            for word in words[1:]:
                if word.startswith("recipe="):
                    if word.split("=", 1)[1] not in recipes:
                        problems.append(f"`{token}`: no recipe {word.split('=', 1)[1]}")
                elif "=" not in word and not word.startswith(("#", "&&")) and word not in targets:
                    if re.fullmatch(r"[a-z-]+", word):
                        problems.append(f"`{token}`: no Makefile target {word}")
    for sub in sorted(set(re.findall(r"alignkit (train|eval|list)\b", text))):
        cmd = [sys.executable, "-m", "alignkit", sub] + ([] if sub == "list" else ["--help"])
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if result.returncode != 0:
            problems.append(f"`alignkit {sub}` failed: {result.stderr.strip().splitlines()[-1:]}")
    for problem in problems:
        print(f"readme_check: {problem}")
    print(f"readme_check: {readme}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "README.md"))
