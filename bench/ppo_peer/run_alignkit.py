"""alignkit side of the PPO peer comparison (TRL 1.16 venv): PPOTrainer with the shared-base LoRA critic.

.venv/bin/python bench/ppo_peer/run_alignkit.py --updates 6
.venv/bin/python bench/ppo_peer/run_alignkit.py --updates 6 --full-value-model  # -> out/alignkit-fullvalue.json
.venv/bin/python bench/ppo_peer/run_alignkit.py --updates 6 --seed 1  # -> out/alignkit-seed1.json

--full-value-model is the like-for-like arm against TRL 1.12 (issue 13): the critic is a separate, fully trained
backbone (PPOConfig.value_model_name_or_path = the embedded model), as TRL 1.12's value model is; every other
setting is the fp32 headline arm's.
"""

from __future__ import annotations

import argparse
import ast
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import SETTINGS as S  # noqa: E402
from common import completion_curves, memory_floor_mib, peak_rss_mib, prompts, seeded, write  # noqa: E402
from probe import Probe  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--updates", type=int, default=6)
    ap.add_argument("--name", help="writes bench/ppo_peer/out/<name>.json (alignkit, or alignkit-fullvalue)")
    ap.add_argument("--seed", type=int, default=S["seed"], help="prompts and training seed; not 0: name -seed<N>")
    ap.add_argument("--defaults", action="store_true", help="precision/checkpointing as alignkit picks for this CPU")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="PPOConfig override (ablations)")
    ap.add_argument(
        "--full-value-model",
        action="store_true",
        help="critic = a separate, fully trained copy of the base (value_model_name_or_path), like TRL 1.12's",
    )
    a = ap.parse_args()
    a.name = a.name or seeded("alignkit-fullvalue" if a.full_value_model else "alignkit", a.seed)
    settings = {**S, "seed": a.seed}
    probe = Probe()  # before the heavy imports, so the RSS timeline starts at the bare interpreter
    from common import answer_of
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback

    from alignkit.models import materialize_embedded
    from alignkit.plugins.graders import MathAnswer
    from alignkit.plugins.ppo import PPOConfig, PPOTrainer

    probe.mark("imports done")
    precision = dict(bf16=False, use_cpu=True, gradient_checkpointing=False)  # the headline: fp32 on both sides
    if a.defaults:  # what `alignkit train` would choose on this machine (alignkit/hardware.py)
        from alignkit.hardware import choose_settings, detect

        chosen = choose_settings(detect(), explicit=set())[0]
        precision = {k: chosen[k] for k in ("bf16", "fp16", "use_cpu", "gradient_checkpointing")}
    model = str(materialize_embedded())  # the policy, and with --full-value-model the critic's backbone too
    critic = {"value_model_name_or_path": model} if a.full_value_model else {}
    overrides = {k: ast.literal_eval(v) for k, v in (kv.split("=", 1) for kv in a.set)}
    qs = prompts(S["rollout"] * a.updates, seed=a.seed)
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": q}], "answer": answer_of(q)} for q in qs])
    steps_per_update = S["num_ppo_epochs"] * S["rollout"] // S["per_device_train_batch_size"]
    args = PPOConfig(
        output_dir="/tmp/alignkit-ppo-peer", per_device_train_batch_size=S["per_device_train_batch_size"],
        gradient_accumulation_steps=1, steps_per_generation=S["rollout"] // S["per_device_train_batch_size"],
        num_iterations=S["num_ppo_epochs"], num_generations=1, max_completion_length=S["response_length"],
        temperature=S["temperature"], learning_rate=S["learning_rate"], max_steps=steps_per_update * a.updates,
        beta=S["kl_coef"], epsilon=S["cliprange"], cliprange_value=S["cliprange_value"], vf_coef=S["vf_coef"],
        gamma=S["gamma"], lam=S["lam"], logging_steps=1, save_strategy="no", seed=a.seed, shuffle_dataset=False,
        report_to="none", **precision, **critic, **overrides,
    )  # fmt: skip
    lora = LoraConfig(r=S["lora_r"], lora_alpha=S["lora_alpha"], target_modules="all-linear", task_type="CAUSAL_LM")
    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % steps_per_update == 0:
                marks.append(time.perf_counter())

    with probe.phase("build trainer"):  # model load, PEFT wrap, critic adapter
        trainer = PPOTrainer(model, [MathAnswer()], args=args, train_dataset=ds, peft_config=lora)
    trainer.add_callback(Clock())
    _instrument(probe, trainer)
    peer_token_kl, lengths, ended = _record_kl_on_peer_tokens(trainer)
    probe.mark("trainer built")
    trained = trainer._critic_params  # head (+ value adapter, or the separate backbone)
    marks.append(time.perf_counter())
    with probe.phase("train"):
        trainer.train()
    probe.mark("train done")
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    rewards = [h["rewards/math_answer/mean"] for h in trainer.state.log_history if "rewards/math_answer/mean" in h]
    # TRL 1.12 logs Σ_t k1_t (objective/kl); alignkit's `kl` is the controller's k3 reading, and `kl/in_reward` the
    # reward's estimator (k1 here, kl_estimator's default): compare like with like.
    kls = [h.get("kl/in_reward", h["kl"]) for h in trainer.state.log_history if "kl" in h]
    write(
        a.name,
        {
            "trainer": "alignkit PPOTrainer (TRL 1.16 GRPOTrainer seams)",
            "update_seconds": [b - a for a, b in zip(marks, marks[1:], strict=False)],
            "update_marks": marks,  # time.perf_counter(): CLOCK_MONOTONIC, comparable across the two processes
            "peak_rss_mib": peak_rss_mib(),
            "memory_floor_mib": memory_floor_mib(trainer.model, trainer.optimizer),
            "train_seconds": marks[-1] - marks[0],
            "reward_curve": rewards,
            "kl_curve": kls,
            **peer_token_kl,
            **completion_curves(lengths, ended, S["rollout"]),
            "settings": settings,
            "overrides": a.set,
            "precision": precision,
            "critic": {
                "kind": "separate full value model" if a.full_value_model else "shared-base LoRA adapter + head",
                "value_model_name_or_path": critic.get("value_model_name_or_path"),
                # counted after training: the critic parameters in the optimizer's groups, and their dtype(s)
                "trainable_params": sum(p.numel() for p in trained.values() if id(p) in optimized),
                "dtypes": sorted({str(p.dtype) for p in trained.values()}),
            },
            "probe": probe.summary(),
        },
    )


