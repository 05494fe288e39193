"""The precision of inference-only passes (eval generation, reward and perplexity scoring, on-policy sampling).

Two settings, chosen by a suite's or a pair card's ``precision`` key:

* ``exact`` (the default): fp32 weights on a CPU, the checkpoint's bf16 on a GPU. Numbers are reproducible to fp32
  rounding and comparable with lm-eval's HF backend.
* ``fast``: bf16 weights wherever the hardware computes bf16 natively (a GPU with bf16, a CPU with avx512_bf16 or
  AMX). On an AMD EPYC with avx512_bf16 a (3200x576)@(576x1536) matmul runs ~4.6x faster in bf16 than in fp32 at one
  thread. Logits are upcast to fp32 before every softmax, so only the matmuls round to bf16; greedy replies can
  still differ from the exact path where two tokens are nearly tied, which is why bench/eval_precision.py checks
  every reported metric of the fast path against the exact one. On a CPU without native bf16, bf16 would be
  emulated (~24x slower, DESIGN.md), so ``fast`` falls back to ``exact`` there.
"""

from __future__ import annotations

from typing import Any

from alignkit.errors import AlignkitError

PRECISIONS = ("exact", "fast")


def check_precision(value: Any, where: str) -> str:
    """``value`` if it is a known precision, else a one-line error naming ``where``."""
    if value not in PRECISIONS:
        raise AlignkitError(f"{where}: must be one of {', '.join(PRECISIONS)}, got {value!r}")
    return value


def native_bf16() -> bool:
    """True when bf16 matmuls run natively here: a CUDA device with bf16, or a CPU with avx512_bf16/AMX."""
    import torch

    from alignkit.hardware import detect

    if torch.cuda.is_available():
        return bool(torch.cuda.is_bf16_supported())
    return detect().cpu_bf16


def effective_precision(precision: str) -> str:
    """What ``precision`` means on this machine: ``fast`` only where bf16 is native, else ``exact``."""
    check_precision(precision, "precision")
    return "fast" if precision == "fast" and native_bf16() else "exact"


def inference_dtype(precision: str = "exact") -> Any:
    """The weight dtype for inference: bf16 for ``fast`` on native-bf16 hardware and for ``exact`` on a GPU
    (checkpoints are bf16 there), else fp32."""
    import torch

    if torch.cuda.is_available():
        return torch.bfloat16
    return torch.bfloat16 if effective_precision(precision) == "fast" else torch.float32
