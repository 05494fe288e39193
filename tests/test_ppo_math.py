"""PPO maths against hand-computed values (arithmetic in the comments)."""

import math

import pytest
import torch

from alignkit.plugins.kl import AdaptiveKLController, make_kl_controller
from alignkit.plugins.ppo.ppo_math import (
    apply_missing_eos_penalty,
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    gae,
    masked_whiten,
    per_token_rewards,
)

T = torch.tensor


def test_gae_hand_computed_gamma_1():
    # r = [0.1, 1.0, pad], V = [0.5, 0.2, pad], γ = 1, λ = 0.5; V past the end is 0.
    # t=1: δ = 1.0 + 1·0 − 0.2 = 0.8;             A1 = 0.8
    # t=0: δ = 0.1 + 1·0.2 − 0.5 = −0.2;          A0 = −0.2 + 1·0.5·0.8 = 0.2
    # returns = A + V = [0.7, 1.0, 0 (pad)]
    adv, ret = gae(T([[0.1, 1.0, 9.0]]), T([[0.5, 0.2, 7.0]]), T([[1, 1, 0]]), gamma=1.0, lam=0.5)
    torch.testing.assert_close(adv, T([[0.2, 0.8, 0.0]]))
    torch.testing.assert_close(ret, T([[0.7, 1.0, 0.0]]))


def test_gae_hand_computed_discounted_batch():
    # Row 0 as above with γ = 0.9, λ = 0.5:
    # t=1: δ = 1.0 − 0.2 = 0.8;                   A1 = 0.8
    # t=0: δ = 0.1 + 0.9·0.2 − 0.5 = −0.22;       A0 = −0.22 + 0.45·0.8 = 0.14;  R = [0.64, 1.0]
    # Row 1, one token: δ = 2.0 − 1.5 = 0.5 = A;  R = 2.0
    adv, ret = gae(
        T([[0.1, 1.0, 0.0], [2.0, 5.0, 5.0]]),
        T([[0.5, 0.2, 0.0], [1.5, 3.0, 3.0]]),
        T([[1, 1, 0], [1, 0, 0]]),
        gamma=0.9,
        lam=0.5,
    )
    torch.testing.assert_close(adv, T([[0.14, 0.8, 0.0], [0.5, 0.0, 0.0]]))
    torch.testing.assert_close(ret, T([[0.64, 1.0, 0.0], [2.0, 0.0, 0.0]]))


def test_gae_lambda_1_gamma_1_is_monte_carlo_return_minus_value():
    # λ = γ = 1: A_t = Σ_{k≥t} r_k − V_t. r = [1, 2, 3] → tails [6, 5, 3]; V = [1, 1, 1] → A = [5, 4, 2]
    adv, ret = gae(T([[1.0, 2.0, 3.0]]), T([[1.0, 1.0, 1.0]]), T([[1, 1, 1]]), gamma=1.0, lam=1.0)
    torch.testing.assert_close(adv, T([[5.0, 4.0, 2.0]]))
    torch.testing.assert_close(ret, T([[6.0, 5.0, 3.0]]))


def test_masked_whiten_ignores_padding():
    # valid x = [1, 2, 3]: μ = 2, σ² = (1 + 0 + 1)/3 = 2/3 → (x − μ)/√(2/3) = [−1.2247, 0, 1.2247]; pad 100 ignored
    x, mask = T([[1.0, 2.0], [3.0, 100.0]]), T([[1, 1], [1, 0]])
    s = 1 / math.sqrt(2 / 3)
    torch.testing.assert_close(masked_whiten(x, mask), T([[-s, 0.0], [s, 0.0]]))
    # shift_mean=False adds μ back: [2 − 1.2247, 2, 2 + 1.2247]
    torch.testing.assert_close(masked_whiten(x, mask, shift_mean=False), T([[2 - s, 2.0], [2 + s, 0.0]]))


def test_per_token_rewards_score_on_last_valid_token():
    # β = 0.5: row 0 → [−0.5·0.1, −0.5·0.2 + 1.0, pad] = [−0.05, 0.9, 0]; row 1 has no valid token → all 0
    kl = T([[0.1, 0.2, 0.3], [0.5, 0.5, 0.5]])
    rewards = per_token_rewards(kl, T([1.0, 2.0]), T([[1, 1, 0], [0, 0, 0]]), beta=0.5)
    torch.testing.assert_close(rewards, T([[-0.05, 0.9, 0.0], [0.0, 0.0, 0.0]]))


