"""One run, several processes: which process writes, and how a failure on one rank stops every rank.

Under ``accelerate launch`` (torchrun underneath) every rank runs the same ``alignkit train``. The rules:

- rank 0 alone decides anything that touches the file system (``runs/<recipe>.partial/``, the embedded-model cache,
  a start run's merge), and tells the other ranks the outcome, so they proceed or stop together
  (:func:`main_decides`);
- rank 0 alone writes the run's metadata, logs, report and eval; every rank takes part in saving the weights
  (FSDP gathers its shards there), but only rank 0 writes them;
- a bad input is reported on one line: by rank 0, or by the one rank that hit it (:func:`report_error`). torchrun's
  agent stops the other ranks as soon as one exits non-zero, and every collective wait is bounded by
  ``ddp_timeout`` (TrainingArguments; seconds), so a failure never hangs the job.

The rank comes from the environment torchrun sets (``RANK``, ``WORLD_SIZE``), so asking "am I rank 0?" never starts
a process group.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

from alignkit.errors import AlignkitError

T = TypeVar("T")

# How long a rank other than 0 waits before printing its own error: when every rank hit the same bad input, rank 0
# prints it and exits first, and torchrun's agent stops this rank during the wait, so the user sees one line.
FOLLOWER_ERROR_GRACE_SECONDS = 10.0


class StoppedByRankZero(AlignkitError):
    """Rank 0 failed a step every rank depends on (and reported it); this rank stops too, silently."""


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    return world_size() > 1


def sharding_engine() -> str | None:
    """The engine an ``accelerate launch`` asked for that shards the model (its environment): "FSDP", "DeepSpeed",
    or None (plain DDP, or one process)."""
    for name, var in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED")):
        if os.environ.get(var, "false").lower() == "true":
            return name
    return None


def is_main() -> bool:
    return rank() == 0


def main_decides(decide: Callable[[], T], training_args: Any) -> T:
    """Run ``decide`` on rank 0 only and hand its (picklable) result to every rank.

    If ``decide`` raises on rank 0, rank 0 re-raises it and every other rank raises :class:`StoppedByRankZero`,
    so all ranks exit together and only rank 0 reports. Without a distributed launch this is ``decide()``."""
    if not is_distributed():
        return decide()
    import torch.distributed as dist

    _ = training_args.device  # joins the process group (gloo on CPU, nccl on GPU) with timeout=ddp_timeout
    if not dist.is_initialized():
        raise AlignkitError(f"WORLD_SIZE={world_size()} but no process group was started; launch with accelerate")
    failure: BaseException | None = None
    payload: list[Any] = [None]
    if is_main():
        try:
            payload = [("ok", decide())]
        except BaseException as exc:  # noqa: B036 - Ctrl-C or SIGTERM on rank 0 must stop the other ranks too
            failure = exc
            payload = [("failed", str(exc))]
    dist.broadcast_object_list(payload, src=0)
    outcome, value = payload[0]
    if failure is not None:
        raise failure
    if outcome == "failed":
        raise StoppedByRankZero(f"rank 0 failed: {value}")
    return value


def report_error(exc: AlignkitError) -> None:
    """Print ``exc`` as the one-line error, once per job (see the module docstring)."""
    if isinstance(exc, StoppedByRankZero):
        return
    if not is_distributed():
        print(f"alignkit: error: {exc}", file=sys.stderr)
        return
    if is_main():
        print(f"alignkit: error: {exc}", file=sys.stderr, flush=True)
        return
    time.sleep(FOLLOWER_ERROR_GRACE_SECONDS)  # rank 0 with the same error ends the job before this rank prints
    print(f"alignkit: error on rank {rank()} of {world_size()}: {exc}", file=sys.stderr, flush=True)


def fsdp_on_cpu(trainer: Any) -> bool:
    """Make an FSDP launch shard on CPUs too; returns whether it had to step in.

    accelerate 1.16 turns ``ACCELERATE_USE_FSDP`` into FSDP only for accelerator devices (``AcceleratorState``
    switches to ``DistributedType.FSDP`` inside its GPU/XPU/NPU branch); on CPUs (gloo, ``MULTI_CPU``) it silently
    trains plain DDP. FSDP2's ``fully_shard`` itself works on CPU tensors over gloo, so this sets the state the way
    accelerate would on a GPU, before ``trainer.train()`` wraps the model."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true" or not is_distributed():
        return False
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = trainer.accelerator.state
    if state.distributed_type != DistributedType.MULTI_CPU:
        return False
    plugin = state.fsdp_plugin if getattr(state, "fsdp_plugin", None) is not None else FullyShardedDataParallelPlugin()
    state.fsdp_plugin = plugin
    state.distributed_type = DistributedType.FSDP
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP  # later AcceleratorStates copy it
    trainer.is_fsdp_enabled = True
    return True


# What gloo and NCCL say when a collective loses a rank that exited (the rank that failed reports for itself).
_PEER_GONE = (
    "Connection closed by peer",
    "Connection reset by peer",
    "remote worker",
    "NCCL communicator was aborted",
)


def stopped_by_peer(exc: BaseException) -> bool:
    """Whether ``exc`` is this rank's collective failing because another rank of the job already exited."""
    return is_distributed() and isinstance(exc, RuntimeError) and any(m in str(exc) for m in _PEER_GONE)
