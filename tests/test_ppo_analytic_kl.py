"""plugins/ppo/ppo_analytic_kl.py on hand-built head rows: reference log-probs at the policy's top ids, the mapping of
recorded rows to completion positions, and the cases where it must give up (then PPO reads k3)."""

import math

import pytest
import torch

from alignkit.plugins.ppo.ppo_analytic_kl import HeadRows, analytic_kl, record_head_rows, ref_logps_at


def _rows(n=5, hidden=4, vocab=7, softcap=None, scale=1.0, temperature=0.7, reduced=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    h, w, b = (
        torch.randn(n, hidden, generator=g),
        torch.randn(vocab, hidden, generator=g),
        torch.randn(vocab, generator=g),
    )
    targets = torch.randint(vocab, (n,), generator=g)
    return HeadRows(h, w, b, targets, temperature, softcap, scale, reduced)


def _full_logps(rows):
    a = rows.hidden @ rows.weight.t() + rows.bias
    z = rows.softcap * torch.tanh(rows.scale * a / rows.softcap) if rows.softcap else rows.scale * a
    return torch.log_softmax(z / rows.temperature, -1)


@pytest.mark.parametrize("softcap,scale", [(None, 1.0), (None, 0.5), (3.0, 1.0)])
@pytest.mark.parametrize("reduced", [False, True])
def test_ref_logps_at_ids_equal_the_full_log_softmax(softcap, scale, reduced):
    rows = _rows(softcap=softcap, scale=scale, reduced=reduced)
    full = _full_logps(rows)
    ids = torch.tensor([[0, 3], [6, 1], [2, 2], [5, 4], [1, 0]])
    target_logps = full.gather(1, rows.targets[:, None])[:, 0]  # what the head returned for each row's target
    got = ref_logps_at(rows, ids, target_logps)
    torch.testing.assert_close(got, full.gather(1, ids), atol=1e-5, rtol=1e-5)


def test_log_z_comes_from_the_heads_own_target_logp_in_fp32():
    # In fp32 log Z is z_y − log π_ref(y): a target log-prob 0.1 lower moves every returned log-prob 0.1 lower.
    rows = _rows()
    full = _full_logps(rows)
    target_logps = full.gather(1, rows.targets[:, None])[:, 0]
    ids = torch.zeros(5, 1, dtype=torch.long)
    shifted = ref_logps_at(rows, ids, target_logps - 0.1)
    torch.testing.assert_close(shifted, full[:, :1] - 0.1, atol=1e-5, rtol=1e-5)


def test_analytic_kl_maps_rows_to_the_valid_positions_in_order():
    # Two sequences of 3 positions; the last position of sequence 1 is padding. Rows are recorded in two head calls
    # (TRL's batch chunks), row-major over the valid positions.
    rows = _rows(n=5, vocab=7)
    full_ref = _full_logps(rows)
    policy = torch.log_softmax(torch.randn(5, 7, generator=torch.Generator().manual_seed(1)), -1)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    ids = torch.zeros(2, 3, dtype=torch.long)
    ids[mask.bool()] = rows.targets
    top = torch.zeros(2, 3, 7), torch.zeros(2, 3, 7, dtype=torch.long)
    top_logp, top_ids = policy.topk(7, dim=-1)  # k covers the vocabulary: the exact KL
    top[0][mask.bool()], top[1][mask.bool()] = top_logp, top_ids
    ref = torch.zeros(2, 3)
    ref[mask.bool()] = full_ref.gather(1, rows.targets[:, None])[:, 0]
    first = HeadRows(rows.hidden[:3], rows.weight, rows.bias, rows.targets[:3], 0.7, None, 1.0, False)
    second = HeadRows(rows.hidden[3:], rows.weight, rows.bias, rows.targets[3:], 0.7, None, 1.0, False)
    kl, tail = analytic_kl(top, [first, second], ref, ids, mask)
    exact = (policy.exp() * (policy - full_ref)).sum(-1)
    torch.testing.assert_close(kl[mask.bool()], exact, atol=1e-5, rtol=1e-4)
    assert kl[1, 2] == 0 and tail.abs().max() < 1e-5
    # The rows are not this rollout's: a missing row, a different token order, a partitioned (ZeRO-3) weight.
    assert analytic_kl(top, [first], ref, ids, mask) is None
    assert not torch.equal(rows.targets, rows.targets[[3, 4, 0, 1, 2]])  # else the swap below would not show
    assert analytic_kl(top, [second, first], ref, ids, mask) is None
    gone = HeadRows(rows.hidden[:3], torch.empty(0), None, rows.targets[:3], 0.7, None, 1.0, False)
    assert analytic_kl(top, [gone, second], ref, ids, mask) is None


def test_record_head_rows_passes_the_call_through_and_keeps_its_inputs():
    import trl.trainer.utils as trl_utils

    calls = []

    class Inner:
        @staticmethod
        def apply(*args):
            calls.append(args)
            return ("result",)

    original = trl_utils._ChunkedLogProbFunction
    trl_utils._ChunkedLogProbFunction = Inner
    try:
        sink = []
        h, w = torch.randn(3, 4), torch.randn(7, 4)
        with record_head_rows(sink):
            out = trl_utils._ChunkedLogProbFunction.apply(
                h, w, None, torch.tensor([1, 2, 3]), 0.5, 128, None, 1.0, None
            )
        assert trl_utils._ChunkedLogProbFunction is Inner  # restored
        assert out == ("result",) and len(calls) == 1 and calls[0][4] == 0.5
        assert len(sink) == 1 and torch.equal(sink[0].hidden, h) and sink[0].temperature == 0.5
        assert sink[0].reduced_precision is False
        with record_head_rows(sink):
            trl_utils._ChunkedLogProbFunction.apply(h.bfloat16(), w, None, torch.tensor([1, 2, 3]), 1.0, 128)
        assert sink[1].reduced_precision is True and math.isclose(sink[1].scale, 1.0)
    finally:
        trl_utils._ChunkedLogProbFunction = original
