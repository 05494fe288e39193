"""`make check`: every path and command the docs mention must exist and work.

Checked: the READMEs given on the command line (default: ``README.md`` and ``bench/README.md``) and the header
comment of every recipe (the lines before its first key, which give the command that runs it).

- every word that looks like a repository path (``eval/suites/smol.yaml``, also inside a command such as
  ``.venv/bin/python bench/eval_speed.py --n 256``) must exist; in a README below the top level, a path may also be
  relative to that README's folder (``results/eval_speed.md`` in ``bench/README.md``);
- every `make TARGET` must be a Makefile target and every `recipe=NAME` a shipped recipe;
- every `alignkit ...` command must parse (``--help`` of its subcommand runs), `alignkit list` runs, and every
  ``alignkit train NAME`` names a shipped recipe;
- dry runs of the commands themselves: every `make ...` line runs as ``make -n`` (prints, runs nothing), every
  ``alignkit train NAME key=value ...`` loads its recipe with those overrides (unknown keys and bad values fail, no
  model is loaded), and every ``python bench/X.py ...`` (or ``tests/X.py``) script runs with ``--help`` (it imports
  and parses its arguments).
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATH_PREFIXES = ("recipes/", "plugins/", "eval/", "datasets_cards/", "tests/", "bench/", "alignkit/", "runs/", ".ci/")
DEFAULT_DOCS = ("README.md", "bench/README.md")


def _path_words(token: str, prefixes: tuple[str, ...]) -> list[str]:
    """Words of ``token`` that look like a path under one of ``prefixes``, trailing punctuation stripped."""
    words = []
    for word in token.split():
        previous = None
        while word != previous:  # "bench/results/x.md)." loses ".", then ")"
            previous, word = word, word.strip("`'\"()[],;:")
            word = word if word.endswith("/.") else word.rstrip(".")
        words.append(word)
    return [w for w in words if w.startswith(prefixes)]


def check_paths(text: str, tokens: set[str], base: Path) -> list[str]:
    """Paths in ``tokens`` (root-relative, or relative to ``base``, the document's folder) that do not exist."""
    local = tuple(f"{p.name}/" for p in base.iterdir() if p.is_dir()) if base != ROOT else ()
    problems = []
    for token in sorted(tokens):
        for word in _path_words(token, PATH_PREFIXES + local):
            if "<" in word or "*" in word or word.startswith("runs/") or "/.venv" in word:
                continue  # placeholders, globs, run outputs and user-made venvs are not in the tree
            path = word.rstrip("/")
            root_relative = word.startswith(PATH_PREFIXES) and (ROOT / path).exists()
            if not root_relative and not (base / path).exists():
                problems.append(f"path {word} does not exist")
    return problems


def check_commands(tokens: set[str], targets: set[str], recipes: set[str]) -> list[str]:
    problems = []
    for token in sorted(tokens):
        if token.startswith("make"):
            words = shlex.split(token.split(" #", 1)[0])  # drop the trailing comment; keep quoted ARGS together
            for word in words[1:]:
                if word.startswith("recipe="):
                    if word.split("=", 1)[1] not in recipes:
                        problems.append(f"`{token}`: no recipe {word.split('=', 1)[1]}")
                elif "=" not in word and not word.startswith(("#", "&&")) and word not in targets:
                    if re.fullmatch(r"[a-z-]+", word):
                        problems.append(f"`{token}`: no Makefile target {word}")
        for name in re.findall(r"alignkit train ([\w./-]+)", token):
            if "/" not in name and not name.endswith((".yaml", ".yml")) and name not in recipes:
                problems.append(f"`{token}`: no recipe {name}")
    return problems


def check_cli(text: str) -> list[str]:
    problems = []
    for sub in sorted(set(re.findall(r"alignkit (train|eval|list|pairs|doctor)\b", text))):
        cmd = [sys.executable, "-m", "alignkit", sub] + ([] if sub == "list" else ["--help"])
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        if result.returncode != 0:
            problems.append(f"`alignkit {sub}` failed: {result.stderr.strip().splitlines()[-1:]}")
    return problems


def check_make_dry(tokens: set[str]) -> list[str]:
    """``make -n`` of every make command: the targets and variables resolve, and nothing runs."""
    problems = []
    for token in sorted(t for t in tokens if re.match(r"make(\s|$)", t)):
        words = shlex.split(token.split(" #", 1)[0])
        result = subprocess.run(["make", "-n", *words[1:]], capture_output=True, text=True, cwd=ROOT)
        if result.returncode != 0:
            problems.append(f"`{token}`: make -n failed: {result.stderr.strip().splitlines()[-1:]}")
    return problems


def check_train_overrides(tokens: set[str], recipes: set[str]) -> list[str]:
    """Every ``alignkit train NAME key=value ...`` parses: its recipe loads with its overrides (no model loaded)."""
    from alignkit.errors import AlignkitError
    from alignkit.recipe import load_recipe

    problems = []
    for token in sorted(tokens):
        for match in re.finditer(r"alignkit train ([\w./-]+)((?: [\w.]+=\S+)+)", token):
            name, overrides = match.group(1), match.group(2).split()
            if name not in recipes and not (ROOT / name).exists():
                continue  # check_commands reports unknown recipes
            try:
                load_recipe(name if name in recipes else str(ROOT / name), overrides)
            except (AlignkitError, ValueError) as exc:
                problems.append(f"`{token}`: {exc}")
    return problems


def check_scripts(tokens: set[str]) -> list[str]:
    """``--help`` of every repository script a command runs with python (a renamed script or a broken import)."""
    problems = []
    scripts = {m for t in tokens for m in re.findall(r"python3? ((?:bench|tests)/[\w/]+\.py)", t)}
    for script in sorted(scripts):
        if not (ROOT / script).exists():
            continue  # check_paths reports it
        result = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, cwd=ROOT)
        if result.returncode != 0:
            problems.append(f"`python {script} --help` failed: {result.stderr.strip().splitlines()[-1:]}")
    return problems


