"""Pick precision, checkpointing and dataloader settings from the hardware, unless the recipe set them.

Why: TRL 1.x defaults to ``bf16=True`` and ``gradient_checkpointing=True``. On a CPU that is either an error
(TrainingArguments refuses bf16 on CPU unless ``use_cpu=True``) or, with ``use_cpu=True``, a bf16 autocast whose
speed depends on the CPU (bench/results/precision_<cpu kind>.md: the measured ratio per CPU kind).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Keys of TrainingArguments (and the model loader) that this module may choose.
CHOSEN_KEYS = (
    "bf16",
    "fp16",
    "use_cpu",
    "gradient_checkpointing",
    "dataloader_num_workers",
    "dataloader_pin_memory",
    "dtype",
)


@dataclass
class Hardware:
    device: str  # "cuda" or "cpu"
    cpu_count: int
    cpu_bf16: bool  # avx512_bf16 or AMX advertised: bf16 autocast runs natively
    cuda_bf16: bool = False
    gpu_name: str | None = None
    cpu_flags: list[str] = field(default_factory=list)
    cpu_model: str = "unknown"  # /proc/cpuinfo's model name: every figure records the CPU it was measured on

    def to_dict(self) -> dict:
        return asdict(self)


def _cpuinfo_field(name: str) -> str | None:
    """The first ``name : value`` of /proc/cpuinfo (None where there is no such file or field)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() == name:
            return value.strip()
    return None


def _cpu_flags() -> set[str]:
    return set((_cpuinfo_field("flags") or "").split())


def cpu_kind(flags) -> str:
    """The CPU classes bf16 speed depends on: ``amx``, ``avx512_bf16`` (without AMX) or ``no_bf16`` (neither: bf16 is
    emulated, so alignkit computes in fp32). Benches whose figures differ by kind keep one result per kind
    (``bench/results/<bench>_<kind>.json``)."""
    flags = set(flags)
    if "amx_bf16" in flags:
        return "amx"
    return "avx512_bf16" if "avx512_bf16" in flags else "no_bf16"


def detect() -> Hardware:
    import torch

    flags = _cpu_flags()
    interesting = sorted(f for f in flags if f in {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
    cpu_bf16 = bool({"avx512_bf16", "amx_bf16"} & flags)
    if torch.cuda.is_available():
        return Hardware(
            device="cuda",
            cpu_count=os.cpu_count() or 1,
            cpu_bf16=cpu_bf16,
            cuda_bf16=torch.cuda.is_bf16_supported(),
            gpu_name=torch.cuda.get_device_name(0),
            cpu_flags=interesting,
            cpu_model=_cpuinfo_field("model name") or "unknown",
        )
    return Hardware(
        device="cpu",
        cpu_count=os.cpu_count() or 1,
        cpu_bf16=cpu_bf16,
        cpu_flags=interesting,
        cpu_model=_cpuinfo_field("model name") or "unknown",
    )


def choose_settings(hw: Hardware, explicit: set[str]) -> tuple[dict, dict]:
    """Return ``(settings, reasons)`` for every key in CHOSEN_KEYS that the recipe did not set explicitly.

    - precision: bf16 on CUDA with bf16, fp16 on older CUDA; on a CPU, bf16 autocast over fp32 weights where the CPU
      has avx512_bf16/AMX (bench/results/precision_<cpu kind>.md measures it), else fp32. A
      recipe that sets ``bf16`` or ``fp16`` wins.
    - gradient checkpointing: on for CUDA (memory is the constraint), off on CPU (it costs ~20% time and a CPU run
      has plenty of RAM for these model sizes).
    - dataloader: no worker processes and no pinned memory on CPU (workers compete for the same 2 cores).
    - ``dtype`` is the dtype used to load weights (and the QLoRA compute dtype).
    """
    chosen: dict = {}
    reasons: dict = {}
    if hw.device == "cuda":
        if hw.cuda_bf16:
            prec, why = ("bf16", f"{hw.gpu_name} supports bf16")
        else:
            prec, why = ("fp16", f"{hw.gpu_name} lacks bf16")
        chosen.update(use_cpu=False, gradient_checkpointing=True, dataloader_pin_memory=True)
        reasons["gradient_checkpointing"] = "on: GPU memory is the constraint"
    else:
        # Without avx512_bf16/AMX, bf16 autocast is emulated: a dpo-smol step took 19.4x as long as in fp32, and
        # TRL's own CPU defaults (bf16 + gradient checkpointing) 33.9x (AMD EPYC, AVX2 only, 2026-12-04,
        # bench/results/precision_no_bf16.md). With them, the dpo-smol step runs faster under bf16 autocast than in
        # fp32 (bench/results/precision_amx.md, precision_avx512_bf16.md). Weights stay fp32
        # either way: autocast computes matmuls in bf16, while LoRA weights and AdamW state keep full precision.
        if hw.cpu_bf16:
            prec, why = ("bf16", "CPU has avx512_bf16/AMX: bf16 autocast over fp32 weights (bench/precision.py)")
        else:
            prec, why = (
                "fp32",
                "CPU lacks avx512_bf16/AMX: bf16 autocast would be emulated, ~19x slower per dpo-smol step "
                "(bench/results/precision_no_bf16.md)",
            )
        chosen.update(
            use_cpu=True, gradient_checkpointing=False, dataloader_pin_memory=False, dataloader_num_workers=0
        )
        reasons["gradient_checkpointing"] = "off on CPU: ~20% slower and memory is ample"
        reasons["dataloader_num_workers"] = "0 on CPU: workers would compete for the same cores"
        policy = os.environ.get("OMP_WAIT_POLICY")
        reasons["omp_wait_policy"] = (
            f"{policy} (set by the user)"
            if policy
            else "OpenMP default (spin): fastest on an idle CPU; on a CPU shared with other jobs export "
            "OMP_WAIT_POLICY=PASSIVE (bench/results/omp_wait.md)"
        )
    chosen["bf16"] = prec == "bf16"
    chosen["fp16"] = prec == "fp16"
    cpu_autocast = hw.device == "cpu"
    chosen["dtype"] = "float32" if cpu_autocast else {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[prec]
    reasons["precision"] = f"{prec}: {why}"
    # A recipe's explicit choice always wins; precision keys move together so bf16/fp16 never both end up True.
    if {"bf16", "fp16"} & explicit:
        for key in ("bf16", "fp16"):
            chosen.pop(key, None)
        reasons["precision"] = "set by the recipe"
    return {k: v for k, v in chosen.items() if k not in explicit}, reasons


def four_bit_problem() -> str | None:
    """Why bitsandbytes (4-bit/8-bit loading) cannot run here, or ``None`` when it imports.

    ``alignkit doctor`` goes further and quantizes a small matrix (:func:`alignkit.doctor.check_four_bit`)."""
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        return "bitsandbytes is not installed"
    try:
        import bitsandbytes  # noqa: F401
    except Exception as exc:  # a broken build or a missing native library
        return f"import bitsandbytes failed: {type(exc).__name__}: {exc}"
    return None
