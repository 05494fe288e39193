"""Train a recipe: resolve the model and data, build the TRL (plugin) trainer, train, save, then evaluate."""

from __future__ import annotations

import json
import logging
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from alignkit import lanes, preflight, run_lock
from alignkit.distributed import fsdp_on_cpu, is_distributed, is_main, main_decides, sharding_engine, world_size
from alignkit.errors import AlignkitError
from alignkit.io import atomic_write_json, atomic_write_text
from alignkit.model_card import write_model_card
from alignkit.pipeline import dataset_builder_args, dataset_runs, deferrable_runs, ensure_runs, presample
from alignkit.recipe import Recipe, recipe_command
from alignkit.run_start import resolve_start, start_needs, start_run_name
from alignkit.runs import RUN_FILE, RunPaths, abandon, last_checkpoint, prepare, promote

logger = logging.getLogger("alignkit")


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("alignkit", "torch", "transformers", "trl", "peft", "bitsandbytes", "datasets", "accelerate"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def load_model(recipe: Recipe, model_path: str, tokenizer):
    """Load the base model with the recipe's dtype and (Q)LoRA quantization, as TRL's own scripts do."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from trl import get_quantization_config

    from alignkit.models import remote_code_opt_in

    margs = recipe.model_args
    dtype = margs.dtype if margs.dtype in (None, "auto") else getattr(torch, margs.dtype)
    quantization_config = get_quantization_config(margs)
    # safetensors only: a pickled .bin checkpoint can run code when loaded
    kwargs: dict[str, Any] = {"dtype": dtype, "quantization_config": quantization_config, "use_safetensors": True}
    # a model's own Python code runs only when the recipe says so (alignkit.models.warn_remote_code)
    kwargs["trust_remote_code"] = remote_code_opt_in(recipe)
    if margs.attn_implementation:
        kwargs["attn_implementation"] = margs.attn_implementation
    if quantization_config is not None and torch.cuda.is_available():
        from accelerate import PartialState

        kwargs["device_map"] = {"": PartialState().local_process_index}  # one quantized replica per process
    try:
        if recipe.args.trainer == "reward":
            model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1, **kwargs)
        else:
            model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    except OSError as exc:  # no safetensors weights, a missing file in a hub snapshot ...
        raise AlignkitError(f"model '{model_path}' cannot be loaded: {str(exc).splitlines()[0]}") from exc
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model


def peft_config_for(recipe: Recipe):
    from trl import get_peft_config

    margs = recipe.model_args
    if recipe.args.trainer == "reward" and "lora_task_type" not in recipe.explicit_keys:
        margs.lora_task_type = "SEQ_CLS"  # the score head must train, and peft keeps it when task is SEQ_CLS
    return get_peft_config(margs)


def reward_funcs_for(recipe: Recipe, models: bool = True) -> list:
    """The recipe's reward functions: registered names (graders, penalties), the recipe's own functions by import
    path (``package.module:function``) and reward models (``run:NAME`` of a finished reward run, or a reward-model
    path), each a callable in TRL's reward signature. ``models=False`` skips the reward models (loaded later): a
    check, before a run directory exists, that every other entry resolves."""
    from alignkit.plugins.common.reward_funcs import get_reward_func, import_reward_func, is_import_path

    funcs = []
    for name in recipe.args.reward_funcs or []:
        if _is_reward_model(name):
            if models:
                funcs.append(_reward_model_func(recipe, name))
            continue
        try:
            funcs.append(import_reward_func(name) if is_import_path(name) else get_reward_func(name))
        except ValueError as exc:
            hint = "" if is_import_path(name) else " (or module:function, or a reward model: run:NAME or a path)"
            raise AlignkitError(f"{recipe.path}: reward_funcs: {exc}{hint}") from None
    return funcs


def _is_reward_model(name: str) -> bool:
    return name.startswith("run:") or name.startswith((".", "/", "~")) or Path(name).expanduser().is_dir()


def reward_model_needs(recipe: Recipe) -> list:
    """The reward runs (``run:NAME`` in ``reward_funcs``) a PPO/GRPO recipe scores with, trained first when missing."""
    from alignkit.data.model_refs import run_needs

    refs = {f"reward_funcs[{i}]": r for i, r in enumerate(recipe.args.reward_funcs or []) if r.startswith("run:")}
    return run_needs(refs, str(recipe.path), trainers=dict.fromkeys(refs, "reward"))


def _reward_model_func(recipe: Recipe, ref: str):
    """A reward model as a TRL reward function: the scorer the eval's rm_score metric uses, so training and
    evaluation score replies the same way (chat template of the RM's tokenizer, logit at the last token)."""
    from alignkit.eval.rm_score import load_reward_scorer, resolve_reward_model

    runs_root = Path(recipe.training_args.output_dir).parent  # the staging dir sits beside the finished runs
    if not ref.startswith("run:") and not Path(ref).expanduser().is_dir():
        raise AlignkitError(f"{recipe.path}: reward_funcs: reward model path '{ref}' does not exist")
    resolved = resolve_reward_model(ref, runs_root)
    if resolved is None:
        raise AlignkitError(f"{recipe.path}: reward_funcs: {ref} is not a finished run in {runs_root}/")
    base, adapter = resolved
    return load_reward_scorer(base, adapter, name=ref.removeprefix("run:"))


TRAIN_LOG = "train_log.jsonl"


def rewind_train_log(path: Path, checkpoint: str) -> None:
    """Before a run resumes from ``checkpoint``: drop the log entries written after it (they are logged again), the
    end-of-training summary (a resumed run writes its own) and a line a kill cut short, so that the log continues
    without a gap or a repeated step."""
    from alignkit.runs import checkpoint_step

    step = checkpoint_step(checkpoint)
    if step is None or not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # the last line, cut by the kill
        if isinstance(entry, dict) and entry.get("step", 0) <= step and "train_runtime" not in entry:
            kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))


