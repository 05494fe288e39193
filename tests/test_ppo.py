"""PPOTrainer on a tiny model: a 2-step run updates policy + critic and logs every PPO metric; resume restores the
value head, the critic adapter and the KL controller."""

import json
import os

import pytest
import torch
import trl

from alignkit.plugins.common.kl_callback import STATE_FILE as KL_STATE_FILE
from alignkit.plugins.graders import MathAnswer
from alignkit.plugins.ppo import CRITIC_STATE_FILE, PPOConfig, PPOTrainer

PPO_METRICS = [
    "policy_loss", "value_loss", "kl", "kl_coef", "clip_ratio/policy", "clip_ratio/value",
    "value/explained_variance", "entropy", "score", "total_reward", "completions/mean_length",
    "rewards/math_answer/mean", "rewards/length_penalty/mean", "rewards/repetition_penalty/mean",
]  # fmt: skip


def test_grpo_seams_still_exist():
    # PPOTrainer overrides these GRPOTrainer methods; a TRL minor bump that moves them must fail here, loudly.
    assert trl.__version__.startswith("1.16."), f"PPOTrainer is pinned to TRL 1.16 seams, found {trl.__version__}"
    seams = ["_generate_and_score_completions", "_calculate_rewards", "_compute_loss"]
    seams += ["_get_per_token_logps_and_entropies", "_save_checkpoint", "_load_optimizer_and_scheduler"]
    seams += ["_generate_single_turn"]  # autocast_generation wraps it (plugins/ppo/ppo_forward.py)
    for name in seams:
        assert hasattr(trl.GRPOTrainer, name), f"trl.GRPOTrainer.{name} is gone"
    assert trl.GRPOTrainer.loss_is_scaled_for_ga is True


@pytest.mark.parametrize(
    "bad",
    [
        {"kl_estimator": "k9"},
        {"lam": 1.5},
        {"kl_target": 0.0},
        {"repetition_penalty_weight": -0.5},
        {"kl_reading": "k1"},
    ],
)
def test_config_rejects_bad_fields(tmp_path, bad):
    with pytest.raises(ValueError, match=next(iter(bad)).split("_")[0]):
        PPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", **bad)


def _trainer(model_path, out, **overrides):
    from datasets import Dataset
    from peft import LoraConfig

    rows = [{"prompt": [{"role": "user", "content": f"What is {i} + {i}?"}], "answer": str(2 * i)} for i in range(8)]
    args = dict(
        output_dir=str(out), per_device_train_batch_size=2, gradient_accumulation_steps=1, steps_per_generation=2,
        num_iterations=2, max_completion_length=6, max_steps=2, learning_rate=5e-2, logging_steps=1, save_steps=1,
        bf16=False, use_cpu=True, gradient_checkpointing=False, report_to="none", seed=0,
        kl_target=0.5, kl_horizon=50, missing_eos_penalty=0.5,
        length_penalty_coef=0.01, length_penalty_target=4, repetition_penalty_weight=0.5,
    )  # fmt: skip
    args.update(overrides)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    return PPOTrainer(
        model_path, [MathAnswer()], args=PPOConfig(**args), train_dataset=Dataset.from_list(rows), peft_config=lora
    )


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("ppo-run")
    trainer = _trainer(tiny_model, out, steps_per_generation=1, num_iterations=1)  # two rollouts, one per step
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    return trainer, before, out


def test_two_steps_update_policy_and_critic(trained):
    trainer, before, _ = trained
    after = dict(trainer.model.named_parameters())
    trainable = [n for n in before if "lora_" in n or n.startswith("ppo_critic.")]
    unchanged = [n for n in trainable if torch.equal(before[n], after[n])]
    assert not unchanged, f"parameters not updated: {unchanged}"
    moved_base = [n for n in before if n not in trainable and not torch.equal(before[n], after[n])]
    assert not moved_base, f"frozen base parameters changed: {moved_base}"
    kinds = {"policy": ".default.", "critic adapter": ".value.", "value head": "ppo_critic.head"}
    for kind, key in kinds.items():
        assert any(key in n for n in before), f"no trainable {kind} parameters"
    # The reference is the adapter-disabled base: no second model was loaded.
    assert trainer.ref_model is None


