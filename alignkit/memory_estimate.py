"""Memory per GPU for the Qwen2.5 sizes under QLoRA and under DeepSpeed ZeRO-3: the arithmetic the README quotes.

``python -m alignkit.memory_estimate`` prints the README's table. Parameter counts are computed from the models'
published configs (hidden size, layers, heads, MLP width, vocabulary), not looked up. Bytes per parameter:

- QLoRA: nf4 base weights with double quantization, 4 bits + 0.127 bits of block constants (bitsandbytes: one fp8
  absmax per 64 weights, one fp32 per 256 of those) = 0.516 bytes/param for the linear layers; embeddings and norms
  stay 16-bit (2 bytes). LoRA: r x (d_in + d_out) params per adapted linear layer, trained in fp32: 4 (weight) +
  4 (grad) + 8 (AdamW m, v) = 16 bytes/param.
- ZeRO-3 full fine-tuning in bf16 mixed precision: 2 (bf16 weight) + 2 (bf16 grad) + 4 (fp32 master weight) + 8
  (AdamW m, v) = 16 bytes/param, divided by the number of GPUs N.

Activations are an estimate (they depend on the kernels): per sequence of s tokens with gradient checkpointing, the
bf16 hidden state at every layer boundary (2·s·h bytes per layer), one layer recomputed in full (Korthikanti et al.
2022: s·h·(34 + 5·a·s/h) bytes, without flash attention's saving), and the LM head's fp32 logits and their
gradient (2 x 4·s·V bytes).
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30
NF4_BYTES = (4 + 8 / 64 + 32 / (64 * 256)) / 8  # 4-bit codes + fp8 absmax per 64 + fp32 per 256 absmax blocks
LORA_BYTES = 4 + 4 + 8  # fp32 weight, fp32 grad, AdamW m and v
ZERO3_BYTES = 2 + 2 + 4 + 8  # bf16 weight and grad, fp32 master weight, AdamW m and v


@dataclass(frozen=True)
class Shape:
    """A Qwen2-style decoder: hidden h, layers, attention heads a, key/value heads, MLP width, vocabulary."""

    name: str
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int
    tied: bool

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(d_in, d_out) of every linear layer of one decoder layer: q, k, v, o, gate, up, down."""
        h, kv, mlp = self.hidden, self.kv_heads * (self.hidden // self.heads), self.intermediate
        return [(h, h), (h, kv), (h, kv), (h, h), (h, mlp), (h, mlp), (mlp, h)]

    def linear_params(self) -> int:
        biases = self.hidden + 2 * self.kv_heads * (self.hidden // self.heads)  # Qwen2 has q/k/v biases
        return self.layers * (sum(i * o for i, o in self.linear_shapes()) + biases)

    def other_params(self) -> int:
        """Embeddings (and an untied LM head) and RMSNorm weights: not quantized by QLoRA."""
        embeddings = self.vocab * self.hidden * (1 if self.tied else 2)
        return embeddings + self.layers * 2 * self.hidden + self.hidden

    def params(self) -> int:
        return self.linear_params() + self.other_params()

    def lora_params(self, r: int) -> int:
        return self.layers * sum(r * (i + o) for i, o in self.linear_shapes())

    def activation_bytes(self, seq: int) -> float:
        h, a = self.hidden, self.heads
        boundaries = self.layers * 2 * seq * h
        one_layer = seq * h * (34 + 5 * a * seq / h)
        logits = 2 * 4 * seq * self.vocab
        return boundaries + one_layer + logits


QWEN25 = [
    Shape("Qwen2.5-0.5B", hidden=896, layers=24, heads=14, kv_heads=2, intermediate=4864, vocab=151936, tied=True),
    Shape("Qwen2.5-1.5B", hidden=1536, layers=28, heads=12, kv_heads=2, intermediate=8960, vocab=151936, tied=True),
    Shape("Qwen2.5-7B", hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944, vocab=152064, tied=False),
]


def qlora_bytes(shape: Shape, r: int) -> float:
    """Weights + LoRA training state on one GPU (each DDP rank holds the same)."""
    return NF4_BYTES * shape.linear_params() + 2 * shape.other_params() + LORA_BYTES * shape.lora_params(r)


def zero3_bytes(shape: Shape, gpus: int) -> float:
    """Full fine-tuning state per GPU under ZeRO-3: everything partitioned N ways."""
    return ZERO3_BYTES * shape.params() / gpus


def table(r: int = 32, seq: int = 2048, gpus: int = 8) -> str:
    rows = [
        "| model | params | LoRA params (r=32, all-linear) | QLoRA weights + LoRA state, per GPU | "
        f"ZeRO-3 full fine-tuning state, per GPU (N={gpus}) | activations per {seq}-token sequence (estimate) |",
        "|---|---|---|---|---|---|",
    ]
    for s in QWEN25:
        rows.append(
            f"| {s.name} | {s.params() / 1e9:.2f} B | {s.lora_params(r) / 1e6:.1f} M | "
            f"{qlora_bytes(s, r) / GIB:.2f} GiB | {zero3_bytes(s, gpus) / GIB:.2f} GiB "
            f"(all: {zero3_bytes(s, 1) / GIB:.1f} GiB) | {s.activation_bytes(seq) / GIB:.2f} GiB |"
        )
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
