"""KL controllers and estimators: exact numbers worked out by hand."""

import math
import pickle

import pytest
import torch

from alignkit.plugins.kl import (
    AdaptiveKLController,
    FixedKLController,
    kl_estimate,
    kl_k1,
    kl_k2,
    kl_k3,
    make_kl_controller,
    masked_mean,
)


def test_adaptive_moves_beta_up_when_kl_above_target():
    ctl = AdaptiveKLController(init_kl_coef=0.1, target=6.0, horizon=10_000)
    # error = clip(6.6/6 − 1, ±0.2) = 0.1; β = 0.1 · (1 + 0.1 · 1000/10000) = 0.1 · 1.01 = 0.101
    assert ctl.update(6.6, n_steps=1000) == pytest.approx(0.101)
    assert ctl.value == pytest.approx(0.101)


def test_adaptive_moves_beta_down_when_kl_below_target():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    # error = 5.4/6 − 1 = −0.1; β = 0.1 · (1 − 0.1 · 0.1) = 0.099
    assert ctl.update(5.4, n_steps=1000) == pytest.approx(0.099)


def test_adaptive_error_is_clipped_at_plus_minus_0_2():
    up = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    # error = 60/6 − 1 = 9 → clipped to 0.2; β = 0.1 · (1 + 0.2 · 0.1) = 0.102
    assert up.update(60.0, 1000) == pytest.approx(0.102)
    down = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    # error = 0/6 − 1 = −1 → clipped to −0.2; β = 0.1 · (1 − 0.02) = 0.098
    assert down.update(0.0, 1000) == pytest.approx(0.098)
    # Negative k1 readings are legal and also clip at −0.2.
    assert down.update(-3.0, 1000) == pytest.approx(0.098 * 0.98)


def test_adaptive_at_target_or_zero_steps_is_unchanged():
    ctl = AdaptiveKLController(0.1, target=6.0, horizon=10_000)
    assert ctl.update(6.0, 512) == pytest.approx(0.1)
    assert ctl.update(100.0, 0) == pytest.approx(0.1)


def test_adaptive_step_fraction_capped_so_beta_stays_positive():
    ctl = AdaptiveKLController(0.1, target=1.0, horizon=10)
    # n/h = 100/10 = 10 → capped at 1; error −0.2 → β = 0.1 · 0.8 = 0.08 (uncapped would be 0.1 · (1 − 2) < 0)
    assert ctl.update(0.0, 100) == pytest.approx(0.08)


def test_fixed_controller_never_moves():
    ctl = FixedKLController(0.05)
    assert ctl.update(100.0, 10_000) == 0.05
    assert FixedKLController(0.0).value == 0.0


@pytest.mark.parametrize(
    ("factory", "needle"),
    [
        (lambda: AdaptiveKLController(0.1, target=0.0, horizon=10), "target"),
        (lambda: AdaptiveKLController(0.1, target=-1.0, horizon=10), "target"),
        (lambda: AdaptiveKLController(0.1, target=6.0, horizon=0), "horizon"),
        (lambda: AdaptiveKLController(0.0, target=6.0, horizon=10), "init_kl_coef"),
        (lambda: FixedKLController(-0.1), "kl_coef"),
        (lambda: make_kl_controller(0.1, horizon=100), "horizon"),
        (lambda: AdaptiveKLController(0.1, 6.0, 10).update(float("nan"), 1), "current_kl"),
        (lambda: FixedKLController(0.1).update(float("nan"), 1), "current_kl"),
        (lambda: AdaptiveKLController(0.1, 6.0, 10).update(1.0, -1), "n_steps"),
    ],
)
def test_invalid_settings_raise_one_line_value_error_naming_argument(factory, needle):
    with pytest.raises(ValueError, match=needle) as err:
        factory()
    assert "\n" not in str(err.value)


def test_factory_and_state_dict_round_trip():
    assert isinstance(make_kl_controller(0.1), FixedKLController)
    ctl = make_kl_controller(0.1, target=6.0)
    assert isinstance(ctl, AdaptiveKLController) and ctl.horizon == 10_000
    ctl.update(60.0, 1000)  # β = 0.102
    resumed = make_kl_controller(0.1, target=6.0)
    resumed.load_state_dict(ctl.state_dict())
    assert resumed.value == pytest.approx(0.102)
    assert pickle.loads(pickle.dumps(ctl)).value == ctl.value
    with pytest.raises(ValueError, match="kind"):
        FixedKLController(0.1).load_state_dict(ctl.state_dict())