def test_two_steps_log_every_metric(trained):
    trainer = trained[0]
    logged = set().union(*(h.keys() for h in trainer.state.log_history))
    missing = [m for m in PPO_METRICS if m not in logged]
    assert not missing, f"metrics never logged: {missing}"
    assert all(torch.isfinite(torch.tensor(h["value_loss"])) for h in trainer.state.log_history if "value_loss" in h)


def test_adaptive_kl_moved_beta(trained):
    # Rollout 1 is sampled before any update (policy = reference): β stays 0.05. Rollout 2 follows one update; its
    # KL is far below the 0.5 target, so β must go down.
    trainer = trained[0]
    betas = [h["kl_coef"] for h in trainer.state.log_history if "kl_coef" in h]
    assert betas == [pytest.approx(0.05), pytest.approx(0.05)]  # β in use during rollouts 1 and 2
    assert 0 < trainer.kl_controller.value < 0.05


def test_controller_reads_k3_whatever_the_reward_estimator(tiny_model, tmp_path, monkeypatch):
    # kl_estimator k1 in the reward; the controller and the `kl` metric read Σ_t k3_t (mean over sequences), and
    # `kl/in_reward` is Σ_t k1_t. Rollout 2 follows one update, so the two estimates differ there.
    from alignkit.plugins.common.kl_estimators import kl_k1, kl_k3
    from alignkit.plugins.ppo import ppo_trainer

    seen = []
    real_estimate, real_rewards = ppo_trainer.kl_estimate, ppo_trainer.per_token_rewards

    def estimate(logp, ref, estimator):
        seen.append([logp, ref])
        return real_estimate(logp, ref, estimator)

    def rewards(kl, scores, mask, beta):
        seen[-1].append(mask)
        return real_rewards(kl, scores, mask, beta)

    monkeypatch.setattr(ppo_trainer, "kl_estimate", estimate)
    monkeypatch.setattr(ppo_trainer, "per_token_rewards", rewards)
    trainer = _trainer(tiny_model, tmp_path, steps_per_generation=1, num_iterations=1, save_strategy="no",
                       kl_estimator="k1")  # fmt: skip
    readings = []
    record = trainer._kl_callback.record
    monkeypatch.setattr(trainer._kl_callback, "record", lambda kl, n: readings.append(kl) or record(kl, n))
    trainer.train()
    logp, ref, mask = seen[1]  # rollout 2
    k3_seq, k1_seq = (kl_k3(logp, ref) * mask).sum(1), (kl_k1(logp, ref) * mask).sum(1)
    k3, k1 = k3_seq.mean().item(), k1_seq.mean().item()
    assert abs(k3 - k1) > 1e-4, "the policy did not move: the test cannot tell the estimators apart"
    assert readings == [pytest.approx(k3, rel=1e-5)]  # rollout 1 (before any update) is not fed to the controller
    logged = [h for h in trainer.state.log_history if "kl" in h]
    assert logged[1]["kl"] == pytest.approx(k3, rel=1e-5)
    assert logged[1]["kl/in_reward"] == pytest.approx(k1, rel=1e-5)
    n = len(k3_seq)
    assert logged[1]["kl/seq_se"] == pytest.approx((k3_seq.std() / n**0.5).item(), rel=1e-4)
    assert logged[1]["kl/in_reward_seq_se"] == pytest.approx((k1_seq.std() / n**0.5).item(), rel=1e-4)


