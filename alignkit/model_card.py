"""The Hugging Face model card of a run: ``runs/<recipe>/adapter/README.md`` (or ``model/README.md``).

TRL's trainers write a generic card into the output directory at every checkpoint (``create_model_card``, called by
``_save_checkpoint``), and PEFT writes a template into the adapter directory on ``save_pretrained``. Both know
neither the recipe nor the base model (TRL links ``None`` for a local base, and names the model after the
``.partial`` staging directory). :func:`write_model_card` replaces both, after training and again after the eval
has written ``report.json``, from what the run recorded:

- YAML metadata (``huggingface_hub.ModelCardData``): ``base_model`` (the hub id of the model the run started from;
  for the embedded model, the checkpoint it was converted from), ``library_name: peft`` for an adapter, ``datasets``
  (the hub ids among the dataset cards), ``tags`` (trl, alignkit, the trainer, lora);
- the recipe and the command that reproduces it (``run.json`` ``command``), the recipe keys and the hardware
  choices with their reasons (``config.yaml``);
- every dataset card the run trained on, with its licence;
- the eval: goals and win rates (with their judges) from ``report.json`` when the run has been evaluated;
- hardware, timings and package versions (``run.json``).

Only ``huggingface_hub`` is imported (no torch), so the card is cheap to refresh.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from alignkit.errors import AlignkitError
from alignkit.io import atomic_write_text
from alignkit.runs import RUN_FILE, read_run

__all__ = ["build_model_card", "write_model_card"]

CARD_FILE = "README.md"


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except json.JSONDecodeError:
        return None


def _base_model_id(meta: dict[str, Any]) -> str | None:
    """A hub id for ``base_model``: the embedded model's source checkpoint, a hub id as given, else None (a local
    path is not a valid ``base_model``)."""
    from alignkit.models import EMBEDDED_MODELS

    name = meta.get("model_name_or_path")
    if name in EMBEDDED_MODELS:
        return EMBEDDED_MODELS[name].hub_id
    if isinstance(name, str) and name.count("/") == 1 and not Path(name).exists():
        return name
    return None


def _dataset_cards(meta: dict[str, Any]) -> list[Any]:
    """The run's dataset card (``run.json`` ``dataset``), or none when it cannot be loaded here."""
    from alignkit.data.cards import load_card

    try:
        return [load_card(meta["dataset"])] if meta.get("dataset") else []
    except AlignkitError:
        return []


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if value is None:
        return "-"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]


def _eval_section(report: dict[str, Any] | None) -> list[str]:
    if report is None:
        return ["Not evaluated yet: `alignkit eval <run>` writes `report.json`, and this card is refreshed from it."]
    out = [f"From `report.json` (suite `{(report.get('suite') or {}).get('name')}`, {report.get('created', '')})."]
    goals = report.get("goals") or {}
    if goals.get("rows"):
        judge = goals.get("judge") or {}
        out += [
            "",
            f"Goals, {goals.get('comparison')} on `{goals.get('prompt_set')}`, judge `{judge.get('model')}` "
            f"({'held out from training' if judge.get('held_out') else 'NOT held out from training'}): "
            f"{goals.get('met')} of {goals.get('of')} met.",
            "",
        ]
        out += _table(
            ["goal", "value", "target", "status"],
            [[r["label"], r.get("value"), f"{r['op']} {r['goal']}", r["status"]] for r in goals["rows"]],
        )
    rows = []
    for comparison, sets in (report.get("win_rates") or {}).items():
        for prompt_set, judges in sets.items():
            for name, entry in judges.items():
                raw, lc, who = entry.get("raw", {}), entry.get("lc", {}), entry.get("judge", {})
                ci = f"[{_fmt(raw.get('ci_low'))}, {_fmt(raw.get('ci_high'))}]"
                rows.append([comparison, prompt_set, who.get("model", name), raw.get("win_rate"), ci,
                             lc.get("lc_win_rate"), raw.get("n")])  # fmt: skip
    if rows:
        out += ["", "Win rates (a tie counts ½; 95% bootstrap CI over prompts):", ""]
        out += _table(["comparison", "prompt set", "judge", "win rate", "95% CI", "LC win rate", "n"], rows)
    return out


