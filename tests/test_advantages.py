"""Advantage normalizations: hand-computed numbers, edge cases, and identity with TRL 1.16's GRPO/RLOO formulas.

TRL's advantage code is inline in private trainer methods, so the identity tests re-state exactly those lines (using
TRL's real ``nanstd``), and the seam-guard tests fail loudly if TRL edits them. TRL's source is read from disk and
its ``nanstd`` exec'd on its own: importing ``trl.trainer`` would pull in transformers (~7 s).
"""

import ast
import importlib.util
import math
from pathlib import Path

import pytest
import torch

from alignkit.plugins.advantages import ADVANTAGE_METHODS, available_methods, normalize

EPS = 1e-4


def _trl_source(module: str) -> str:
    return Path(importlib.util.find_spec(module).origin).read_text()


def _trl_def(module: str, qualname: str) -> str:
    """Source of a top-level function or ``Class.method`` in a TRL module, without importing it."""
    src = _trl_source(module)
    body = ast.parse(src).body
    node = None
    for part in qualname.split("."):
        node = next(n for n in body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name == part)
        body = node.body
    return ast.get_source_segment(src, node)


def _trl_nanstd():
    namespace = {"torch": torch}
    exec(_trl_def("trl.trainer.utils", "nanstd"), namespace)
    return namespace["nanstd"]


nanstd = _trl_nanstd()


def trl_grpo_advantages(rewards: torch.Tensor, num_generations: int, scale_rewards: str) -> torch.Tensor:
    """Re-states GRPOTrainer._generate_and_score_completions, multi_objective_aggregation="sum_then_normalize"."""
    mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    if scale_rewards in ["group", "none"]:
        if num_generations > 1:
            std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)
            std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
        else:
            std_rewards = torch.zeros_like(rewards)
    else:
        std_rewards = nanstd(rewards).expand_as(rewards) if rewards.numel() > 1 else torch.zeros_like(rewards)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards != "none":
        advantages = advantages / (std_rewards + 1e-4)
    return torch.nan_to_num(advantages, nan=0.0)