class _JsonlLogCallback:
    """Appends every Trainer log entry to train_log.jsonl (one JSON object per line, step included)."""

    def __new__(cls, path: Path):
        from transformers import TrainerCallback

        class JsonlLog(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if state.is_world_process_zero and logs:
                    with open(path, "a", encoding="utf-8") as f:
                        f.write(json.dumps({"step": state.global_step, **logs}) + "\n")

        return JsonlLog()


def write_run_metadata(recipe: Recipe, run_dir: Path, status: str, extra: dict | None = None) -> None:
    config = {
        "recipe": recipe.name,
        "source": str(recipe.path),
        "keys": recipe.raw,
        "hardware_choices": recipe.hardware_choices,
        "hardware_reasons": recipe.hardware_reasons,
    }
    if recipe.start_chain:
        config["start_chain"] = recipe.start_chain
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    resolved = {
        "recipe": asdict(recipe.args),
        "model": asdict(recipe.model_args),
        "training": recipe.training_args.to_dict(),
    }
    atomic_write_json(run_dir / "resolved_config.json", resolved)
    from alignkit.models import remote_code_opt_in

    meta = {
        "recipe": recipe.name,
        "command": recipe_command(recipe),
        "trainer": recipe.args.trainer,
        "model_name_or_path": recipe.model_args.model_name_or_path,
        "dataset": recipe.args.dataset,
        "eval_suite": recipe.args.eval_suite,
        "max_eval_samples": recipe.args.max_eval_samples,
        "beta": getattr(recipe.training_args, "beta", None),
        "trust_remote_code": remote_code_opt_in(recipe),  # eval loads the run's model the way training did
        "hardware": recipe.hardware,
        "hardware_choices": recipe.hardware_choices,
        "versions": _versions(),
        "status": status,
        **({"start_chain": recipe.start_chain} if recipe.start_chain else {}),
        **(extra or {}),
    }
    atomic_write_json(run_dir / RUN_FILE, meta)


def recipe_callbacks(recipe: Recipe, runs_root: Path) -> list:
    """The callbacks the recipe's keys switch on: ``winrate_steps`` adds the held-out win-rate callback, built from
    the recipe's eval suite (whose judge run is trained first when missing); ``reward_hacking_monitor`` (on by
    default) the reward-hacking monitor, for every trainer but the reward model's."""
    callbacks = []
    if recipe.args.reward_hacking_monitor and recipe.args.trainer != "reward":
        from alignkit.eval.monitor_callback import RewardHackingMonitor

        callbacks.append(RewardHackingMonitor())
    every = getattr(recipe.training_args, "winrate_steps", 0)
    if every:
        if not recipe.args.eval_suite:
            raise AlignkitError(f"{recipe.path}: winrate_steps needs an eval_suite to take its prompts and judge from")
        from alignkit.eval.suite import load_suite
        from alignkit.eval.winrate_callback import callback_from_suite

        ensure_runs(load_suite(recipe.args.eval_suite).required_runs(), runs_root)
        args = recipe.training_args
        callbacks.append(
            callback_from_suite(
                recipe.args.eval_suite, runs_root, every, args.winrate_prompts, args.winrate_max_new_tokens
            )
        )
    return callbacks


@dataclass
class BuiltTrainer:
    trainer: Any
    train_rows: int
    peft_config: Any  # None: the whole model trains


def build_trainer(
    recipe: Recipe,
    model_path: str,
    tokenizer,
    callbacks: list | None = None,
    builder_args: dict[str, Any] | None = None,
) -> BuiltTrainer:
    """The recipe's trainer on its card's train (and, with evaluation on, test) split, as ``alignkit train`` runs it;
    benchmarks build their arms here too. ``builder_args`` override a builder card's arguments (an on-policy
    round's policy, the run tree its runs live in)."""
    from alignkit.data.cards import load_card, load_split

    card = load_card(recipe.args.dataset)
    seed = recipe.training_args.seed
    data = dict(seed=seed, builder_args=builder_args)
    # A builder card caches what it builds: rank 0 builds, the other ranks then read the cache (no-op in 1 process).
    with recipe.training_args.main_process_first(desc="dataset"):
        train_ds = load_split(card, "train", max_samples=recipe.args.max_train_samples, **data)
        eval_ds = load_split(card, "test", max_samples=recipe.args.max_eval_samples, **data)
    preflight.check_rows(recipe, card, train_ds, tokenizer)
    preflight.check_prompts_fit(recipe, card, train_ds, tokenizer)
    reward_funcs = reward_funcs_for(recipe) if recipe.args.trainer in ("grpo", "ppo") else None
    model = load_model(recipe, model_path, tokenizer)
    peft_config = peft_config_for(recipe)
    kwargs: dict[str, Any] = dict(
        model=model,
        args=recipe.training_args,
        train_dataset=train_ds,
        eval_dataset=eval_ds if recipe.training_args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks or [],
    )
    if reward_funcs is not None:
        kwargs["reward_funcs"] = reward_funcs
    trainer = recipe.trainer_class(**kwargs)
    from alignkit.plugins import FiniteGuard

    # right after TRL's flow callback (which decides should_save, read by the guard) and before train_log.jsonl's
    # writer (so the count the guard adds to a log entry is written)
    trainer.callback_handler.callbacks.insert(1, FiniteGuard(recipe.args.nonfinite_abort_steps))
    preflight.check_rows_kept(recipe, len(train_ds), trainer.train_dataset)
    fsdp_on_cpu(trainer)  # an FSDP launch on CPUs would otherwise train plain DDP
    return BuiltTrainer(trainer, len(train_ds), peft_config)


def recipe_model_path(recipe: Recipe) -> str:
    """A model name or path resolved to something loadable (an embedded alias is materialized)."""
    from alignkit.models import resolve_model_path
    from alignkit.recipe import list_recipes

    twin = recipe.name.replace("-qwen", "-smol")
    return resolve_model_path(recipe.model_args.model_name_or_path, twin if twin in list_recipes() else None)


def _start_from_run(recipe: Recipe, starts: list, paths: RunPaths) -> str:
    """Train the missing start run (once, saying so), then resolve it to a checkpoint and record the chain."""
    try:
        ensure_runs(starts, paths.final.parent)
        start = resolve_start(recipe.model_args.model_name_or_path, paths.final.parent, recipe.args.trainer)
    except BaseException:
        if last_checkpoint(paths.staging) is None and paths.resume_from is None:
            shutil.rmtree(paths.staging, ignore_errors=True)
        raise
    recipe.start_chain = start.chain
    chain = " <- ".join([recipe.name, *(f"run:{link['run']}" for link in start.chain)])
    print(f"alignkit: starts from {chain}; start checkpoint (also the reference model) {start.path}", flush=True)
    return start.path


@dataclass
class _Prepared:
    """What rank 0 decided before training (see :func:`_prepare_run`); picklable, to hand to the other ranks."""

    paths: RunPaths
    model_path: str
    needs: list


def _prepare_run(recipe: Recipe, overwrite: bool, resume: bool) -> _Prepared:
    """Check the recipe's starts and data, create ``runs/<recipe>.partial/`` and resolve the start checkpoint.

    Under a distributed launch only rank 0 runs this (:func:`alignkit.distributed.main_decides`), and a run this
    recipe needs (a start, a reward model, the runs a card samples with) must already be finished: N ranks cannot
    each train it, and the other ranks cannot wait hours for rank 0 to do it alone."""
    from alignkit.data.cards import load_card
    from alignkit.models import warn_remote_code
    from alignkit.pipeline import missing_run_error, missing_runs

    final = Path(recipe.training_args.output_dir)
    warn_remote_code(recipe)
    preflight.check_hardware(recipe)
    starts = start_needs(recipe, final.parent)  # a start that is interrupted or broken fails here, in one line
    from_run = start_run_name(recipe.model_args.model_name_or_path) is not None
    model_path = None if from_run else recipe_model_path(recipe)
    if not from_run and Path(str(recipe.model_args.model_name_or_path)).expanduser().exists():
        preflight.check_model_dir(model_path)  # a directory the user named (hub snapshots are checked on load)
    card = load_card(recipe.args.dataset)  # a missing or malformed card fails here, before a run directory exists
    preflight.check_data_fits_trainer(recipe, card)
    needs = dataset_runs(card) + reward_model_needs(recipe)
    if recipe.args.trainer in ("grpo", "ppo"):
        reward_funcs_for(recipe, models=False)  # a misspelled name or import path fails before anything is written
    for need in needs:
        if need.name == final.name:
            raise AlignkitError(f"{recipe.path}: {need.purpose} is run:{need.name}, the run this recipe trains")
    if recipe.args.onpolicy_rounds > 1:
        if is_distributed():
            raise AlignkitError(f"{recipe.path}: onpolicy_rounds > 1 runs in one process only; drop NPROC")
        from alignkit.onpolicy_rounds import check_rounds

        check_rounds(recipe, card)
    if is_distributed() and recipe.args.trainer == "ppo" and (engine := sharding_engine()):
        raise AlignkitError(
            f"{recipe.path}: trainer ppo runs under DDP or in one process, not {engine}: its critic runs outside "
            f"the wrapped model's forward, which {engine} cannot shard; launch with ACCEL=ddp"
        )
    if is_distributed():
        pending = missing_runs(list(starts) + needs, final.parent)
        if pending:
            raise missing_run_error(pending[0], final.parent)
    paths: RunPaths = prepare(final, overwrite=overwrite, resume=resume)
    if paths.resume_from is not None:
        rewind_train_log(paths.staging / TRAIN_LOG, paths.resume_from)
    print(f"alignkit: recipe {recipe.name} ({recipe.args.trainer}) -> {final}", flush=True)
    if is_distributed():
        print(f"alignkit: {world_size()} processes; rank 0 writes {paths.staging}", flush=True)
    for key, why in recipe.hardware_reasons.items():
        print(f"alignkit: {key}: {why}", flush=True)
    if from_run:
        model_path = _start_from_run(recipe, starts, paths)
    return _Prepared(paths, model_path, needs)


def train(
    recipe: Recipe,
    overwrite: bool = False,
    resume: bool = False,
    side_needs: list | None = None,
    baseline_eval: bool = False,
) -> Path:
    """Train ``recipe`` into runs/<name>/ and return that directory (``alignkit train`` then runs the eval suite).

    ``side_needs``: runs needed after training (the eval suite's), started in a side lane once the recipe's checks
    have passed (:mod:`alignkit.lanes`); the caller ends it with :func:`alignkit.lanes.finish`. ``baseline_eval``
    (the caller evaluates the run next, and ends the lane): the side lane then also computes the start model's half
    of that eval into the caches (:mod:`alignkit.eval.baseline_warmup`).

    Under ``accelerate launch`` every rank calls this; rank 0 alone writes the run directory (module
    :mod:`alignkit.distributed`), and the other ranks return the directory rank 0 is about to promote."""
    from alignkit.data.cards import load_card
    from alignkit.models import load_tokenizer, remote_code_opt_in

    final = Path(recipe.training_args.output_dir)
    prepared = main_decides(lambda: _prepare_run(recipe, overwrite, resume), recipe.training_args)
    paths, model_path, needs = prepared.paths, prepared.model_path, prepared.needs
    recipe.training_args.output_dir = str(paths.staging)
    card = load_card(recipe.args.dataset)
    # runs the data needs only after it has sampled (the on-policy card's scorer) train in the side lane meanwhile
    deferred = deferrable_runs(card, needs, final.parent) if recipe.args.onpolicy_rounds == 1 else []
    after = []
    if baseline_eval and recipe.args.eval_suite:
        after = [
            lanes.BaselineEval(
                str(model_path), recipe.args.eval_suite, recipe.args.max_eval_samples, remote_code_opt_in(recipe)
            )
        ]
    lane = None
    if side_needs or deferred or after:
        own_needs = [*start_needs(recipe, final.parent), *needs]
        lane = lanes.start(side_needs or [], own_needs, final.parent, early=deferred, after=after)
    # no caller ends a lane that only has the data's runs: end it here
    own_lane = lane is not None and not side_needs and not after
    if recipe.args.onpolicy_rounds > 1:
        from alignkit.onpolicy_rounds import train_rounds

        try:
            return train_rounds(recipe, model_path, paths, card, needs)
        finally:
            run_lock.release(paths.staging)  # a kept (resumable) staging directory must not stay locked
    try:
        deferred = [need for need in deferred if lanes.training(need.name)]
        if deferred:
            names = ", ".join(f"run:{need.name}" for need in deferred)
            print(f"alignkit: sampling the data of {card.name} while the side lane trains {names}", flush=True)
            presample(card, final.parent)
            for need in deferred:
                lanes.wait_for(need.name)  # a failure: ensure_runs trains it here
        if own_lane:
            lanes.finish(True)
        ensure_runs(needs, final.parent)  # the runs the card or the rewards sample from or score with, trained first
        tokenizer = load_tokenizer(model_path, trust_remote_code=remote_code_opt_in(recipe))
        if is_main():
            write_run_metadata(recipe, paths.staging, "running", {"base_model": model_path})
        built = build_trainer(
            recipe,
            model_path,
            tokenizer,
            [
                _JsonlLogCallback(paths.staging / TRAIN_LOG),
                *recipe_callbacks(recipe, final.parent),
                *lanes.trainer_callbacks(),
            ],
            builder_args=dataset_builder_args(card, final.parent),
        )
        trainer = built.trainer
        start = time.time()
        trainer.train(resume_from_checkpoint=paths.resume_from)
        seconds = time.time() - start
        artifact = "adapter" if built.peft_config is not None else "model"
        trainer.save_model(str(paths.staging / artifact))  # every rank: FSDP gathers the shards; rank 0 writes
        if is_main():
            tokenizer.save_pretrained(paths.staging / artifact)
            write_run_metadata(
                recipe,
                paths.staging,
                "finished",
                {
                    "base_model": model_path,
                    "adapter_dir": artifact if artifact == "adapter" else None,
                    "model_dir": artifact if artifact == "model" else None,
                    "train_seconds": round(seconds, 1),
                    "global_step": trainer.state.global_step,
                    "train_samples": built.train_rows,
                },
            )
    except BaseException:
        if own_lane:
            lanes.finish(False)  # stop the child: its run stays .partial and resumes next time
        if is_main():
            abandon(paths)  # keep an interrupted run only if it has a checkpoint to resume from
        raise
    if not is_main():
        return final  # rank 0 promotes it
    final = promote(paths)
    write_model_card(final)  # over TRL's generic card and PEFT's template; the eval refreshes it with report.json
    return final