def test_analytic_kl_reading_equals_the_full_vocabulary_kl(tiny_model, tmp_path, monkeypatch):
    # kl_reading analytic with k covering the whole vocabulary: the controller's reading must equal the exact KL of
    # each next-token distribution (policy vs adapters off), summed over the completion and averaged over sequences,
    # computed here by plain forwards at the moment of the rollout; k3 is still logged as kl/k3.
    from alignkit.plugins.common.kl_estimators import kl_k3
    from alignkit.plugins.ppo import ppo_forward

    monkeypatch.setattr(ppo_forward, "TOP_K", 10**6)  # topk is capped at the vocabulary
    trainer = _trainer(tiny_model, tmp_path, steps_per_generation=1, num_iterations=1, save_strategy="no",
                       kl_reading="analytic", temperature=0.7)  # fmt: skip
    exact, k3s = [], []
    take = trainer._take_analytic_kl

    def take_and_check(out, ref):
        ids = torch.cat([out["prompt_ids"], out["completion_ids"]], 1)
        attn = torch.cat([out["prompt_mask"], out["completion_mask"]], 1)
        n, mask = out["completion_ids"].size(1), out["completion_mask"].float()
        model = trainer.accelerator.unwrap_model(trainer.model)

        def next_token_logps():
            return torch.log_softmax(model(input_ids=ids, attention_mask=attn).logits[:, -n - 1 : -1] / 0.7, -1)

        with torch.no_grad():
            logp = next_token_logps()
            with model.disable_adapter():
                ref_full = next_token_logps()
        exact.append((((logp.exp() * (logp - ref_full)).sum(-1)) * mask).sum(1).mean().item())
        k3s.append((kl_k3(out["old_per_token_logps"], ref) * mask).sum(1).mean().item())
        return take(out, ref)

    monkeypatch.setattr(trainer, "_take_analytic_kl", take_and_check)
    readings = []
    record = trainer._kl_callback.record
    monkeypatch.setattr(trainer._kl_callback, "record", lambda kl, n: readings.append(kl) or record(kl, n))
    trainer.train()
    assert len(exact) == 2 and exact[1] > 1e-3, "the policy did not move: the test cannot tell a reading from 0"
    # 10x the reading's tolerance apart (0.0762 vs 0.0817 when written), else the test could not tell which was read
    assert abs(exact[1] - k3s[1]) > 1e-2 * exact[1], "k3 and the analytic KL agree: the test cannot tell them apart"
    assert readings == [pytest.approx(exact[1], rel=1e-3)]  # rollout 2; rollout 1 precedes any update
    logged = [h for h in trainer.state.log_history if "kl" in h]
    assert [h["kl"] for h in logged] == [pytest.approx(e, rel=1e-3, abs=1e-5) for e in exact]
    assert [h["kl/k3"] for h in logged] == [pytest.approx(k, rel=1e-4, abs=1e-6) for k in k3s]
    assert [h["kl/analytic_missing"] for h in logged] == [0.0, 0.0]
    assert all(h["kl/analytic_tail"] < 1e-4 for h in logged)


def test_analytic_kl_reading_with_vllm_is_refused(tmp_path):
    with pytest.raises(ValueError, match="kl_reading 'analytic'.*use_vllm"):
        PPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", kl_reading="analytic",
                  use_vllm=True)  # fmt: skip


def test_checkpoint_and_resume_restore_critic_and_kl(trained, tiny_model, tmp_path):
    trainer, _, out = trained
    ckpt = os.path.join(out, "checkpoint-2")  # after rollout 2, the first that moves β
    saved = torch.load(os.path.join(ckpt, CRITIC_STATE_FILE), weights_only=True)
    with open(os.path.join(ckpt, KL_STATE_FILE)) as f:
        saved_kl = json.load(f)
    assert any(".value." in n for n in saved["critic"]) and any("ppo_critic.head" in n for n in saved["critic"])
    assert saved_kl["kind"] == "adaptive"

    fresh = _trainer(tiny_model, out, max_steps=3)
    fresh.create_optimizer_and_scheduler(num_training_steps=3)
    fresh._load_optimizer_and_scheduler(ckpt)
    for name, tensor in saved["critic"].items():
        torch.testing.assert_close(fresh._critic_params[name].detach().cpu(), tensor)
    assert fresh.kl_controller.value == pytest.approx(saved_kl["value"])
    assert fresh.kl_controller.value != pytest.approx(0.05)  # i.e. not the config's initial β

    resumed = _trainer(tiny_model, out, max_steps=3)
    resumed.train(resume_from_checkpoint=ckpt)
    assert resumed.state.global_step == 3


def test_separate_value_model(tiny_model, tmp_path):
    trainer = _trainer(tiny_model, tmp_path, max_steps=1, value_model_name_or_path=tiny_model, save_strategy="no")
    critic = trainer.model.ppo_critic
    assert critic.backbone is not None and "value" not in trainer.model.peft_config
    before = {n: p.detach().clone() for n, p in critic.named_parameters()}
    trainer.train()
    changed = [n for n, p in critic.named_parameters() if not torch.equal(before[n], p)]
    assert any(n.startswith("backbone.") for n in changed) and "head.weight" in changed