def doc_tokens(text: str) -> set[str]:
    """Backticked spans, `make ...` lines and the lines of fenced code blocks."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.M | re.S)
    lines = {line.split(" #", 1)[0].strip() for block in fenced for line in block.splitlines()}
    tokens = set(re.findall(r"`([^`\n]+)`", text)) | set(re.findall(r"^\s*(make[^\n]*)$", text, flags=re.M))
    return {t.strip() for t in tokens | lines if t.strip()}


def recipe_header(path: Path) -> str:
    """The comment lines a recipe opens with, without their ``#``."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return "\n".join(lines)


def main(docs: list[str]) -> int:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-zA-Z_-]+):", makefile, flags=re.M))
    recipes = {p.stem for p in (ROOT / "recipes").glob("*.yaml")}
    failed = 0
    for doc in docs:
        path = ROOT / doc
        text = path.read_text()
        tokens = doc_tokens(text)
        problems = check_paths(text, tokens, path.parent) + check_commands(tokens, targets, recipes) + check_cli(text)
        problems += check_make_dry(tokens) + check_train_overrides(tokens, recipes) + check_scripts(tokens)
        failed += _report(doc, problems)
    problems = []
    for recipe in sorted((ROOT / "recipes").glob("*.yaml")):
        header = recipe_header(recipe)
        # a header is prose: every word may be a path; commands are `make recipe=NAME` and `alignkit train NAME`
        commands = set(re.findall(r"(make recipe=[\w-]+|alignkit train (?:[\w./-]+\.ya?ml|[\w-]+))", header))
        found = check_paths(header, set(header.split()), ROOT) + check_commands(commands, targets, recipes)
        problems += [f"{recipe.relative_to(ROOT)}: {p}" for p in found]
    failed += _report("recipe headers", problems)
    return 1 if failed else 0


def _report(what: str, problems: list[str]) -> int:
    for problem in problems:
        print(f"readme_check: {problem}")
    print(f"readme_check: {what}: {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or list(DEFAULT_DOCS)))
