"""Generate bench/results/RESULTS.md from the result JSONs in bench/results/ (and nothing else).

One table, one row per figure: figure, goal, measured, met?, command, date, CPU. A figure's other statistics (a
former verdict statistic, the CPU-time twin of a wall-time ratio) are shown in its measured cell with their own
met/missed mark. Rows for benches that have no result yet are listed at the end, so a goal without a measurement
stays visible. A figure may carry its own ``command``, ``date`` and ``cpu`` (a row kept from an earlier run than the
rest of its record, as bench/ppo_peer/compare.py keeps an arm it did not re-measure); the record's are the default.
``--check`` compares instead of writing (``tests/test_results_table.py`` runs it).

    .venv/bin/python bench/make_results.py            # rewrite bench/results/RESULTS.md
    .venv/bin/python bench/make_results.py --check    # exit 1 if RESULTS.md is not what the JSONs give
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
OUT = RESULTS / "RESULTS.md"
# Benches that keep one result per CPU kind: <bench>_<kind>.json (benchlib.cpu_kind).
PER_CPU_KIND = (
    "precision_", "mfu_", "train_speed_", "make_time_", "pipeline_time_", "fast_path_equivalence_", "plugin_overhead_",
    "generation_speed_",
)  # fmt: skip
SCHEMA = "alignkit-bench-result/1"  # benchlib.SCHEMA (not imported: this script must not need torch)
# Benches whose figures the issues ask for; a missing JSON becomes a "no result yet" row.
EXPECTED = {
    "train_speed": "bench/train_speed.py: dpo-smol and sft-smol steps, fast path vs today's alignkit (goal >= 3x)",
    "mfu": "bench/mfu.py: matmul FLOP/s of a training step vs the measured peak of its compute dtype (bf16 where "
    "native, else fp32; goal >= 30 %)",
    "lmeval_peer": "bench/lmeval_peer.py: alignkit eval vs lm-eval 0.4.13's HFLM, perplexity and greedy generation "
    "(goal >= 3x, same numbers)",
    "make_time": "bench/make_time.py: `make`, cold dataset cache, after setup (goal <= 600 s; peak RSS)",
    "pipeline_time": "bench/make_time.py --pipeline: `make pipeline`, cold dataset cache, after setup "
    "(goal <= 3600 s)",
    "efficacy": "bench/efficacy.py: the default run and the method figures over 3 seeds (issue 12)",
}


def _bench_family(bench: str) -> str:
    """``precision_amx`` -> ``precision``: a per-CPU-kind result counts for its bench."""
    family = next((p for p in PER_CPU_KIND if bench.startswith(p)), None)
    return family[:-1] if family else bench


def load_results(results: Path = RESULTS) -> list[dict[str, Any]]:
    """Every ``*.json`` in ``results`` that carries the result schema or is efficacy.json's flat form, by name."""
    records = []
    for path in sorted(results.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("schema") == SCHEMA:
            records.append(data)
        elif path.stem == "efficacy" and "meta" in data:
            records.append(efficacy_record(data))
        else:
            raise ValueError(
                f"{path}: not a bench result (no schema {SCHEMA!r}); every bench writes benchlib's schema"
            )
    return records


def efficacy_record(data: dict[str, Any]) -> dict[str, Any]:
    """efficacy.json keeps issue 12's flat keys (``key``, ``key_sd``, ``key_reason``); its goals live in its meta."""
    meta = data["meta"]
    figures = []
    for key, goal in meta["goals"].items():
        value, sd = data.get(key), data.get(f"{key}_sd")
        if value is None or goal.startswith("none"):
            met = None
        else:
            op, threshold = goal.split()
            met = _compare(value, op, float(threshold))
        figures.append(
            {
                "figure": f"efficacy.{key}",
                "label": meta.get("labels", {}).get(key, key),
                "goal": goal,
                "measured": value,
                "sd": sd,
                "met": met,
                "verdict_statistic": f"mean over {meta.get('n_seeds', '?')} seeds",
                "note": data.get(f"{key}_reason"),
                **_measured_by(meta, key),
            }
        )
    return {**meta, "bench": "efficacy", "figures": figures}


def _measured_by(meta: dict[str, Any], key: str) -> dict[str, str]:
    """The command, date and CPU of the invocation that measured ``key``: ``--keep`` carries figures of groups it did
    not run, each with its own (``carried_from``); figures it ran, or did not measure at all, are the invocation's
    own."""
    carried = (meta.get("carried_from") or {}).get(key) or {}
    return {k: carried[k] for k in ("command", "date", "cpu") if carried.get(k) is not None}


def _compare(value: float, op: str, threshold: float) -> bool:
    return {"<=": value <= threshold, "<": value < threshold, ">=": value >= threshold, ">": value > threshold}[op]


def fmt_number(value: Any, unit: str = "") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value and abs(value) < 0.001:  # a tolerance-sized figure (1e-6 apart) would print as 0.000
        text = f"{value:.2e}"
    else:
        text = f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return text + (unit if unit in ("x", "%") else f" {unit}" if unit else "")


def mark(met: bool | None, measured: Any) -> str:
    if measured is None:
        return "not measured"
    return {True: "met", False: "**missed**", None: "– (no goal)"}[met]


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def measured_cell(fig: dict[str, Any]) -> str:
    if fig["measured"] is None:
        return fig.get("note") or "not measured"
    text = fmt_number(fig["measured"], fig.get("unit", ""))
    if fig.get("sd") is not None:
        text += f" ± {fmt_number(fig['sd'])}"
    text += f" ({fig['verdict_statistic']})"
    for other in fig.get("also", []):
        state = {True: "met", False: "missed", None: "no verdict"}[other.get("met")]
        text += f"; also {other['statistic']}: {fmt_number(other.get('measured'), fig.get('unit', ''))} ({state})"
    if fig.get("note"):
        text += f"; {fig['note']}"
    return text


def cpu_cell(cpu: dict[str, Any]) -> str:
    flags = cpu.get("flags_of_interest")
    return cpu.get("model", "unknown") + (
        f" ({', '.join(flags) or 'no avx2/avx512/amx'})" if flags is not None else ""
    )


def render(records: list[dict[str, Any]]) -> str:
    lines = [
        "# Benchmark results",
        "",
        "Generated by `bench/make_results.py` from the JSON files beside it; do not edit by hand. Each bench writes "
        "its JSON (`bench/benchlib.py`: command, date, CPU model and flags, threads, every statistic, figures). "
        "A figure's verdict statistic is fixed in its bench's code; any other statistic it was judged on is shown "
        'beside it with its own mark. "not measured" rows are goals without a result: quoted from an older report '
        "that kept no raw numbers, or not run yet.",
        "",
        "| figure | goal | measured | met? | command | date | CPU |",
        "|---|---|---|---|---|---|---|",
    ]
    for rec in sorted(records, key=lambda r: r["bench"]):
        for fig in rec["figures"]:
            row = [
                f"{fig.get('label', fig['figure'])} (`{fig['figure']}`)",
                fig["goal"],
                measured_cell(fig),
                mark(fig["met"], fig["measured"]),
                f"`{fig.get('command', rec['command'])}`",
                fig.get("date", rec["date"]),
                cpu_cell(fig.get("cpu", rec["cpu"])),
            ]
            lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    have = {_bench_family(r["bench"]) for r in records}
    for bench, what in EXPECTED.items():
        if bench not in have:
            lines.append(f"| {_cell(what)} (`{bench}`) | see the bench | no result yet | not measured | – | – | – |")
    return "\n".join(lines) + "\n"


README_SECTION = "## Performance and efficacy"
# A number in prose: not part of a word (SmolLM2, fp32, 2-core), a path, a date or a version; optionally x or %.
_NUMBER = re.compile(r"(?<![\w./-])(\d+(?:\.\d+)?(?:e[-+]?\d+)?)(x|×| ?%)?(?![\w/-]|\.\d)")
# A range of two such numbers joined by a hyphen or an en dash; a date (2026-12-04) is not one: its third part follows.
_RANGE = re.compile(r"(?<![\w./-])(\d+(?:\.\d+)?)[-–](\d+(?:\.\d+)?)(x|×| ?%)?(?![\w/–-]|\.\d)")


def readme_section(text: str, heading: str = README_SECTION) -> str:
    """The README's performance section, from ``heading`` to the next ``## `` heading."""
    if heading not in text:
        raise ValueError(f"README has no '{heading}' section")
    body = text.split(heading, 1)[1]
    return body.split("\n## ", 1)[0]


def quoted_numbers(section: str) -> list[str]:
    """Every number the section's prose quotes (code spans, link targets, "95% CI" and "session N" are names, not
    figures)."""
    prose = re.sub(r"`[^`]*`", " ", section)
    prose = re.sub(r"\]\([^)]*\)", "]", prose)
    # Names with numbers in them: a statistic's ("95% CI") and a session's ("session 17").
    prose = re.sub(r"\b95 ?% CI\b|\bsessions? \d+", " ", prose)
    numbers = []
    for m in _RANGE.finditer(prose):  # both ends of a range ("0.59-0.78", "1.4-1.8x"), each with the range's unit
        unit = (m.group(3) or "").strip()
        numbers += [m.group(1) + unit, m.group(2) + unit]
    prose = _RANGE.sub(" ", prose)
    return numbers + [m.group(1) + (m.group(2) or "").strip() for m in _NUMBER.finditer(prose)]


def result_numbers(records: list[dict[str, Any]]) -> set[float]:
    """Every number a figure or statistic of the results holds, goals included (parsed from their text)."""
    found: set[float] = set()

    def walk(x: Any) -> None:
        if isinstance(x, bool):
            return
        if isinstance(x, (int, float)) and math.isfinite(x):
            found.add(float(x))
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, str):
            found.update(float(n) for n in re.findall(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?", x))

    for rec in records:
        walk(rec.get("statistics", {}))
        walk({k: rec.get(k) for k in ("details", "per_seed")})  # efficacy.json keeps its statistics there
        for fig in rec["figures"]:
            walk({k: fig.get(k) for k in ("measured", "sd", "goal", "also", "verdict_statistic", "note")})
    return found


# A bench a README bullet cites: bench/<name>.py, bench/<name>/ or bench/results/<name>.md|json.
_CITATION = re.compile(r"bench/(?:results/)?([a-z0-9_]+)(?:\.py|\.md|\.json|/)")


def _rounds_to(value: float, quoted: str) -> bool:
    """Whether ``value`` printed at the precision of ``quoted`` reads ``quoted`` ("0.657": 3 decimals; "3.95e-06":
    3 significant digits)."""
    if "e" in quoted:
        mantissa = quoted.split("e")[0]
        digits = len(mantissa.split(".")[1]) if "." in mantissa else 0
        return float(f"{value:.{digits}e}") == float(quoted)
    decimals = len(quoted.split(".")[1]) if "." in quoted else 0
    return round(value, decimals) == float(quoted)


def readme_bullets(section: str) -> list[str]:
    """The section split at its top-level bullets (``- `` at the start of a line); the text before the first one
    is a block of its own."""
    return [b for b in re.split(r"\n(?=- )", section) if b.strip()]


def cited_records(bullet: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The result records of the benches ``bullet`` names (a per-CPU-kind name such as ``make_time_amx`` or
    ``mfu.py`` stands for its whole bench family)."""
    cited = {_bench_family(name) for name in _CITATION.findall(bullet)}
    return [r for r in records if _bench_family(r["bench"]) in cited]


def readme_problems(readme: str, records: list[dict[str, Any]]) -> list[str]:
    """Numbers quoted in the README's performance section that the results of the benches their bullet cites do not
    hold at the precision quoted. A number is looked up only in the records of the benches its own bullet names, so
    it cannot pass by matching an unrelated bench's number; a bullet that quotes numbers must cite a bench."""
    problems = []
    for bullet in readme_bullets(readme_section(readme)):
        tokens = quoted_numbers(bullet)
        if not tokens:
            continue
        scope = cited_records(bullet, records)
        head = " ".join(bullet.split())[:60]
        if not scope:
            problems.append(f"README bullet '{head}...' quotes {tokens[0]} but cites no bench with a result JSON")
            continue
        values = result_numbers(scope)
        for token in tokens:
            number = token.rstrip("x×% ")
            scale = (1.0, 100.0) if token.endswith("%") else (1.0,)
            if not any(_rounds_to(v * k, number) for v in values for k in scale):
                benches = ", ".join(sorted({r["bench"] for r in scope}))
                problems.append(
                    f"README quotes {token} in '{head}...', which no result of its cited benches holds ({benches})"
                )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with RESULTS.md instead of writing it")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of result JSONs")
    args = parser.parse_args(argv)
    text = render(load_results(args.results))
    out = args.results / "RESULTS.md"
    if args.check:
        current = out.read_text(encoding="utf-8") if out.exists() else ""
        if current != text:
            print(f"{out} is out of date with the result JSONs: run .venv/bin/python bench/make_results.py")
            return 1
        print(f"{out} is up to date")
        return 0
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
