"""What the eval harness evaluates: a base checkpoint plus an optional PEFT adapter, from a run, a path or a name.

A :class:`ModelSpec` is cheap and hashable; it loads nothing until :func:`load_model` is called. Its
:meth:`ModelSpec.identity` feeds the generation cache key: the base path plus the size and mtime of its weight files
(hashing gigabytes of weights on every call would dominate a small eval), and a content hash of the adapter files
(small, and rewritten in place by retraining, so mtime alone could miss a change within a second).

Chat rendering lives in :mod:`alignkit.chat_format`, run directories in :mod:`alignkit.runs`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignkit.errors import AlignkitError
from alignkit.inference_precision import (
    FAST_NUMERICS,
    apply_precision,
    check_precision,
    effective_precision,
    load_dtype,
)
from alignkit.runs import read_finished_run

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


@dataclass(frozen=True)
class ModelSpec:
    """A model to evaluate: ``base`` (a loadable path or hub id) plus an optional ``adapter`` directory.

    ``name`` labels the model in reports (``base``, ``dpo-smol`` ...); ``run_dir`` and ``beta`` are set when the
    spec comes from a training run (``beta`` only for DPO, for the implicit reward). ``trust_remote_code`` is True only
    for a run whose recipe opted in (its run.json says so): eval then loads the model as training did.
    """

    name: str
    base: str
    adapter: str | None = None
    run_dir: str | None = None
    trainer: str | None = None
    beta: float | None = None
    reference: str | None = None  # pi_ref checkpoint of a full fine-tune (an adapter's reference is its base)
    precision: str = "exact"  # alignkit.inference_precision: "exact" or "fast" (bf16 matmuls where native)
    trust_remote_code: bool = False

    def identity(self) -> dict[str, Any]:
        """JSON-able fingerprint of the weights this spec loads (see the module docstring). The fast path adds its
        dtype and the version of its numerics (its outputs differ from the exact path's, and changed when reward
        models moved to :func:`alignkit.inference_precision.bf16_matmuls`); an exact spec keeps the key it always
        had."""
        out = {"base": self.base, "base_files": _file_stamps(self.base), "adapter": _adapter_hash(self.adapter)}
        if effective_precision(self.precision) == "fast":
            out["dtype"] = "bfloat16"
            out["fast_numerics"] = FAST_NUMERICS
        return out

    def without_adapter(self, name: str = "base") -> ModelSpec:
        return ModelSpec(
            name=name,
            base=self.reference or self.base,
            precision=self.precision,
            trust_remote_code=self.trust_remote_code,
        )

    def with_precision(self, precision: str) -> ModelSpec:
        return dataclasses.replace(self, precision=check_precision(precision, f"model '{self.name}': precision"))

    def describe(self) -> dict[str, Any]:
        """Report-friendly summary: name, base, adapter, run and trainer (and ``trust_remote_code`` when on)."""
        return {k: v for k, v in vars(self).items() if v is not None and not (k == "trust_remote_code" and not v)}


def _file_stamps(path: str) -> list[tuple[str, int, int]]:
    p = Path(path)
    if not p.is_dir():  # a hub id: its revision is pinned by the HF cache, the id is the identity
        return []
    return sorted(
        (f.name, f.stat().st_size, f.stat().st_mtime_ns)
        for f in p.iterdir()
        if f.is_file() and (f.suffix in _WEIGHT_SUFFIXES or f.name == "config.json")
    )


def _adapter_hash(adapter: str | None) -> str | None:
    if adapter is None:
        return None
    digest = hashlib.sha256()
    for f in sorted(Path(adapter).iterdir()):
        if f.is_file() and (f.suffix in _WEIGHT_SUFFIXES or f.name == "adapter_config.json"):
            digest.update(f.name.encode())
            digest.update(f.read_bytes())
    return digest.hexdigest()


def load_model(spec: ModelSpec, padding_side: str = "left") -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` for ``spec`` in eval mode; an adapter is attached with ``PeftModel``.

    The adapter stays a separate LoRA branch (not merged) so :func:`reference_logps` can switch it off with
    ``disable_adapter()`` and get the DPO reference policy without a second copy of the base weights.
    A run trained with QLoRA is evaluated on the full-precision base: the adapter was trained against the nf4
    dequantization of these weights, which differs by quantization noise only, and fp32 is much faster on a CPU.
    The weights follow ``spec.precision`` (:func:`alignkit.inference_precision.apply_precision`: fp32, or on a CPU
    with native bf16 and ``fast``, bf16 for the decoder's matmuls only; the LoRA branch stays fp32 there).
    """
    import torch
    from transformers import AutoModelForCausalLM

    from alignkit.models import load_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    remote = spec.trust_remote_code  # only a run whose recipe opted in (run.json); its training warned about it
    try:
        model = AutoModelForCausalLM.from_pretrained(
            spec.base, dtype=load_dtype(spec.precision), use_safetensors=True, trust_remote_code=remote
        )
    except OSError as exc:
        raise AlignkitError(f"model '{spec.name}': cannot load base checkpoint '{spec.base}' ({exc})") from exc
    tok_source = (
        spec.adapter if spec.adapter and (Path(spec.adapter) / "tokenizer_config.json").exists() else spec.base
    )
    tokenizer = load_tokenizer(tok_source, padding_side=padding_side, trust_remote_code=remote)
    if spec.adapter is not None:
        from peft import PeftModel

        if not (Path(spec.adapter) / "adapter_config.json").exists():
            raise AlignkitError(f"model '{spec.name}': {spec.adapter} has no adapter_config.json (not a PEFT adapter)")
        model = PeftModel.from_pretrained(model, spec.adapter)
    model.to(device=device, dtype=load_dtype(spec.precision)).eval()
    apply_precision(model, spec.precision)
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def spec_key(spec: ModelSpec) -> str:
    """Short stable hash of a spec's identity (used in cache file names)."""
    return hashlib.sha256(json.dumps(spec.identity(), sort_keys=True).encode()).hexdigest()[:16]


