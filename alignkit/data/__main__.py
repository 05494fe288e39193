"""``python -m alignkit.data build <card> [--force] [--arg key=value ...]`` and ``python -m alignkit.data list``.

``build`` builds (or reuses) a builder card's cached data and prints its report; for a hub card it loads both
splits, which downloads them into the Hugging Face datasets cache.
"""

from __future__ import annotations

import argparse
import sys

import yaml

from alignkit.errors import AlignkitError


def _overrides(pairs: list[str]) -> dict[str, object]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise AlignkitError(f"--arg expects key=value, got {pair!r}")
        out[key] = yaml.safe_load(value)  # "64" -> 64, "true" -> True
    return out


def main(argv: list[str] | None = None) -> int:
    from alignkit.data.cards import build, list_cards, load_card, load_split

    parser = argparse.ArgumentParser(prog="python -m alignkit.data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the shipped dataset cards")
    build_p = sub.add_parser("build", help="build or reuse a card's data and print the report")
    build_p.add_argument("card", help="card name or path to a card YAML")
    build_p.add_argument("--force", action="store_true", help="rebuild even if a cached build matches")
    build_p.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE", help="override a builder arg")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            for name in list_cards():
                card = load_card(name)
                print(f"{name:28s} {card.format:18s} {card.source_kind:8s} {card.size}")
            return 0
        card = load_card(args.card)
        if card.source_kind != "builder":
            for split in ("train", "test"):
                print(f"{card.name} {split} ({card.splits[split]}): {len(load_split(card, split)):,} rows")
            return 0
        result = build(card, force=args.force, **_overrides(args.arg))
        for line in result.manifest.get("report", []):
            print(line)
        counts = ", ".join(f"{n:,} {split}" for split, n in result.manifest["counts"].items())
        print(f"{'reused' if result.reused else 'built'} {card.name}: {counts} -> {result.directory}")
        return 0
    except AlignkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
