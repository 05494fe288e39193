"""The precision of inference-only passes (eval generation, reward and perplexity scoring, on-policy sampling).

Two settings, chosen by a suite's or a pair card's ``precision`` key:

* ``exact`` (the default): fp32 weights on a CPU, the checkpoint's bf16 on a GPU. Numbers are reproducible to fp32
  rounding and comparable with lm-eval's HF backend.
* ``fast``: bf16 matmuls wherever the hardware computes bf16 natively (a GPU with bf16: bf16 weights; a CPU with
  avx512_bf16 or AMX: :func:`bf16_matmuls`, below). On an AMD EPYC with avx512_bf16 a (3200x576)@(576x1536) matmul
  runs ~4.6x faster in bf16 than in fp32 at one thread. Logits are upcast to fp32 before every softmax; greedy
  replies can still differ from the exact path where two tokens are nearly tied, which is why
  bench/eval_precision.py checks every reported metric of the fast path against the exact one. On a CPU without
  native bf16, bf16 would be emulated (~24x slower, DESIGN.md), so ``fast`` falls back to ``exact`` there.

On a CPU the fast path is narrower than a bf16 model, :func:`bf16_matmuls`: only the decoder's big matmuls run in
bf16, on bf16 copies of their inputs and with fp32 results; the LoRA branch, the residual stream, the norms,
attention, the LM head and the score head stay fp32. Casting the whole adapted model to bf16 moved every score of the
smol reward run by a near-constant -0.16 (sd 0.05; 32 chat replies), 5 CI half-widths of the eval's RM score, and
dpo-smol's log-prob ratio to its reference by +0.77 nats on chosen answers (24 held-out pairs): a bf16 sum erases a
LoRA update smaller than half a bf16 step of the base output it is added to (see :func:`bf16_matmuls`). Loaders
call :func:`load_dtype` and then :func:`apply_precision`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alignkit.errors import AlignkitError

PRECISIONS = ("exact", "fast")
# Bumped whenever the numerics of the fast path change, so a cache keyed on a fast model's identity (judge accuracy,
# on-policy pair scores) is recomputed instead of serving numbers of the old path. 2: bf16_matmuls on a CPU instead
# of a whole-model bf16 cast; 3: the decode engine's output projection in bf16 (:func:`bf16_generation_head`).
FAST_NUMERICS = 3


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


def matmuls_only(precision: str) -> bool:
    """True where ``precision`` means :func:`bf16_matmuls`: ``fast`` on a CPU with native bf16 (on a GPU both
    precisions load bf16 checkpoints as they are)."""
    import torch

    return not torch.cuda.is_available() and effective_precision(precision) == "fast"


def load_dtype(precision: str = "exact") -> Any:
    """The dtype to load weights in before :func:`apply_precision`: fp32 where ``fast`` means
    :func:`bf16_matmuls`, else :func:`inference_dtype`."""
    import torch

    return torch.float32 if matmuls_only(precision) else inference_dtype(precision)


def apply_precision(model: Any, precision: str) -> Any:
    """``model`` (in place) in ``precision``: :func:`bf16_matmuls` where :func:`matmuls_only`, else cast to
    :func:`inference_dtype`. A model switched from fast back to exact gets fp32 weights again (the hooks of
    :func:`bf16_matmuls` follow the weight dtype, so they then do nothing)."""
    if matmuls_only(precision):
        return bf16_matmuls(model)
    return model.to(dtype=inference_dtype(precision))


def bf16_matmuls(model: Any) -> Any:
    """``model`` (fp32, in place) with only the decoder's linear layers in bf16, for fast scoring on a CPU.

    Each ``nn.Linear`` inside the decoder's ``.layers.`` (attention and MLP projections; for a PEFT model the LoRA
    layers' ``base_layer``) gets bf16 weights, a bf16 copy of its input and an fp32 output. Everything else stays
    fp32: the LoRA ``A``/``B`` branch and its sum with the base output, the residual stream, the norms, attention,
    the embedding, the LM head and the score head (``modules_to_save``). The decoder's matmuls are most of the FLOPs,
    so most of the bf16 speed stays (1 thread: 32 smol RM scores 7.8-8.4 s against 5.7 s for a whole-model bf16 cast
    and 16.5-17 s in fp32; dpo-smol's policy and reference log-probs of 24 pairs 27 s against 25 s and 46 s).

    Why not the whole model in bf16: a LoRA layer computes ``y = W x + s B A x``. In bf16, ``W x`` comes out of the
    matmul rounded to the bf16 grid (8 significant bits), and adding the update ``d = s B A x`` rounds again:
    ``bf16(bf16(W x) + d) = bf16(W x)`` whenever ``|d|`` is under half a bf16 step of ``W x``, so the update is
    erased, not rounded (a single rounding of ``W x + d`` keeps it on average). The updates are what training
    learned, so their loss moves every score the same way. Measured on the smol reward run (rm-smol, LoRA r 16 on
    all seven projections), 32 chat replies, shift of the score against fp32: whole model in bf16 -0.164 (sd 0.053);
    fp32 with every weight rounded to bf16 +0.004; fp32 with the input and output of every LoRA layer rounded to bf16
    -0.010; the same plus rounding the base and LoRA outputs before their sum -0.173; the LoRA merged in fp32 and
    then cast to bf16 -0.054 (the merged weight ``W + s B A`` erases the update the same way, ``W`` being a bf16
    checkpoint); score head, final norm or its input in bf16 alone: within 0.001; this function: -0.005 (sd 0.009).
    The same erasure moved dpo-smol's log-prob ratio to its reference (the DPO implicit reward's ``log pi - log
    pi_ref``) by +0.77 nats on 24 held-out chosen answers (exact -7.32); this function: +0.05. The LM head stays
    fp32 although it is a big matmul: in bf16 (with fp32 logits) those log-probs took 16 s instead of 27 s but the
    ratio moved +0.36.

    Applying it twice is harmless: a layer already done keeps its hooks and gets no second pair.
    """
    import torch

    keep = ("lora_", "modules_to_save", "original_module")
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and ".layers." in name and not any(k in name for k in keep):
            module.to(torch.bfloat16)
            if not getattr(module, "_alignkit_bf16_matmul", False):
                module.register_forward_pre_hook(_bf16_input)
                module.register_forward_hook(_fp32_output)
                module._alignkit_bf16_matmul = True
    return model


def _bf16_input(module: Any, args: tuple) -> tuple:
    return (args[0].to(module.weight.dtype), *args[1:])


def _fp32_output(module: Any, args: tuple, output: Any) -> Any:
    return output.float()


def uses_bf16_matmuls(model: Any) -> bool:
    """Whether :func:`bf16_matmuls` has been applied to ``model`` (the fast path on a CPU)."""
    return any(getattr(module, "_alignkit_bf16_matmul", False) for module in model.modules())


class _Bf16Head:
    """``linear(bf16(x), bf16(W))`` with fp32 logits, a plain callable standing in for the LM head."""

    def __init__(self, weight: Any) -> None:
        import torch

        self.weight = weight.detach().to(torch.bfloat16)

    def __call__(self, hidden: Any) -> Any:
        import torch

        return torch.nn.functional.linear(hidden.to(torch.bfloat16), self.weight).float()


@contextmanager
def bf16_generation_head(model: Any) -> Iterator[bool]:
    """Inside: a model on the fast path (:func:`uses_bf16_matmuls`) projects onto its vocabulary in bf16, with
    fp32 logits; yields whether it does. For choosing tokens only (the decode engine, when no log-probs are asked
    for): the log-probs a scorer or a reference model reads keep the fp32 head (see :func:`bf16_matmuls`).

    Why: in a decode step the LM head was the largest single matmul left in fp32. ``(64 x 576) @ (576 x 49152)`` at
    one thread took 23.2 ms in fp32 against 6.7 ms in bf16 (16 rows: 12.5 vs 3.9 ms; 128 rows: 40.2 vs 9.8 ms; Intel
    Xeon with AMX, 2026-12-04, scratch timing). The head has no LoRA update (alignkit adapts the
    decoder's projections), so no adapter is erased; rounding its input and weight to bf16 (a relative step of
    2**-8 per element; the shift of the logits was not measured) can swap near-tied tokens, as the decoder's bf16
    matmuls already allow. Left alone (fp32, yields False): a model off the fast path, or a head that is not a plain
    bias-free fp32 ``nn.Linear`` (an adapted or saved head). The head's own forward is back on exit."""
    import torch

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    get_head = getattr(inner, "get_output_embeddings", None)
    head = get_head() if get_head is not None else None
    plain = type(head) is torch.nn.Linear and head.bias is None and head.weight.dtype == torch.float32
    if not (plain and uses_bf16_matmuls(model)):
        yield False
        return
    head.forward = _Bf16Head(head.weight)  # an instance attribute: nn.Module.__call__ dispatches to it
    try:
        yield True
    finally:
        del head.forward  # the class's forward again
