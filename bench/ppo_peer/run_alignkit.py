"""alignkit side of the PPO peer comparison (TRL 1.16 venv): PPOTrainer with the shared-base LoRA critic.

.venv/bin/python bench/ppo_peer/run_alignkit.py --updates 6
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from common import SETTINGS as S  # noqa: E402
from common import peak_rss_mib, prompts, write  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--updates", type=int, default=6)
    a = ap.parse_args()
    from common import answer_of
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback

    from alignkit.models import materialize_embedded
    from alignkit.plugins.graders import MathAnswer
    from alignkit.plugins.ppo import PPOConfig, PPOTrainer

    qs = prompts(S["rollout"] * a.updates, seed=S["seed"])
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": q}], "answer": answer_of(q)} for q in qs])
    steps_per_update = S["num_ppo_epochs"] * S["rollout"] // S["per_device_train_batch_size"]
    args = PPOConfig(
        output_dir="/tmp/alignkit-ppo-peer", per_device_train_batch_size=S["per_device_train_batch_size"],
        gradient_accumulation_steps=1, steps_per_generation=S["rollout"] // S["per_device_train_batch_size"],
        num_iterations=S["num_ppo_epochs"], num_generations=1, max_completion_length=S["response_length"],
        temperature=S["temperature"], learning_rate=S["learning_rate"], max_steps=steps_per_update * a.updates,
        beta=S["kl_coef"], epsilon=S["cliprange"], cliprange_value=S["cliprange_value"], vf_coef=S["vf_coef"],
        gamma=S["gamma"], lam=S["lam"], logging_steps=1, save_strategy="no", seed=S["seed"], shuffle_dataset=False,
        bf16=False, use_cpu=True, gradient_checkpointing=False, report_to="none",
    )  # fmt: skip
    lora = LoraConfig(r=S["lora_r"], lora_alpha=S["lora_alpha"], target_modules="all-linear", task_type="CAUSAL_LM")
    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % steps_per_update == 0:
                marks.append(time.perf_counter())

    trainer = PPOTrainer(str(materialize_embedded()), [MathAnswer()], args=args, train_dataset=ds, peft_config=lora)
    trainer.add_callback(Clock())
    marks.append(time.perf_counter())
    trainer.train()
    rewards = [h["rewards/math_answer/mean"] for h in trainer.state.log_history if "rewards/math_answer/mean" in h]
    write(
        "alignkit",
        {
            "trainer": "alignkit PPOTrainer (TRL 1.16 GRPOTrainer seams)",
            "update_seconds": [b - a for a, b in zip(marks, marks[1:], strict=False)],
            "peak_rss_mib": peak_rss_mib(),
            "reward_curve": rewards,
            "settings": S,
        },
    )


if __name__ == "__main__":
    main()
