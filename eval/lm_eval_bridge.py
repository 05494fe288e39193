"""Run lm-eval (EleutherAI lm-evaluation-harness 0.4.x) tasks on a base model plus an optional PEFT adapter.

Two ways to apply the adapter, same numbers up to float rounding:

* ``mode="peft"``: lm-eval's own HF backend with ``peft=<adapter>`` (the adapter stays a separate LoRA branch);
* ``mode="merge"``: we merge the adapter into the base weights and save a temporary checkpoint that lm-eval loads as
  a plain model. This is the way to go when a task runs many forward passes (no LoRA overhead) or when a backend
  cannot take adapters; the temporary checkpoint is deleted afterwards.

Our offline tasks live in ``eval/tasks`` (installed as ``alignkit/eval/tasks``) and are always on the include path,
next to lm-eval's built-in ones: ``alignkit_arith_mc`` (arithmetic multiple choice) and ``alignkit_sharegpt_ppl``
(held-out ShareGPT answers, rolling log-likelihood perplexity). Their rows are loaded by :func:`load_local_jsonl`
because ``datasets`` resolves a relative ``data_files`` against the current directory, not the YAML file.

Example::

    from alignkit.eval.lm_eval_bridge import run_tasks
    run_tasks("smollm2-135m-instruct", "runs/sft-smol/adapter", ["alignkit_arith_mc"], limit=64)
    # {"alignkit_arith_mc": {"acc": {"value": 0.41, "stderr": 0.06, "n": 64}, "acc_norm": {...}}}
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from alignkit.errors import AlignkitError

logger = logging.getLogger(__name__)

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
Mode = Literal["peft", "merge"]


def load_local_jsonl(data_files: str | dict[str, str] | None = None, split: str = "test", **_metadata: Any):
    """``custom_dataset`` loader for our task YAMLs: JSONL rows -> ``DatasetDict({split: Dataset})``.

    ``data_files`` (from the YAML's ``dataset_kwargs``) is a path, or a ``{split: path}`` mapping; relative paths are
    resolved against :data:`TASKS_DIR`, so the tasks work from any working directory and from an installed wheel.
    lm-eval also passes the task metadata (``version`` ...) as keyword arguments; they are ignored.
    """
    import datasets

    if data_files is None:
        raise AlignkitError("lm-eval task: dataset_kwargs.data_files is missing from an alignkit task YAML")
    files = data_files if isinstance(data_files, dict) else {split: data_files}
    out = {}
    for name, rel in files.items():
        path = Path(rel) if Path(rel).is_absolute() else TASKS_DIR / rel
        if not path.is_file():
            raise AlignkitError(
                f"lm-eval task data file {path} is missing; rebuild it with the builder in {TASKS_DIR}"
            )
        rows = []
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise AlignkitError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from exc
        out[name] = datasets.Dataset.from_list(rows)
    return datasets.DatasetDict(out)


def local_task_names() -> list[str]:
    """Names of the tasks shipped in :data:`TASKS_DIR` (cheap: indexes only our YAMLs, not lm-eval's thousands)."""
    return sorted(_task_manager(include_defaults=False).all_subtasks)


def _task_manager(include_defaults: bool):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=include_defaults)


def _resolve_tasks(tasks: Sequence[str]):
    """A TaskManager that knows every requested task, or an AlignkitError naming the unknown ones.

    Indexing lm-eval's built-in tasks costs several seconds, so it is only done when a task is not one of ours.
    """
    if isinstance(tasks, str) or not tasks:
        raise AlignkitError(f"tasks: expected a non-empty list of lm-eval task names, got {tasks!r}")
    local = _task_manager(include_defaults=False)
    if all(t in local.all_tasks for t in tasks):
        return local
    full = _task_manager(include_defaults=True)
    unknown = [t for t in tasks if t not in full.all_tasks]
    if unknown:
        ours = ", ".join(sorted(local.all_subtasks)[:5])
        raise AlignkitError(
            f"tasks: unknown lm-eval task(s) {unknown}; local alignkit tasks: {ours}; "
            f"list all with `lm_eval ls tasks --include_path {TASKS_DIR}`"
        )
    return full


def _check_adapter(adapter: str) -> Path:
    path = Path(adapter).expanduser()
    if not (path / "adapter_config.json").is_file():
        raise AlignkitError(f"adapter: {adapter} is not a PEFT adapter directory (no adapter_config.json)")
    return path


def _has_tokenizer(path: Path) -> bool:
    return any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model"))


@contextmanager
def merged_checkpoint(base_path: str, adapter: str, dtype: Any) -> Iterator[str]:
    """Yield a temporary directory holding ``base + adapter`` merged into plain weights; removed on exit.

    The base is loaded unquantized in ``dtype`` even if the adapter was trained with QLoRA: merging LoRA deltas into
    4-bit weights would re-quantize them and change the numbers. The tokenizer comes from the adapter directory when
    it has one (TRL saves it there, with any added tokens), otherwise from the base.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter_path = _check_adapter(adapter)
    tokenizer = AutoTokenizer.from_pretrained(
        adapter_path if _has_tokenizer(adapter_path) else base_path, trust_remote_code=False
    )
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype, trust_remote_code=False)
    if model.get_input_embeddings().weight.shape[0] < len(tokenizer):  # adapter added tokens
        model.resize_token_embeddings(len(tokenizer))
    model = PeftModel.from_pretrained(model, str(adapter_path)).merge_and_unload()
    tmp = tempfile.mkdtemp(prefix="alignkit-merged-")
    try:
        with torch.no_grad():
            model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        del model
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _compact(results: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """lm-eval's ``results`` -> ``{task: {metric: {"value", "stderr", "n"}}}``.

    lm-eval keys metrics as ``"<metric>,<filter>"`` with ``"<metric>_stderr,<filter>"`` beside them; the default
    filter ``none`` is dropped from the name, any other stays (``"exact_match,strict-match"``). A stderr lm-eval
    could not compute (``"N/A"``) becomes ``None``.
    """
    n_samples = results.get("n-samples", {})
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for task, metrics in results.get("results", {}).items():
        n = n_samples.get(task, {}).get("effective")
        row: dict[str, dict[str, Any]] = {}
        for key, value in metrics.items():
            if "," not in key or "_stderr," in key:
                continue  # "alias", "name", ... and the stderr entries themselves
            metric, filt = key.split(",", 1)
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            name = metric if filt == "none" else key
            row[name] = {
                "value": float(value) if isinstance(value, (int, float)) else value,
                "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
                "n": n,
            }
        out[task] = row
    return out


def run_tasks(
    base_model: str,
    adapter: str | None,
    tasks: list[str],
    limit: int | float | None = None,
    batch_size: int | str = 8,
    mode: Mode = "peft",
    output: str | os.PathLike | None = None,
    num_fewshot: int | None = None,
    device: str | None = None,
    dtype: str | None = None,
    bootstrap_iters: int = 1000,
    seed: int = 1234,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Evaluate ``base_model`` (+ ``adapter``) on lm-eval ``tasks``; return ``{task: {metric: {value, stderr, n}}}``.

    Args:
        base_model: an embedded alias (``smollm2-135m-instruct``), a local checkpoint directory or a hub id; resolved
            by :func:`alignkit.models.resolve_model_path`.
        adapter: a PEFT adapter directory, or ``None`` for the base model alone.
        tasks: lm-eval task names; our offline ``alignkit_*`` tasks are always available.
        limit: at most this many documents per task (a float in (0, 1) is a fraction), as lm-eval's ``--limit``.
        batch_size: lm-eval batch size (an int, or ``"auto"``).
        mode: ``"peft"`` (lm-eval loads the adapter) or ``"merge"`` (we merge into a temporary checkpoint).
        output: if given, also write ``{"tasks": <returned dict>, "lm_eval": <lm-eval results without samples>}``
            there as JSON (atomically).
        device: defaults to ``cuda`` when available, else ``cpu``.
        dtype: defaults to ``float32`` on the CPU (bf16/fp16 are slow or unsupported there, see DESIGN.md) and to
            ``auto`` (the checkpoint's dtype) on a GPU.
        bootstrap_iters: bootstrap resamples for the stderr of non-mean metrics (perplexities); 0 skips them.
        seed: lm-eval's python/numpy/torch/few-shot seeds.

    Raises:
        AlignkitError: bad arguments, an unknown task (the message lists local ones) or any lm-eval failure.
    """
    if mode not in ("peft", "merge"):
        raise AlignkitError(f"mode: must be 'peft' or 'merge', got {mode!r}")
    if limit is not None and limit <= 0:
        raise AlignkitError(f"limit: must be positive, got {limit}")
    import torch

    from alignkit.models import resolve_model_path

    base_path = resolve_model_path(base_model)
    if adapter is not None:
        _check_adapter(adapter)
    task_manager = _resolve_tasks(tasks)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or ("float32" if device == "cpu" else "auto")

    start = time.perf_counter()
    with _model_source(base_path, adapter, mode, dtype) as model_args:
        model_args.update(dtype=dtype, device=device)
        logger.info("lm-eval %s on %s (mode=%s, limit=%s)", tasks, model_args, mode, limit)
        results = _simple_evaluate(
            model_args, tasks, task_manager, limit, batch_size, num_fewshot, bootstrap_iters, seed
        )
    compact = _compact(results)
    logger.info("lm-eval finished %s in %.1f s", tasks, time.perf_counter() - start)
    if output is not None:
        from alignkit.io import atomic_write_json

        full = {k: v for k, v in results.items() if k != "samples"}
        atomic_write_json(output, {"tasks": compact, "mode": mode, "adapter": adapter, "lm_eval": full})
    return compact


@contextmanager
def _model_source(base_path: str, adapter: str | None, mode: Mode, dtype: str) -> Iterator[dict[str, Any]]:
    """lm-eval ``model_args`` for the requested mode (a temporary merged checkpoint lives for the ``with`` block)."""
    if adapter is None:
        yield {"pretrained": base_path}
    elif mode == "peft":
        args: dict[str, Any] = {"pretrained": base_path, "peft": str(Path(adapter).expanduser())}
        if _has_tokenizer(Path(adapter).expanduser()):  # keep tokens the adapter's training added
            args["tokenizer"] = args["peft"]
        yield args
    else:
        import torch

        torch_dtype = getattr(torch, dtype) if dtype != "auto" else "auto"
        with merged_checkpoint(base_path, adapter, torch_dtype) as merged:
            yield {"pretrained": merged}


class _DropCustomDatasetHint(logging.Filter):
    """lm-eval warns on every task with ``custom_dataset`` that kwargs can go through ``--metadata``; our loader
    takes none, so on our tasks the warning is noise that would bury real ones."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Custom kwargs can be passed to `--metadata`" not in record.getMessage()


_HINT_FILTER = _DropCustomDatasetHint()


def _simple_evaluate(
    model_args: dict[str, Any],
    tasks: list[str],
    task_manager: Any,
    limit: int | float | None,
    batch_size: int | str,
    num_fewshot: int | None,
    bootstrap_iters: int,
    seed: int,
) -> dict[str, Any]:
    import lm_eval

    task_logger = logging.getLogger("lm_eval.api.task")
    if _HINT_FILTER not in task_logger.filters:
        task_logger.addFilter(_HINT_FILTER)
    try:
        results = lm_eval.simple_evaluate(
            model="hf",
            model_args=model_args,
            tasks=list(tasks),
            num_fewshot=num_fewshot,
            batch_size=batch_size,
            limit=limit,
            task_manager=task_manager,
            log_samples=False,
            bootstrap_iters=bootstrap_iters,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    except AlignkitError:
        raise
    except Exception as exc:  # lm-eval raises bare ValueError/KeyError/OSError; give the user one line with context
        raise AlignkitError(f"lm-eval failed on tasks {tasks} ({model_args}): {type(exc).__name__}: {exc}") from exc
    if not results or not results.get("results"):
        raise AlignkitError(f"lm-eval returned no results for tasks {tasks} ({model_args})")
    return results