def build_model_card(run_dir: str | Path) -> Any:
    """The ``huggingface_hub.ModelCard`` of a run directory (``run.json`` required; the rest when present)."""
    from huggingface_hub import ModelCard, ModelCardData

    run_dir = Path(run_dir)
    meta = read_run(run_dir)
    if meta is None:
        raise AlignkitError(f"{run_dir}: no {RUN_FILE}; a model card is written for a training run only")
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
    report = _read_json(run_dir / "report.json")
    cards = _dataset_cards(meta)
    is_adapter = bool(meta.get("adapter_dir"))
    base_id = _base_model_id(meta)
    name, recipe = run_dir.name, meta.get("recipe") or run_dir.name
    tags = ["alignkit", "trl", meta.get("trainer") or "", *(["lora", "peft"] if is_adapter else [])]
    data = ModelCardData(
        model_name=name,
        base_model=base_id,
        library_name="peft" if is_adapter else "transformers",
        datasets=[c.source["hub"] for c in cards if c.source_kind == "hub"] or None,
        tags=[t for t in tags if t],
        pipeline_tag="text-classification" if meta.get("trainer") == "reward" else "text-generation",
    )
    base_text = f"[{base_id}](https://huggingface.co/{base_id})" if base_id else f"`{meta.get('model_name_or_path')}`"
    versions = meta.get("versions") or {}
    artifact = "A LoRA adapter" if is_adapter else "A full fine-tune"
    lines = [
        f"# {name}",
        "",
        f"{artifact} of {base_text}, trained with the alignkit recipe `{recipe}` "
        f"(trainer `{meta.get('trainer')}`, [TRL](https://github.com/huggingface/trl) {versions.get('trl')}).",
        "",
        "## Reproduce",
        "",
        "```bash",
        meta.get("command") or f"alignkit train {config.get('source', recipe)}",
        f"alignkit eval {run_dir.name}",
        "```",
        "",
        f"Recipe file: `{config.get('source', '?')}`. Status: {meta.get('status')}, {meta.get('global_step')} steps "
        f"on {meta.get('train_samples')} training rows in {meta.get('train_seconds')} s.",
        "",
        "## Use",
        "",
        "```python",
    ]
    if is_adapter:
        loader = "AutoModelForSequenceClassification" if meta.get("trainer") == "reward" else "AutoModelForCausalLM"
        lines += [
            "from peft import PeftModel",
            f"from transformers import {loader}, AutoTokenizer",
            f'base = {loader}.from_pretrained("{base_id or meta.get("model_name_or_path")}")',
            f'model = PeftModel.from_pretrained(base, "{run_dir / meta["adapter_dir"]}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{run_dir / meta["adapter_dir"]}")',
        ]
    else:
        lines += [
            "from transformers import AutoModelForCausalLM, AutoTokenizer",
            f'model = AutoModelForCausalLM.from_pretrained("{run_dir / (meta.get("model_dir") or "model")}")',
        ]
    lines += ["```", "", "## Training data", ""]
    if cards:
        for c in cards:
            where = c.source.get("hub") or c.source.get("file") or c.source.get("builder")
            lines += [
                f"- **{c.name}** ({c.source_kind}: `{where}`): {_fmt(c.description)}",
                f"  - Licence: {_fmt(c.license)}",
                f"  - Size: {_fmt(c.size)}",
            ]
    else:
        lines.append(f"- dataset card `{meta.get('dataset')}` (could not be loaded where this card was written)")
    lines += ["", "## Hyperparameters", "", "The recipe's keys, after command-line overrides:", ""]
    lines += _table(["key", "value"], [[k, v] for k, v in (config.get("keys") or {}).items()])
    reasons = config.get("hardware_reasons") or {}
    if config.get("hardware_choices"):
        lines += ["", "Chosen from the hardware because the recipe left them out:", ""]
        lines += _table(
            ["key", "value", "why"],
            [[k, v, reasons.get(k, "")] for k, v in config["hardware_choices"].items()],
        )
    lines += ["", "## Evaluation", ""] + _eval_section(report)
    hardware = meta.get("hardware") or {}
    lines += ["", "## Hardware and software", ""]
    lines += _table(["", ""], [[k, v] for k, v in hardware.items()])
    lines += ["", ""] + _table(["package", "version"], [[k, v] for k, v in versions.items()])
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines) + "\n")


def write_model_card(run_dir: str | Path) -> Path:
    """Write the card into the run's ``adapter/`` (or ``model/``) and over TRL's generic ``README.md`` at the run
    root; returns the artifact's card path."""
    run_dir = Path(run_dir)
    card = build_model_card(run_dir)
    meta = read_run(run_dir) or {}
    artifact = run_dir / (meta.get("adapter_dir") or meta.get("model_dir") or ".")
    text = str(card)
    atomic_write_text(artifact / CARD_FILE, text)
    if artifact != run_dir:
        atomic_write_text(run_dir / CARD_FILE, text)
    return artifact / CARD_FILE
