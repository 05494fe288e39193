"""bench/kl_reading_noise.py's three sequence-KL readings on a stand-in policy with known next-token distributions."""

import contextlib
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from kl_reading_noise import sequence_kls  # noqa: E402


class FixedLogits:
    """Next-token logits that do not depend on the input: ``policy`` with the adapter on, ``ref`` with it off."""

    def __init__(self, policy, ref):
        self.policy, self.ref, self.off = policy, ref, False

    def __call__(self, input_ids, attention_mask):
        row = self.ref if self.off else self.policy
        return SimpleNamespace(logits=row.expand(input_ids.size(0), input_ids.size(1), -1).clone())

    @contextlib.contextmanager
    def disable_adapter(self):
        self.off = True
        try:
            yield
        finally:
            self.off = False


def test_three_readings_against_hand_values():
    p, q = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.2, 0.5, 0.3])
    model = FixedLogits(p.log(), q.log())
    # 2 rows: prompt of 2 tokens, completion of 3 tokens (row 1 has its last token masked)
    ids = torch.tensor([[0, 0, 0, 1, 2], [0, 0, 2, 2, 0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]]).bool()
    attn = torch.cat([torch.ones(2, 2, dtype=torch.long), mask.long()], 1)
    k1, k3, analytic, top2 = sequence_kls(model, ids, attn, 2, mask, temperature=1.0, chunk=1, top_k=2)
    kl = (p * (p / q).log()).sum()
    torch.testing.assert_close(analytic, torch.stack([3 * kl, 2 * kl]))  # per-token KL x valid tokens
    # top 2 of 3 (p's 0.5, 0.3): 0.5 log 2.5 + 0.3 log 0.6, the last token pooled: 0.2 log(0.2 / 0.3), here exact
    top_kl = 0.5 * math.log(2.5) + 0.3 * math.log(0.6) + 0.2 * math.log(0.2 / 0.3)
    torch.testing.assert_close(top2, torch.tensor([3 * top_kl, 2 * top_kl]))
    log_ratio = (p / q).log()  # k1 per token = log p(y) - log q(y)
    torch.testing.assert_close(k1, torch.stack([log_ratio[[0, 1, 2]].sum(), log_ratio[[2, 2]].sum()]))
    r = q / p
    k3_tok = r - 1 - r.log()
    torch.testing.assert_close(k3, torch.stack([k3_tok[[0, 1, 2]].sum(), k3_tok[[2, 2]].sum()]))
    # k1 and k3 average to the analytic value over y ~ p
    assert (p * log_ratio).sum().item() == pytest.approx(kl.item()) and (p * k3_tok).sum().item() == pytest.approx(
        kl.item()
    )


def test_same_policy_reads_zero():
    p = torch.tensor([0.5, 0.3, 0.2]).log()
    ids = torch.tensor([[0, 1, 2, 0]])
    mask = torch.ones(1, 2, dtype=torch.bool)
    out = sequence_kls(FixedLogits(p, p), ids, torch.ones(1, 4, dtype=torch.long), 2, mask, temperature=0.7)
    for reading in out:
        assert reading.abs().max().item() < 1e-6
