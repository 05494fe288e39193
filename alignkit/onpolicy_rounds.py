"""Iterative on-policy DPO: ``onpolicy_rounds: K`` in a DPO recipe whose card builds on-policy pairs.

Round 1 builds the card's pairs (sampled from the card's ``policy``, normally the base) and trains the recipe's
model on them, exactly as a one-round run. Each later round k+1 then

1. samples its pairs from the round-k model (the card's ``policy`` replaced by that checkpoint; fresh prompts when
   the builder takes ``prompt_offset``: round k+1 takes the ``n_prompts`` prompts after those of rounds 1..k),
2. trains a new LoRA on top of the round-k model, which is also its DPO reference (TRL's reference of a PEFT model
   is the model with the adapter switched off), and
3. merges that LoRA into a full checkpoint, the next round's policy.

This is the iterative scheme of Xu et al. 2023 ("Some things are more CRINGE than others") and Yuan et al. 2024
("Self-Rewarding Language Models", which also moves the reference each round), with the scorer held fixed.

The run directory holds ``round-k/`` per round (``pairs_manifest.json``, ``train_log.jsonl``, ``adapter/``,
``round.json``) and the final merged model in ``model/``. ``run.json`` names the *original* base as ``base_model``
and ``reference_model``, so ``alignkit eval`` compares the last round against the starting model. Intermediate
merged checkpoints (``round-k/policy``) are deleted when the run finishes (each is the previous one plus that
round's adapter). An interrupted run resumes (``--resume``) at the round it stopped in, from its last checkpoint.
"""

from __future__ import annotations

import gc
import inspect
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from alignkit.errors import AlignkitError
from alignkit.io import atomic_write_json
from alignkit.model_card import write_model_card
from alignkit.pipeline import RunNeed, dataset_builder_args, ensure_runs
from alignkit.runs import RunPaths, last_checkpoint, promote

ROUND_FILE = "round.json"


def _builder_params(card: Any) -> set[str]:
    from alignkit.data.cards import import_object

    if card.source_kind != "builder":
        return set()
    return set(inspect.signature(import_object(card.source["builder"], card)).parameters)


def check_rounds(recipe: Any, card: Any) -> None:
    """``onpolicy_rounds > 1`` needs a card whose builder samples from a ``policy`` it can be given."""
    if "policy" not in _builder_params(card):
        raise AlignkitError(
            f"{recipe.path}: onpolicy_rounds: {recipe.args.onpolicy_rounds} needs an on-policy pair card (a builder "
            f"with a 'policy' argument, e.g. sharegpt-onpolicy-smol); card '{card.name}' has none"
        )


