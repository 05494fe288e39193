"""The ``cpu_fast_path`` config field, defined and validated once for the SFT, DPO and reward configs (pure Python).

What the field turns on is in :mod:`alignkit.plugins.common.fast_path`; bench/train_speed.py measures it
(bench/results/train_speed_<cpu kind>.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CPUFastPathFields"]


@dataclass
class CPUFastPathFields:
    """Config mixin: ``cpu_fast_path``, off by default; put it before the TRL config in the bases."""

    cpu_fast_path: bool = field(
        default=False,
        metadata={
            "help": "CPU fast path (alignkit.plugins.common.fast_path): the LM head projects only the scored "
            "(completion) positions, with token tiles, an fp32 softmax and gradient GEMMs in the compute dtype; "
            "under bf16 autocast the frozen base's linear weights are cast to bf16 once per train() instead of on "
            "every forward. Loss and gradients equal TRL's path in fp32 and agree within bf16 rounding under bf16. "
            "Reward models have no LM head: there only the frozen-base cast applies. CPU only; false = TRL's path."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.cpu_fast_path, bool):
            raise ValueError(f"cpu_fast_path must be true or false, got {self.cpu_fast_path!r}")
        if self.cpu_fast_path and self.fp16:
            raise ValueError("cpu_fast_path: fp16 is not supported (the fast path runs fp32 or bf16); set fp16=false")
