"""Dataset cards: one YAML per dataset (``datasets_cards/*.yaml``), the single source of truth recipes refer to.

A card says where the data lives (``hub``, ``file`` or ``package`` + ``builder``), which TRL format it is in, how
source columns map to TRL's names, which splits are train and held-out, its license and how to rebuild it.
:func:`load_split` turns a card into a ``datasets.Dataset`` with exactly the TRL columns, or fails in one line.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from alignkit.errors import AlignkitError

FORMATS = ("language_modeling", "prompt_completion", "preference", "prompt_only", "unpaired_preference")
SOURCE_KINDS = ("hub", "file", "builder")
REQUIRED_FIELDS = ("name", "description", "source", "format", "columns", "splits", "license", "size", "rebuild")
OPTIONAL_FIELDS = ("transforms",)
SOURCE_FIELDS = {"hub": {"hub", "config"}, "file": {"file"}, "builder": {"package", "builder", "args"}}
# The embedded card to suggest when a hub card cannot be loaded on this machine.
EMBEDDED_TWIN = {
    "language_modeling": "sharegpt-sft-smol",
    "prompt_completion": "sharegpt-sft-smol",
    "preference": "sharegpt-pairs-smol",
    "prompt_only": "arith-smol",
    "unpaired_preference": "sharegpt-onpolicy-kto-smol",
}


def required_columns(fmt: str, conversational: bool) -> tuple[str, ...]:
    """TRL's columns for a format. Preference data may also carry ``prompt`` (explicit prompt) or leave it inside
    chosen/rejected (implicit prompt), so only chosen/rejected are required."""
    return {
        "language_modeling": ("messages",) if conversational else ("text",),
        "prompt_completion": ("prompt", "completion"),
        "preference": ("chosen", "rejected"),
        "prompt_only": ("prompt",),
        "unpaired_preference": ("prompt", "completion", "label"),  # KTO: label True = desirable
    }[fmt]


@dataclass(frozen=True)
class DatasetCard:
    """A parsed, validated dataset card. ``columns`` maps source column -> TRL column; only these are kept."""

    name: str
    description: str
    source_kind: str  # "hub" | "file" | "builder"
    source: dict[str, Any]
    format: str
    conversational: bool
    columns: dict[str, str]
    splits: dict[str, str]  # {"train": <source split>, "test": <source split>, ...any further named split}
    license: str
    size: str
    rebuild: str
    transforms: dict[str, str] = field(default_factory=dict)  # TRL column -> "module:function" applied per value
    path: Path | None = None

    @property
    def where(self) -> str:
        return str(self.path) if self.path else self.name


def _cards_dir() -> Path:
    return Path(str(resources.files("alignkit.datasets_cards")))


def list_cards() -> list[str]:
    """Names of the cards shipped with alignkit."""
    return sorted(p.stem for p in _cards_dir().glob("*.yaml"))


def load_card(name_or_path: str | os.PathLike) -> DatasetCard:
    """Load a shipped card by name, or any card file by path; unknown or missing fields raise AlignkitError."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or os.sep in text:
        path = Path(text).expanduser()
        if not path.exists():
            raise AlignkitError(f"dataset card file {path} does not exist")
    else:
        path = _cards_dir() / f"{text}.yaml"
        if not path.exists():
            raise AlignkitError(f"unknown dataset card '{text}'; available: {', '.join(list_cards())}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise AlignkitError(f"{path}{f':{mark.line + 1}' if mark else ''}: invalid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise AlignkitError(f"{path}: a dataset card must be a YAML mapping")
    return _parse(raw, path)


def _parse(raw: dict[str, Any], path: Path) -> DatasetCard:
    def fail(message: str) -> AlignkitError:
        return AlignkitError(f"{path}: {message}")

    unknown = sorted(set(raw) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise fail(f"unknown field '{unknown[0]}' (allowed: {', '.join(REQUIRED_FIELDS + OPTIONAL_FIELDS)})")
    for key in REQUIRED_FIELDS:
        if raw.get(key) in (None, "", {}):
            raise fail(f"missing required field '{key}'")
    for key in ("name", "description", "license", "size", "rebuild"):
        if not isinstance(raw[key], str):
            raise fail(f"field '{key}' must be a string")

    source = raw["source"]
    if not isinstance(source, dict):
        raise fail("field 'source' must be a mapping with one of: hub, file, package + builder")
    kinds = [k for k in SOURCE_KINDS if k in source]
    if len(kinds) != 1:
        raise fail(f"field 'source' needs exactly one of hub, file, builder (found {kinds or 'none'})")
    kind = kinds[0]
    extra = sorted(set(source) - SOURCE_FIELDS[kind])
    if extra:
        raise fail(f"unknown field 'source.{extra[0]}' for a {kind} source (allowed: {sorted(SOURCE_FIELDS[kind])})")
    if kind == "builder":
        if "package" not in source:
            raise fail("field 'source.package' is required with 'source.builder'")
        if ":" not in str(source["builder"]):
            raise fail(f"field 'source.builder' must be 'module:function', got {source['builder']!r}")
        if not isinstance(source.get("args", {}), dict):
            raise fail("field 'source.args' must be a mapping")

    fmt = raw["format"]
    if not isinstance(fmt, dict) or set(fmt) != {"type", "conversational"}:
        raise fail("field 'format' must be a mapping with exactly 'type' and 'conversational'")
    if fmt["type"] not in FORMATS:
        raise fail(f"field 'format.type' must be one of {', '.join(FORMATS)}, got {fmt['type']!r}")
    if not isinstance(fmt["conversational"], bool):
        raise fail("field 'format.conversational' must be true or false")

    columns, splits, transforms = raw["columns"], raw["splits"], raw.get("transforms") or {}
    for key, value in (("columns", columns), ("splits", splits), ("transforms", transforms)):
        if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            raise fail(f"field '{key}' must be a mapping of strings")
    if not {"train", "test"} <= set(splits):
        raise fail(f"field 'splits' must name 'train' and 'test' (and may name more), got {sorted(splits)}")
    for column in required_columns(fmt["type"], fmt["conversational"]):
        if column not in columns.values():
            raise fail(f"field 'columns' maps nothing to '{column}', which a {fmt['type']} dataset needs")
    for column, target in transforms.items():
        if column not in columns.values():
            raise fail(f"field 'transforms.{column}' names a column that 'columns' does not produce")
        if ":" not in target:
            raise fail(f"field 'transforms.{column}' must be 'module:function', got {target!r}")
    return DatasetCard(
        name=raw["name"],
        description=raw["description"].strip(),
        source_kind=kind,
        source=dict(source),
        format=fmt["type"],
        conversational=fmt["conversational"],
        columns=dict(columns),
        splits=dict(splits),
        license=raw["license"],
        size=raw["size"],
        rebuild=raw["rebuild"],
        transforms=dict(transforms),
        path=path,
    )


def import_object(spec: str, card: DatasetCard) -> Callable[..., Any]:
    """Import ``module:function`` named by a card."""
    module_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise AlignkitError(f"{card.where}: cannot import '{spec}' ({type(exc).__name__}: {exc})") from None


def build(card: DatasetCard, force: bool = False, **overrides: Any):
    """Run a builder card's builder (``source.args`` updated by ``overrides``) -> BuildResult."""
    if card.source_kind != "builder":
        raise AlignkitError(f"card '{card.name}' has a {card.source_kind} source; only builder cards are built")
    package = card.source["package"]
    try:
        importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        raise AlignkitError(
            f"card '{card.name}' needs package '{package}', which is not installed; run `pip install {package}`"
        ) from None
    builder = import_object(card.source["builder"], card)
    kwargs = {**card.source.get("args", {}), **overrides, "force": force}
    try:
        inspect.signature(builder).bind(**kwargs)
    except TypeError as exc:  # an unknown or misspelled builder argument
        raise AlignkitError(f"{card.where}: bad 'source.args' for {card.source['builder']}: {exc}") from None
    return builder(**kwargs)


def load_split(
    card: DatasetCard | str,
    split: str = "train",
    max_samples: int | None = None,
    seed: int = 42,
    builder_args: dict[str, Any] | None = None,
) -> Any:
    """The card's ``split`` (``train``, ``test`` or another split the card names) as a ``datasets.Dataset`` with the
    card's TRL columns only.

    ``max_samples`` takes a seeded random subset; ``builder_args`` override a builder card's ``source.args`` (e.g.
    the policy of an on-policy round). Hub sources fail fast (one line, no retries) when the hub is unreachable and
    the dataset is not cached. An empty split is an empty dataset with the card's columns."""
    import datasets

    card = card if isinstance(card, DatasetCard) else load_card(card)
    if split not in card.splits:
        raise AlignkitError(f"card '{card.name}': split must be one of {', '.join(card.splits)}, got {split!r}")
    source_split = card.splits[split]
    if card.source_kind == "hub":
        dataset = _load_hub(card, source_split)
    elif card.source_kind == "file":
        dataset = _load_file(card, source_split)
    else:
        rows = build(card, **(builder_args or {})).rows(source_split)
        # from_list([]) has no columns at all; an empty split still has the card's columns
        dataset = (
            datasets.Dataset.from_list(rows) if rows else datasets.Dataset.from_dict({c: [] for c in card.columns})
        )
    dataset = apply_columns(card, dataset)
    if max_samples is not None and max_samples < len(dataset):
        dataset = dataset.shuffle(seed=seed).select(range(max_samples))
    return dataset


def apply_columns(card: DatasetCard, dataset: Any) -> Any:
    """Keep the mapped columns, rename them to TRL's names, apply transforms, check the format's columns."""
    present = list(dataset.column_names)
    for column in card.columns:
        if column not in present:
            raise AlignkitError(
                f"card '{card.name}' ({card.where}): source column '{column}' is missing; the data has {present}"
            )
    dataset = dataset.select_columns(list(card.columns))
    renames = {src: dst for src, dst in card.columns.items() if src != dst}
    if renames:
        dataset = dataset.rename_columns(renames)
    for column, spec in card.transforms.items():
        fn = import_object(spec, card)
        dataset = dataset.map(lambda row, c=column, f=fn: {c: f(row[c])}, desc=f"{card.name}: {column}")
    for column in required_columns(card.format, card.conversational):
        if column not in dataset.column_names:
            raise AlignkitError(
                f"card '{card.name}' ({card.where}): column '{column}' required for {card.format} is missing; "
                f"the data has {dataset.column_names}"
            )
    if card.conversational and len(dataset):
        _check_conversational(card, dataset[0])
    return dataset


def _check_conversational(card: DatasetCard, row: dict[str, Any]) -> None:
    for column in ("messages", "prompt", "completion", "chosen", "rejected"):
        value = row.get(column)
        if value is None:
            continue
        if not isinstance(value, list) or not all(
            isinstance(m, dict) and {"role", "content"} <= set(m) for m in value
        ):
            raise AlignkitError(
                f"card '{card.name}' is conversational but row 0 column '{column}' is not a list of "
                f"{{role, content}} messages (got {type(value).__name__}); set format.conversational: false"
            )


def _hub_offline() -> bool:
    flags = (os.environ.get("HF_DATASETS_OFFLINE"), os.environ.get("HF_HUB_OFFLINE"))
    return any((f or "").lower() in {"1", "true", "yes", "on"} for f in flags)


@contextmanager
def _offline_mode() -> Iterator[None]:
    """Force cache-only loading after a failed probe. Both libraries read these module constants at call time;
    without them `datasets` retries an unreachable hub for ~25 s."""
    import datasets.config
    import huggingface_hub.constants as hub_constants

    saved = datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub_constants.HF_HUB_OFFLINE = saved


def _load_hub(card: DatasetCard, source_split: str) -> Any:
    import datasets

    dataset_id, config = card.source["hub"], card.source.get("config")
    reason = "HF_DATASETS_OFFLINE/HF_HUB_OFFLINE is set" if _hub_offline() else None
    if reason is None:
        try:
            from huggingface_hub import dataset_info

            dataset_info(dataset_id, timeout=5)
        except Exception as exc:  # DNS failure, refused connection, timeout, 404 ...
            reason = f"hub unreachable: {type(exc).__name__}"
    try:
        if reason is None:
            return datasets.load_dataset(dataset_id, config, split=source_split)
        with _offline_mode():
            return datasets.load_dataset(dataset_id, config, split=source_split)
    except (ConnectionError, FileNotFoundError, OSError) as exc:
        reason = reason or f"{type(exc).__name__}"
    except ValueError as exc:  # unknown split or config
        raise AlignkitError(f"card '{card.name}': cannot load '{dataset_id}' split '{source_split}': {exc}") from None
    raise AlignkitError(
        f"dataset '{dataset_id}' (card '{card.name}') is not in the local cache and cannot be downloaded ({reason}); "
        f"on this machine use the embedded card '{EMBEDDED_TWIN[card.format]}' instead"
    )


def _load_file(card: DatasetCard, source_split: str) -> Any:
    """``file`` is a path with an optional ``{split}`` placeholder, relative to the card's directory."""
    import datasets

    from alignkit.data.store import read_jsonl

    template = str(card.source["file"])
    path = Path(template.format(split=source_split)).expanduser()
    if not path.is_absolute() and card.path is not None:
        path = card.path.parent / path
    if not path.exists():
        raise AlignkitError(f"card '{card.name}': data file {path} does not exist")
    rows = read_jsonl(path, recover_truncated_tail=True) if path.suffix == ".jsonl" else None
    if path.suffix == ".json":
        rows = _read_json_rows(path)
    if rows is not None:  # an empty file is an empty split with the card's columns (from_list([]) has none)
        return datasets.Dataset.from_list(rows) if rows else datasets.Dataset.from_dict({c: [] for c in card.columns})
    loaders = {".json": "json", ".csv": "csv", ".parquet": "parquet"}
    if path.suffix not in loaders:
        raise AlignkitError(f"card '{card.name}': data file {path} must be .jsonl, .json, .csv or .parquet")
    return datasets.load_dataset(loaders[path.suffix], data_files=str(path), split="train")


def _read_json_rows(path: Path) -> list[dict[str, Any]] | None:
    """A ``.json`` file that is an array of objects, as rows; ``None`` for another layout (``datasets`` reads it).
    A syntax error or a cut-off file is a one-line error with its line."""
    import json

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise AlignkitError(f"{path}: not UTF-8 (at byte {exc.start}); re-save the file as UTF-8") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        what = "the file is truncated" if exc.pos >= len(text.rstrip()) else f"invalid JSON ({exc.msg})"
        raise AlignkitError(
            f"{path}:{exc.lineno}: {what}; restore the full file (or convert it to JSONL, whose complete lines are "
            "recovered)"
        ) from None
    if isinstance(data, list) and all(isinstance(row, dict) for row in data):
        return data
    return None