def run_specs(run_dir: str | Path) -> tuple[ModelSpec, ModelSpec]:
    """``(base, trained)`` specs of a finished run: the base checkpoint alone, and the base + adapter (or the full
    fine-tuned model directory, whose reference is the base)."""
    from alignkit.models import resolve_model_path

    run_dir = Path(run_dir)
    meta = read_finished_run(run_dir)
    base = meta.get("base_model")
    if not base or not Path(base).exists():  # the run came from another machine: re-resolve its model name
        if not meta.get("model_name_or_path"):
            raise AlignkitError(f"{run_dir / 'run.json'}: base_model '{base}' is missing and no model_name_or_path")
        if str(meta["model_name_or_path"]).startswith("run:"):  # a run started from another run: merge it again
            from alignkit.run_start import resolve_start

            base = resolve_start(meta["model_name_or_path"], run_dir.parent, meta.get("trainer") or "sft").path
        else:
            base = resolve_model_path(meta["model_name_or_path"])
    name = meta.get("recipe") or run_dir.name
    remote = meta.get("trust_remote_code") is True
    common = dict(name=name, run_dir=str(run_dir), trainer=meta.get("trainer"), beta=meta.get("beta"))
    if meta.get("adapter_dir"):
        trained = ModelSpec(
            base=str(base), adapter=str(run_dir / meta["adapter_dir"]), trust_remote_code=remote, **common
        )
    else:
        trained = ModelSpec(
            base=str(run_dir / meta["model_dir"]), reference=str(base), trust_remote_code=remote, **common
        )
    return ModelSpec(name="base", base=str(base), trust_remote_code=remote), trained


def resolve_target(arg: str, runs_root: str | Path = "runs") -> tuple[str, Any]:
    """Classify a CLI target: ``("run", run_dir)`` for a run directory (or a run name under ``runs_root``),
    ``("model", ModelSpec)`` for a model directory, an embedded alias or a hub id."""
    from alignkit.models import EMBEDDED_MODELS, resolve_model_path

    p = Path(arg).expanduser()
    if (p / "run.json").exists():
        return "run", p
    if not p.exists() and (Path(runs_root) / arg / "run.json").exists():
        return "run", Path(runs_root) / arg
    if p.is_dir():
        if (p / "config.json").exists():
            return "model", ModelSpec(name=p.name, base=str(p))
        if (p / "adapter_config.json").exists():
            raise AlignkitError(f"'{arg}' is a bare adapter; evaluate the run directory that contains it instead")
        raise AlignkitError(f"'{arg}' is neither a run directory (no run.json) nor a model directory (no config.json)")
    if arg in EMBEDDED_MODELS:
        return "model", ModelSpec(name=arg, base=resolve_model_path(arg))
    looks_local = arg.startswith((".", "/", "~", "runs/", f"{Path(runs_root).name}/")) or arg.count("/") > 1
    if looks_local or (p.parent != Path(".") and p.parent.is_dir()):  # hub ids are "org/name" with no local org dir
        raise AlignkitError(f"run directory '{arg}' does not exist")
    if "/" not in arg:
        raise AlignkitError(
            f"unknown model or run '{arg}': not a directory, not a run under {runs_root}/, "
            f"not an embedded model ({', '.join(EMBEDDED_MODELS)})"
        )
    return "model", ModelSpec(name=arg.split("/")[-1], base=resolve_model_path(arg))