def _instrument(probe, trainer) -> None:
    """Phase timers on the trainer's seams: rollout (generate, log-prob/value forwards, reward) and the update."""
    from transformers import TrainerCallback

    for attr, name in (
        ("_generate_and_score_completions", "rollout"),
        ("_generate", "generate"),
        ("_calculate_rewards", "reward"),
        ("_get_per_token_logps_and_entropies", "logps_fwd"),
        ("_values", "values_fwd"),
        ("_compute_loss", "loss_fwd"),
    ):
        probe.wrap(trainer, attr, name)
    probe.wrap(trainer.accelerator, "backward", "backward")

    class WrapOptimizer(TrainerCallback):  # the optimizer exists only once training starts
        def on_train_begin(self, args, state, control, **kwargs):
            probe.wrap(trainer.optimizer, "step", "optimizer_step")

    trainer.add_callback(WrapOptimizer())


def _record_kl_on_peer_tokens(trainer) -> tuple[dict[str, list[float]], list[int], list[bool]]:
    """Per training rollout, the reward's k1 KL (Σ_t over a sequence's tokens, mean over sequences) on the tokens
    TRL 1.12 counts, and at the EOS token alone; the lists fill as the run goes.

    TRL 1.12 scores a completion's tokens before its first pad id (its ``sequence_lengths``). SmolLM2's pad token is
    its EOS (``<|im_end|>``), so the EOS token is outside TRL 1.12's policy loss and its ``objective/kl``; alignkit's
    completion mask (GRPO's) keeps it, in the loss and in ``kl/in_reward``. ``kl_peer_tokens_curve`` is alignkit's
    KL on TRL 1.12's tokens (its ``kl_curve`` minus ``kl_eos_curve``), the like-for-like KL reading. Also returns
    two lists that fill likewise: each completion's tokens before EOS, and whether it ended with EOS.
    """
    import alignkit.plugins.ppo.ppo_trainer as ppo_module

    pad_id = trainer.processing_class.pad_token_id
    curves: dict[str, list[float]] = {"kl_peer_tokens_curve": [], "kl_eos_curve": []}
    lengths, ended = [], []  # per completion: tokens before EOS, and whether it ended with EOS
    seen: dict[str, object] = {}
    estimate, rollout = ppo_module.kl_estimate, trainer._generate_and_score_completions

    def capture(old, ref, estimator):  # the rollout's π_old and reference log-probs, as the reward reads them
        seen["k1"] = (old - ref).detach()
        return estimate(old, ref, estimator)

    def recorded(inputs):
        out = rollout(inputs)
        k1 = seen.pop("k1")
        if trainer.model.training:
            mask, ids = out["completion_mask"].bool(), out["completion_ids"]
            before_eos, at_eos = mask & (ids != pad_id), mask & (ids == pad_id)  # TRL 1.12 counts the first only
            lengths.extend(before_eos.sum(1).tolist())
            ended.extend(at_eos.any(1).tolist())
            curves["kl_peer_tokens_curve"].append((k1 * before_eos).sum(1).mean().item())
            curves["kl_eos_curve"].append((k1 * at_eos).sum(1).mean().item())
        return out

    ppo_module.kl_estimate = capture
    trainer._generate_and_score_completions = recorded
    return curves, lengths, ended


if __name__ == "__main__":
    main()