def test_clipped_policy_loss_hand_case():
    # ρ = [1.5, 0.5, 1.0], A = [1, 1, −2], ε = 0.2
    # t0: max(−1.5, −1·1.2) = −1.2 (clipped)   t1: max(−0.5, −0.8) = −0.5   t2: max(2, 2) = 2;  pad ignored
    # loss = (−1.2 − 0.5 + 2)/3 = 0.1, clip fraction = 1/3
    logp = torch.log(T([[1.5, 0.5, 1.0, 9.0]]))
    old, adv, mask = torch.zeros(1, 4), T([[1.0, 1.0, -2.0, 5.0]]), T([[1, 1, 1, 0]])
    loss, clipfrac = clipped_policy_loss(logp, old, adv, mask, 0.2)
    torch.testing.assert_close(loss, T(0.1))
    torch.testing.assert_close(clipfrac, T(1 / 3))
    # ε_high = 0.6: clip(1.5, 0.8, 1.6) = 1.5 → nothing clipped, loss = (−1.5 − 0.5 + 2)/3 = 0
    loss, clipfrac = clipped_policy_loss(logp, old, adv, mask, 0.2, clip_high=0.6)
    torch.testing.assert_close(loss, T(0.0))
    torch.testing.assert_close(clipfrac, T(0.0))


def test_clipped_policy_loss_gradient_zero_when_clipped():
    # At ρ = 1.5 > 1 + ε with A > 0 the clipped (constant) branch wins: no gradient.
    logp = torch.log(T([[1.5]])).requires_grad_()
    loss, _ = clipped_policy_loss(logp, torch.zeros(1, 1), T([[1.0]]), T([[1]]), 0.2)
    loss.backward()
    assert logp.grad.abs().item() == 0.0


def test_clipped_value_loss_hand_case():
    # old V = 0, ε_v = 0.2, R = 1
    # t0: V = 0.5 → (0.5 − 1)² = 0.25; clipped V = 0.2 → (0.2 − 1)² = 0.64 → 0.64 (clipped)
    # t1: V = −0.1 (inside the clip) → (−1.1)² = 1.21 both ways
    # loss = ½·(0.64 + 1.21)/2 = 0.4625, value clip fraction = 1/2
    loss, vclip = clipped_value_loss(T([[0.5, -0.1, 3.0]]), torch.zeros(1, 3), T([[1.0, 1.0, 0.0]]), T([[1, 1, 0]]))
    torch.testing.assert_close(loss, T(0.4625))
    torch.testing.assert_close(vclip, T(0.5))


def test_explained_variance():
    # R = [1, 2, 3], V = [1, 2, 2]: Var(R) = 2/3; R − V = [0, 0, 1]: mean 1/3, Var = (1/9 + 1/9 + 4/9)/3 = 2/9
    # EV = 1 − (2/9)/(2/3) = 2/3
    ev = explained_variance(T([[1.0, 2.0, 2.0, 8.0]]), T([[1.0, 2.0, 3.0, 0.0]]), T([[1, 1, 1, 0]]))
    torch.testing.assert_close(ev, T(2 / 3))
    assert explained_variance(T([[0.0, 1.0]]), T([[2.0, 2.0]]), T([[1, 1]])).item() == 0.0  # Var(R) = 0


def test_missing_eos_penalty():
    # the truncated second sequence loses 1.0: [1, 0.5 − 1] = [1, −0.5]; None/0 disables it
    out = apply_missing_eos_penalty(T([1.0, 0.5]), T([True, False]), 1.0)
    torch.testing.assert_close(out, T([1.0, -0.5]))
    torch.testing.assert_close(apply_missing_eos_penalty(T([1.0, 0.5]), T([True, False]), None), T([1.0, 0.5]))


def test_adaptive_controller_single_updates():
    # error = clip(KL/target − 1, ±0.2); β ← β·(1 + error·n/horizon)
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    assert ctl.update(12.0, 1000) == pytest.approx(0.1 * (1 + 0.2 * 0.1))  # KL too high → β up to 0.102
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    assert ctl.update(3.0, 1000) == pytest.approx(0.1 * (1 - 0.2 * 0.1))  # KL too low → β down to 0.098


@pytest.mark.parametrize("beta0", [0.02, 0.5])
def test_adaptive_controller_drives_kl_to_target(beta0):
    # Toy policy whose KL responds to the penalty as KL = 0.6/β: the fixed point for target 6 is β* = 0.1.
    ctl = make_kl_controller(beta0, target=6.0, horizon=100)
    for _ in range(300):
        ctl.update(0.6 / ctl.value, 50)
    assert ctl.value == pytest.approx(0.1, rel=0.02)
    assert 0.6 / ctl.value == pytest.approx(6.0, rel=0.02)
