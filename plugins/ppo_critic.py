"""The PPO critic: a scalar value head, and a context manager that runs the critic's LoRA adapter."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["ValueCritic", "active_adapter"]


class ValueCritic(nn.Module):
    """Scalar value head V(s_t) = w·h_t + b on hidden states, optionally owning a separate backbone."""

    def __init__(self, hidden_size: int, backbone: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(hidden_size, 1)
        # Small (|V| ≈ 0.1) rather than zero: with w = 0 and LoRA B = 0 the critic adapter gets no gradient for two
        # steps, since each blocks the other's gradient.
        nn.init.normal_(self.head.weight, std=0.1 / hidden_size**0.5)
        nn.init.zeros_(self.head.bias)


@contextmanager
def active_adapter(layers: list[nn.Module], name: str) -> Iterator[None]:
    # PEFT's set_adapter also flips requires_grad (freezing the other adapter), so swap the active name only.
    previous = [layer._active_adapter for layer in layers]
    for layer in layers:
        layer._active_adapter = name
    try:
        yield
    finally:
        for layer, prev in zip(layers, previous, strict=True):
            layer._active_adapter = prev