def trl_rloo_advantages(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """Re-statement of RLOOTrainer._generate_and_score_completions, normalize_advantages=False."""
    grouped_rewards = rewards.view(-1, num_generations)
    scorable_counts = (~torch.isnan(grouped_rewards)).sum(dim=1, keepdim=True)
    grouped_sum = torch.nansum(grouped_rewards, dim=1, keepdim=True)
    if num_generations > 1:
        baselines = (grouped_sum - grouped_rewards) / (scorable_counts - 1)
        advantages = rewards - baselines.view(-1)
    else:
        advantages = torch.zeros_like(rewards)
    return torch.nan_to_num(advantages, nan=0.0)


# Lines of TRL 1.16 that the two functions above re-state. If TRL changes any, re-check the formulas, then update.
GRPO_SEAM = [
    "mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)",
    "std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)",
    "std_rewards = nanstd(rewards).expand_as(rewards)",
    "advantages = rewards - mean_grouped_rewards",
    'if self.scale_rewards != "none":',
    "advantages = advantages / (std_rewards + 1e-4)",
    "advantages = torch.nan_to_num(advantages, nan=0.0)",
    "rewards[unscorable_mask] = torch.nan",
]
RLOO_SEAM = [
    "scorable_counts = (~torch.isnan(grouped_rewards)).sum(dim=1, keepdim=True)",
    "grouped_sum = torch.nansum(grouped_rewards, dim=1, keepdim=True)",
    "baselines = (grouped_sum - grouped_rewards) / (scorable_counts - 1)",
    "advantages = rewards - baselines",
    "advantages = torch.nan_to_num(advantages, nan=0.0)",
]
NANSTD_SEAM = [
    "mean = torch.nanmean(tensor, dim=dim, keepdim=True)",
    "correction = count / (count - 1)",  # unbiased (Bessel) std
    'correction = torch.where(count > 1, correction, torch.full_like(correction, float("nan")))',
]


@pytest.mark.parametrize(
    ("module", "qualname", "lines"),
    [
        ("trl.trainer.grpo_trainer", "GRPOTrainer._generate_and_score_completions", GRPO_SEAM),
        ("trl.trainer.rloo_trainer", "RLOOTrainer._generate_and_score_completions", RLOO_SEAM),
        ("trl.trainer.utils", "nanstd", NANSTD_SEAM),
    ],
)
def test_seam_guard_trl_lines_we_replicate_are_unchanged(module, qualname, lines):
    src = _trl_def(module, qualname)
    missing = [line for line in lines if line not in src]
    assert not missing, f"TRL changed {qualname}; re-check alignkit.plugins.advantages against: {missing}"


def _rewards_with_edge_groups() -> torch.Tensor:
    torch.manual_seed(0)
    r = torch.randn(8, 4)
    r[1] = 0.5  # zero spread, exactly representable mean
    r[2, 1] = torch.nan  # one unscorable completion
    r[3, :3] = torch.nan  # a single scorable completion
    r[4] = torch.nan  # whole group unscorable
    r[5] = torch.tensor([0.0, 1.0, 1.0, 1.0])
    return r.flatten()


@pytest.mark.parametrize(("method", "scale"), [("group", "group"), ("batch", "batch"), ("mean", "none")])
def test_matches_trl_grpo_scale_rewards(method, scale):
    rewards = _rewards_with_edge_groups()
    ours = normalize(rewards, 4, method)
    assert torch.allclose(ours, trl_grpo_advantages(rewards, 4, scale), atol=1e-6)
    assert not torch.isnan(ours).any()


def test_matches_trl_rloo_baseline():
    rewards = _rewards_with_edge_groups()
    assert torch.allclose(normalize(rewards, 4, "rloo"), trl_rloo_advantages(rewards, 4), atol=1e-6)


def test_group_hand_computed():
    # [0, 0, 2, 2]: mean 1, deviations ±1, unbiased var = 4·1/3 = 4/3, std = 1.1547005; A = ±1/(1.1547005 + 1e-4)
    a = 1 / (math.sqrt(4 / 3) + EPS)
    assert torch.allclose(normalize(torch.tensor([0.0, 0.0, 2.0, 2.0]), 4, "group"), torch.tensor([-a, -a, a, a]))


def test_batch_hand_computed():
    # groups [0, 2] and [10, 10]; batch mean 5.5, squared deviations 30.25 + 12.25 + 20.25 + 20.25 = 83,
    # unbiased std = sqrt(83/3) = 5.259911; group 1 deviations from its mean 1 are ∓1; group 2 has zero spread.
    a = 1 / (math.sqrt(83 / 3) + EPS)
    out = normalize(torch.tensor([0.0, 2.0, 10.0, 10.0]), 2, "batch")
    assert torch.allclose(out, torch.tensor([-a, a, 0.0, 0.0]))


def test_mean_and_rloo_hand_computed():
    r = torch.tensor([1.0, 2.0, 6.0])
    # mean 3 → [−2, −1, 3]
    assert torch.allclose(normalize(r, 3, "mean"), torch.tensor([-2.0, -1.0, 3.0]))
    # leave-one-out baselines (2+6)/2 = 4, (1+6)/2 = 3.5, (1+2)/2 = 1.5 → [−3, −1.5, 4.5] = 3/2 · [−2, −1, 3]
    assert torch.allclose(normalize(r, 3, "rloo"), torch.tensor([-3.0, -1.5, 4.5]))


def test_rank_hand_computed_with_ties():
    # sorted 10, 20, 20, 30 → ranks 1, (2+3)/2 = 2.5, 2.5, 4; A = (rank − 1)/3 − 0.5 → −0.5, 0, 0, 0.5
    out = normalize(torch.tensor([10.0, 30.0, 20.0, 20.0]), 4, "rank")
    assert torch.allclose(out, torch.tensor([-0.5, 0.5, 0.0, 0.0]))
    # with a NaN, ranks are among the 3 valid: 1, 2, 3 → −0.5, 0, 0.5; the NaN gets 0
    out = normalize(torch.tensor([3.0, float("nan"), 1.0, 2.0]), 4, "rank")
    assert torch.allclose(out, torch.tensor([0.5, 0.0, -0.5, 0.0]))


def test_robust_hand_computed():
    # odd: median 3, |dev| = [2, 1, 0, 1, 97], MAD = 1 → A = [−2, −1, 0, 1, 97] / 1.0001
    out = normalize(torch.tensor([1.0, 2.0, 3.0, 4.0, 100.0]), 5, "robust")
    assert torch.allclose(out, torch.tensor([-2.0, -1.0, 0.0, 1.0, 97.0]) / (1 + EPS))
    # even: median (2+3)/2 = 2.5, |dev| = [1.5, 0.5, 0.5, 7.5], MAD = (0.5+1.5)/2 = 1 → [−1.5, −0.5, 0.5, 7.5]/1.0001
    out = normalize(torch.tensor([1.0, 2.0, 3.0, 10.0]), 4, "robust")
    assert torch.allclose(out, torch.tensor([-1.5, -0.5, 0.5, 7.5]) / (1 + EPS))
    # MAD = 0 fallback: [0, 0, 0, 1], median 0, MAD 0 → mean |dev| = 1/4 → lone success gets 1/(0.25 + 1e-4) = 3.9984
    out = normalize(torch.tensor([0.0, 0.0, 0.0, 1.0]), 4, "robust")
    assert torch.allclose(out, torch.tensor([0.0, 0.0, 0.0, 1 / (0.25 + EPS)]))


def test_minmax_hand_computed():
    # mean 2, range 5 → (r − 2)/5 = [−0.4, −0.2, 0.6]
    assert torch.allclose(normalize(torch.tensor([0.0, 1.0, 5.0]), 3, "minmax"), torch.tensor([-0.4, -0.2, 0.6]))


def test_nan_reward_excluded_from_stats_and_zeroed():
    # valid [1, 3]: mean 2, unbiased std sqrt(2) → ±1/(1.414214 + 1e-4); the NaN gets 0
    a = 1 / (math.sqrt(2) + EPS)
    out = normalize(torch.tensor([1.0, float("nan"), 3.0]), 3, "group")
    assert torch.allclose(out, torch.tensor([-a, 0.0, a]))


@pytest.mark.parametrize("method", sorted(ADVANTAGE_METHODS))
def test_zero_spread_single_valid_and_group_size_one_give_zero(method):
    assert torch.equal(normalize(torch.tensor([0.1, 0.1, 0.1]), 3, method), torch.zeros(3))
    assert torch.equal(normalize(torch.tensor([float("nan"), 4.0, float("nan")]), 3, method), torch.zeros(3))
    assert torch.equal(normalize(torch.tensor([1.0, 5.0, -2.0]), 1, method), torch.zeros(3))
    assert normalize(torch.tensor([0, 1, 2, 2]), 2, method).dtype.is_floating_point  # int rewards accepted


@pytest.mark.parametrize("method", sorted(ADVANTAGE_METHODS))
def test_every_method_centres_valid_groups(method):
    # every method whose baseline is the group mean (all but robust) gives advantages summing to 0 per group
    out = normalize(torch.tensor([0.0, 1.0, 4.0, 9.0, 2.0, 2.0, 7.0, 3.0]), 4, method).view(2, 4)
    if method != "robust":  # the median, not the mean, is robust's baseline
        assert torch.allclose(out.sum(dim=1), torch.zeros(2), atol=1e-5)


def test_invalid_arguments_raise_value_error():
    r = torch.zeros(6)
    with pytest.raises(ValueError, match="not divisible by group_size=4"):
        normalize(r, 4)
    with pytest.raises(ValueError, match="available: batch, group, mean, minmax, rank, rloo, robust"):
        normalize(r, 3, "zscore")
    with pytest.raises(ValueError, match="group_size"):
        normalize(r, 0)
    with pytest.raises(ValueError, match="1-D"):
        normalize(r.view(2, 3), 3)
    with pytest.raises(ValueError, match="eps"):
        normalize(r, 3, eps=-1.0)
    assert available_methods() == sorted(ADVANTAGE_METHODS)
