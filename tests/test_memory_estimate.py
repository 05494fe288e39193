"""The memory arithmetic the README quotes (alignkit/memory_estimate.py), with the sums written out."""

from pathlib import Path

from alignkit.memory_estimate import NF4_BYTES, QWEN25, ZERO3_BYTES, qlora_bytes, table, zero3_bytes

ROOT = Path(__file__).resolve().parent.parent


def test_parameter_counts_match_the_published_sizes():
    # Qwen2.5 model cards: 0.49 B, 1.54 B, 7.61 B parameters
    assert [round(s.params() / 1e9, 2) for s in QWEN25] == [0.49, 1.54, 7.62]
    assert abs(QWEN25[2].params() - 7.61e9) / 7.61e9 < 0.002


def test_lora_params_of_the_smallest_model_by_hand():
    # Qwen2.5-0.5B, r=32: q 32*(896+896)=57344, k and v 32*(896+128)=32768 each, o 57344,
    # gate and up 32*(896+4864)=184320 each, down 184320; per layer 733184; 24 layers: 17,596,416
    assert QWEN25[0].lora_params(32) == 17_596_416


def test_bytes_per_param():
    assert abs(NF4_BYTES - 0.5159) < 1e-4  # 4 bits + 8/64 (fp8 absmax) + 32/(64*256) (fp32 per 256 blocks)
    assert ZERO3_BYTES == 16
    seven_b = QWEN25[2]
    assert zero3_bytes(seven_b, 8) == 16 * seven_b.params() / 8
    assert qlora_bytes(seven_b, 32) > NF4_BYTES * seven_b.params()  # the 16-bit embeddings and LoRA state add on


def test_readme_quotes_the_computed_table():
    assert table() in (ROOT / "README.md").read_text()