def merge_adapter(
    base: str | Path, adapter: str | Path, out: str | Path, tokenizer: Any, reward: bool = False
) -> Path:
    """Merge a LoRA adapter into its base and save the full model (and tokenizer) to ``out``, atomically;
    ``reward``: a one-label sequence-classification model (a reward run, whose adapter carries the score head)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    out = Path(out)
    if reward:
        model = AutoModelForSequenceClassification.from_pretrained(
            str(base), num_labels=1, dtype="auto", trust_remote_code=False
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype="auto", trust_remote_code=False)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        merged.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        try:
            os.replace(tmp, out)
        except OSError:  # another process (a pipeline lane) merged the same start first: keep its identical copy
            if not (out / "config.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _train_round(
    recipe: Any, k: int, policy_in: Path, staging: Path, tokenizer: Any, card: Any, data_args: dict[str, Any]
) -> dict[str, Any]:
    """Build round k's pairs with ``policy_in``, train on them, save and merge; returns (and writes) its record."""
    from alignkit.data.cards import build
    from alignkit.train import _JsonlLogCallback, build_trainer, recipe_callbacks

    rdir = staging / f"round-{k}"
    if (rdir / ROUND_FILE).exists():  # finished before an interruption
        return json.loads((rdir / ROUND_FILE).read_text(encoding="utf-8"))
    rdir.mkdir(parents=True, exist_ok=True)
    final = k == recipe.args.onpolicy_rounds
    print(f"alignkit: on-policy round {k}/{recipe.args.onpolicy_rounds}: pairs from {policy_in}", flush=True)
    recipe.training_args.output_dir = str(rdir)
    callbacks = [_JsonlLogCallback(rdir / "train_log.jsonl"), *recipe_callbacks(recipe, staging.parent)]
    built = build_trainer(recipe, str(policy_in), tokenizer, callbacks, data_args)
    pairs = build(card, **data_args)  # the build the trainer just loaded: reused from the cache
    atomic_write_json(rdir / "pairs_manifest.json", pairs.manifest)
    start = time.time()
    built.trainer.train(resume_from_checkpoint=last_checkpoint(rdir))
    seconds = time.time() - start
    steps = built.trainer.state.global_step
    out = staging / "model" if final else rdir / "policy"
    if built.peft_config is not None:
        built.trainer.save_model(str(rdir / "adapter"))
        del built
        gc.collect()
        merge_adapter(policy_in, rdir / "adapter", out, tokenizer)
    else:
        built.trainer.save_model(str(out))
        tokenizer.save_pretrained(out)
        del built
        gc.collect()
    for checkpoint in rdir.glob("checkpoint-*"):  # the round is done: nothing will resume from them
        shutil.rmtree(checkpoint, ignore_errors=True)
    record = {
        "round": k,
        "policy_in": str(policy_in.relative_to(staging)) if policy_in.is_relative_to(staging) else str(policy_in),
        "policy_out": str(out.relative_to(staging)),
        "pairs": {"directory": str(pairs.directory), "counts": pairs.manifest["counts"]},
        "selection": pairs.manifest.get("selection"),
        "adapter_dir": f"round-{k}/adapter" if (rdir / "adapter").is_dir() else None,
        "train_seconds": round(seconds, 1),
        "global_step": steps,
    }
    atomic_write_json(rdir / ROUND_FILE, record)
    return record


def _resumable(staging: Path) -> bool:
    return any(staging.glob(f"round-*/{ROUND_FILE}")) or any(staging.glob("round-*/checkpoint-*"))


def train_rounds(recipe: Any, model_path: str, paths: RunPaths, card: Any, needs: list[RunNeed]) -> Path:
    """Train ``recipe.args.onpolicy_rounds`` rounds into ``paths.staging`` and promote the run (module docstring)."""
    from alignkit.models import load_tokenizer
    from alignkit.train import write_run_metadata

    rounds, staging, runs_root = recipe.args.onpolicy_rounds, paths.staging, paths.final.parent
    base_args = dataset_builder_args(card, runs_root)
    n_prompts = int(card.source.get("args", {}).get("n_prompts", 0))
    fresh_prompts = "prompt_offset" in _builder_params(card) and n_prompts > 0
    records: list[dict[str, Any]] = []
    try:
        ensure_runs(needs, runs_root)
        tokenizer = load_tokenizer(model_path)
        write_run_metadata(recipe, staging, "running", {"base_model": model_path, "onpolicy_rounds": rounds})
        policy = Path(model_path)
        for k in range(1, rounds + 1):
            data_args = dict(base_args)
            if k > 1:
                data_args["policy"] = str(policy)
                if fresh_prompts:
                    data_args["prompt_offset"] = int(card.source["args"].get("prompt_offset", 0)) + (k - 1) * n_prompts
            record = _train_round(recipe, k, policy, staging, tokenizer, card, data_args)
            records.append(record)
            policy = staging / record["policy_out"]
    except BaseException:
        if not _resumable(staging):
            shutil.rmtree(staging, ignore_errors=True)
        raise
    for record in records[:-1]:  # intermediate merged checkpoints: the previous policy + that round's adapter
        shutil.rmtree(staging / record["policy_out"], ignore_errors=True)
        record["policy_out_deleted"] = True
    recipe.training_args.output_dir = str(staging)
    write_run_metadata(
        recipe,
        staging,
        "finished",
        {
            "base_model": model_path,
            "reference_model": model_path,  # eval compares the last round against the starting model
            "adapter_dir": None,
            "model_dir": "model",
            "onpolicy_rounds": rounds,
            "rounds": records,
            "train_seconds": round(sum(r["train_seconds"] for r in records), 1),
            "global_step": sum(r["global_step"] for r in records),
            "train_samples": sum(r["pairs"]["counts"]["train"] for r in records),
        },
    )
    final = promote(paths)
    write_model_card(final)  # over TRL's generic card; the eval refreshes it with report.json
    return final