def test_estimators_exact_values():
    logp = torch.tensor([[-1.0, -2.0]])
    ref = torch.tensor([[-2.0, -1.0]])
    # log-ratio logp − ref = [1, −1]
    assert torch.allclose(kl_k1(logp, ref), torch.tensor([[1.0, -1.0]]))
    # k2 = ½·1² = 0.5 both
    assert torch.allclose(kl_k2(logp, ref), torch.tensor([[0.5, 0.5]]))
    # k3 with x = ref − logp = [−1, 1]: e^{−1} + 1 − 1 = 0.367879; e^{1} − 1 − 1 = 0.718282
    expected = torch.tensor([[math.exp(-1), math.exp(1) - 2]])
    assert torch.allclose(kl_k3(logp, ref), expected)
    assert torch.allclose(kl_estimate(logp, ref), expected)  # k3 is the default
    assert torch.equal(kl_k3(ref, ref), torch.zeros_like(ref))


def test_clamp_applies_to_log_ratio_and_prevents_overflow():
    logp = torch.tensor([[-200.0]])
    ref = torch.tensor([[0.0]])
    assert torch.isinf(kl_k3(logp, ref)).all()  # e^{200} overflows float32
    # log-ratio −200 clamped to −10 → x = ref − logp = 10: k3 = e^{10} − 10 − 1
    out = kl_estimate(logp, ref, "k3", clamp=10.0)
    assert out.item() == pytest.approx(math.exp(10) - 11, rel=1e-6)
    assert kl_estimate(logp, ref, "k1", clamp=10.0).item() == pytest.approx(-10.0)
    with pytest.raises(ValueError, match="estimator"):
        kl_estimate(logp, ref, "k4")


def test_masked_mean_ignores_padding_even_if_inf():
    x = torch.tensor([[1.0, 3.0, float("inf")], [2.0, float("nan"), 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    # all: (1 + 3 + 2) / 3 = 2; rows: (1+3)/2 = 2, 2/1 = 2
    assert masked_mean(x, mask).item() == pytest.approx(2.0)
    assert torch.allclose(masked_mean(x, mask, dim=-1), torch.tensor([2.0, 2.0]))
    assert masked_mean(x, torch.zeros_like(mask)).item() == 0.0


def test_topk_analytic_kl_is_exact_when_k_covers_the_vocabulary():
    from alignkit.plugins.common.kl_estimators import kl_topk_analytic

    p, q = torch.tensor([0.5, 0.3, 0.2]), torch.tensor([0.2, 0.5, 0.3])
    kl, tail = kl_topk_analytic(p.log(), q.log())
    # 0.5 log 2.5 + 0.3 log 0.6 + 0.2 log(2/3) = 0.458145 − 0.153248 − 0.081093
    assert kl.item() == pytest.approx(0.5 * math.log(2.5) + 0.3 * math.log(0.6) + 0.2 * math.log(2 / 3), abs=1e-6)
    assert tail.item() == pytest.approx(0.0, abs=1e-6)


def test_topk_analytic_kl_bounds_the_tail_from_below():
    from alignkit.plugins.common.kl_estimators import kl_topk_analytic

    p = torch.tensor([0.5, 0.3, 0.1, 0.1])
    q = torch.tensor([0.2, 0.5, 0.05, 0.25])
    exact = (p * (p / q).log()).sum().item()
    kl, tail = kl_topk_analytic(p[:2].log(), q[:2].log())  # top 2 of 4
    # head 0.5 log 2.5 + 0.3 log 0.6; tail 0.2 log(0.2 / 0.3): the two tail tokens' ratios (2, 0.4) pooled
    head = 0.5 * math.log(2.5) + 0.3 * math.log(0.6)
    assert kl.item() == pytest.approx(head + 0.2 * math.log(0.2 / 0.3), abs=1e-6)
    assert tail.item() == pytest.approx(0.2, abs=1e-6)
    assert kl.item() < exact  # log-sum inequality: pooling the tail never overstates it
    # Equal when the tail's ratio is constant (0.1/0.05 = 0.1/0.05)
    q_flat = torch.tensor([0.2, 0.7, 0.05, 0.05])
    exact_flat = (p * (p / q_flat).log()).sum().item()
    assert kl_topk_analytic(p[:2].log(), q_flat[:2].log())[0].item() == pytest.approx(exact_flat, abs=1e-6)


def test_topk_analytic_kl_keeps_leading_dimensions():
    from alignkit.plugins.common.kl_estimators import kl_topk_analytic

    logp = torch.log_softmax(torch.randn(2, 3, 5), -1)
    ref = torch.log_softmax(torch.randn(2, 3, 5), -1)
    kl, tail = kl_topk_analytic(logp, ref)
    assert kl.shape == tail.shape == (2, 3)
    torch.testing.assert_close(kl, (logp.exp() * (logp - ref)).sum(-1), atol=1e-6, rtol=1e-5)
