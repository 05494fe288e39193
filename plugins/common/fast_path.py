"""The CPU fast path of the SFT, DPO and reward trainers (``cpu_fast_path``), and the TRL seams it goes through.

Four measures, each exact or within bf16 rounding of TRL's own path (tests/test_fast_path.py):

1. **Scored positions only** (:func:`compact_fused_head`). TRL 1.16's fused LM head projects only the labelled
   positions on Triton devices, but every position elsewhere (a changing row count would recompile XLA-like
   graphs). Eager CPU has no such cost, and prompts plus padding are most of a DPO batch (65 % of dpo-smol's
   positions), so the CPU takes TRL's compact branch too. Per-token results are unchanged.
2. **A head laid out for the CPU** (:func:`cpu_fast_head`): TRL's ``ChunkedLogProbFunction`` is swapped for
   :class:`~alignkit.plugins.common.head_logprobs.CompactHeadLogProb` (token tiles against the whole vocabulary,
   fp32 softmax, gradient GEMMs in the compute dtype, logits kept for the backward, the frozen head cast once).
3. **Frozen base cast once** (:func:`frozen_linear_cast`): under bf16 autocast every frozen fp32 ``nn.Linear``
   weight is cast to bf16 on every forward (autocast caches casts only of weights that train). Casting the frozen
   weights once for the length of ``train()`` gives bit-identical matmuls (the same round-to-nearest copy) without
   the copies; the fp32 weights are put back when ``train()`` returns or fails.

4. **No padding, prompt once** (:func:`~alignkit.plugins.common.packed_forward.packed_forwards`): the fused-head
   forwards run the real tokens of a right-padded batch as one packed row, attention per sequence; in DPO the
   prompt a chosen and a rejected row share is packed once and both completions attend to it.

:class:`CPUFastPathMixin` wires them into a trainer: (1), (2), (4) around ``compute_loss``, (3) around ``train``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from alignkit.plugins.common.head_logprobs import OPTIONAL_OUTPUTS, CompactHeadLogProb, WeightCastCache
from alignkit.plugins.common.packed_forward import packed_forwards

__all__ = ["CPUFastPathMixin", "compact_fused_head", "cpu_fast_head", "frozen_linear_cast"]

logger = logging.getLogger("alignkit")


@contextlib.contextmanager
def compact_fused_head() -> Iterator[None]:
    """Within the block, TRL's fused LM head (``trl.trainer.utils.add_fused_lm_head``) scores only the positions whose
    label is not -100 on the CPU as well, through its compact (Triton-device) branch: ``hidden[mask]`` in,
    ``masked_scatter`` out. Each position's log-prob and entropy is computed the same way, so results are equal; the
    head GEMMs and softmax folds shrink from all positions to the labelled ones. The decision is taken in the forward,
    so the backward of a forward run inside the block is compact too. (Seam pinned by tests/test_seams.py.)"""
    import trl.trainer.utils as trl_utils

    original = trl_utils._use_triton
    trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield
    finally:
        trl_utils._use_triton = original


class _CompactHeadApply:
    """Stands in for ``trl.trainer.utils._ChunkedLogProbFunction``: TRL calls ``.apply(...)`` with its arguments."""

    def __init__(self, cache: WeightCastCache):
        self.cache = cache

    def apply(self, hidden, weight, bias, targets, temperature, chunk_size, softcap=None, scale=1.0, outputs=None):
        device = hidden.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        outputs = OPTIONAL_OUTPUTS if outputs is None else outputs
        cast = self.cache.get(weight, dtype)
        return CompactHeadLogProb.apply(
            hidden, weight, bias, targets, temperature, chunk_size, softcap, scale, outputs, cast
        )


@contextlib.contextmanager
def cpu_fast_head(cache: WeightCastCache | None = None) -> Iterator[None]:
    """:func:`compact_fused_head` plus TRL's head function swapped for
    :class:`~alignkit.plugins.common.head_logprobs.CompactHeadLogProb`, for forwards run inside the block (their
    backward is bound at forward time). ``cache`` keeps the compute-dtype copy of a frozen head across calls.

    The swap is process-wide while the block runs: two trainers must not run their forwards concurrently in
    threads of one process (bench/benchlib.py's baton runs one at a time)."""
    import trl.trainer.utils as trl_utils

    original = trl_utils._ChunkedLogProbFunction
    trl_utils._ChunkedLogProbFunction = _CompactHeadApply(cache or WeightCastCache())
    try:
        with compact_fused_head():
            yield
    finally:
        trl_utils._ChunkedLogProbFunction = original


def _embedding_params(models: Iterable[nn.Module]) -> set[int]:
    return {id(p) for m in models for mod in m.modules() if isinstance(mod, nn.Embedding) for p in mod.parameters()}


def _match_weight_dtype(module: nn.Linear, args: tuple):
    """Forward pre-hook: outside autocast (e.g. ``generate`` for logged samples), feed a cast layer its weight's
    dtype, as autocast would; the forward hook hands the result back in the caller's dtype."""
    x = args[0]
    if torch.is_autocast_enabled(x.device.type) or x.dtype == module.weight.dtype or not x.is_floating_point():
        return None
    module._alignkit_caller_dtype = x.dtype
    return (x.to(module.weight.dtype), *args[1:])


def _restore_caller_dtype(module: nn.Linear, args: tuple, output: torch.Tensor):
    dtype = module.__dict__.pop("_alignkit_caller_dtype", None)
    return None if dtype is None else output.to(dtype)


@contextlib.contextmanager
def frozen_linear_cast(models: Iterable[nn.Module | None], dtype: torch.dtype) -> Iterator[int]:
    """Within the block, every frozen floating-point ``nn.Linear`` weight and bias of ``models`` holds a ``dtype``
    copy; the originals are restored on exit, also on error. Yields the number of parameters cast.

    Parameters shared with an ``nn.Embedding`` (a tied LM head) stay as they are: embedding lookups do not autocast,
    so casting them would change the residual stream's dtype, not only the matmuls. Quantized (integer) weights and
    weights that train are left alone. A forward that runs outside autocast inside the block (DPO's logged policy
    samples call ``generate``) gets these layers in ``dtype``, as under autocast, instead of a dtype error."""
    models = [m for m in models if m is not None]
    tied = _embedding_params(models)
    originals: dict[int, tuple[nn.Parameter, torch.Tensor]] = {}
    handles = []
    for model in models:
        for module in model.modules():
            if not isinstance(module, nn.Linear):
                continue
            cast = False
            for param in (module.weight, module.bias):
                if (
                    param is None
                    or param.requires_grad
                    or not param.is_floating_point()
                    or param.dtype == dtype
                    or id(param) in tied
                    or id(param) in originals
                ):
                    continue
                originals[id(param)] = (param, param.data)
                param.data = param.data.to(dtype)
                cast = True
            if cast:
                handles.append(module.register_forward_pre_hook(_match_weight_dtype))
                handles.append(module.register_forward_hook(_restore_caller_dtype))
    try:
        yield len(originals)
    finally:
        for handle in handles:
            handle.remove()
        for param, data in originals.values():
            param.data = data


class CPUFastPathMixin:
    """Trainer mixin for ``args.cpu_fast_path`` (off: TRL's own path, one ``if`` per call).

    Seams: ``compute_loss`` runs inside :meth:`fast_head` (subclasses wrap their ``super().compute_loss`` call in
    it), and ``train`` runs inside :func:`frozen_linear_cast` when the trainer autocasts to bf16 on the CPU."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._check_fast_path_device()

    def _check_fast_path_device(self) -> None:
        if getattr(self.args, "cpu_fast_path", False) and self.accelerator.device.type != "cpu":
            raise ValueError(
                f"cpu_fast_path: the fast path is for CPU training, but this trainer runs on "
                f"{self.accelerator.device.type}; set cpu_fast_path=false (TRL's head is already compact there)"
            )

    def fast_head(self, pack: bool = True, share_pair_prefix: bool = False) -> contextlib.AbstractContextManager:
        """:func:`cpu_fast_head` and, with ``pack``, padding-free forwards
        (:func:`~alignkit.plugins.common.packed_forward.packed_forwards`, with ``share_pair_prefix`` for DPO's
        chosen/rejected rows) when the fast path is on, else a no-op. Usable from TRL's ``__init__`` too (DPO's
        precomputed reference log-probs run there)."""
        if not self.args.cpu_fast_path:
            return contextlib.nullcontext()
        self._check_fast_path_device()
        cache = self.__dict__.setdefault("_head_cast_cache", WeightCastCache())
        stack = contextlib.ExitStack()
        stack.enter_context(cpu_fast_head(cache))
        if pack:
            models = [self.model, getattr(self, "ref_model", None)]
            stack.enter_context(packed_forwards(models, share_pair_prefix))
        return stack

    def train(self, *args, **kwargs):
        if not (self.args.cpu_fast_path and self.accelerator.mixed_precision == "bf16"):
            return super().train(*args, **kwargs)
        models = [self.model, getattr(self, "ref_model", None)]
        with frozen_linear_cast(models, torch.bfloat16) as n_cast:
            logger.info("cpu_fast_path: %d frozen linear weights cast to bf16 once for this train()", n_cast)
            return super().train(*args, **kwargs)
