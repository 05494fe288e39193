"""TRL 1.12 side of the PPO peer comparison. Runs ONLY in bench/.venv-trl112 (trl==1.12.0, not a project dependency):

    python3 -m venv bench/.venv-trl112
    # reuse torch/transformers/peft/alignkit from the main venv; trl 1.12 in the bench venv shadows trl 1.16
    echo "import site; site.addsitedir('$PWD/.venv/lib/python3.11/site-packages')" \
        > bench/.venv-trl112/lib/python3.11/site-packages/zz_main_venv.pth
    bench/.venv-trl112/bin/pip install --no-deps trl==1.12.0
    bench/.venv-trl112/bin/python bench/ppo_peer/run_trl112.py --updates 6

TRL 1.12's PPO needs a sequence-classification reward *model*, so the math_answer grader is wrapped in a module with
TRL's get_reward interface (backbone echoes token ids; score decodes and grades). The value model is TRL 1.12's
standard separate AutoModelForSequenceClassification copy of the same base; the policy is LoRA with the reference
taken as adapters disabled (TRL 1.12's peft path).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from common import SETTINGS as S  # noqa: E402
from common import answer_of, completion_curves, memory_floor_mib, peak_rss_mib, prompts, seeded, write  # noqa: E402
from probe import Probe  # noqa: E402
from torch import nn  # noqa: E402


class _Echo(nn.Module):
    def forward(self, input_ids, **kwargs):
        return SimpleNamespace(hidden_states=(input_ids.unsqueeze(-1).float(),))


class GraderRewardModel(nn.Module):
    """math_answer as a TRL-1.12 reward model: score(hidden) -> (B, T, 1), the sequence's grade at every position."""

    base_model_prefix = "backbone"

    def __init__(self, tokenizer):
        super().__init__()
        from alignkit.plugins.graders import MathAnswer

        self.backbone, self.tokenizer, self.grader = _Echo(), tokenizer, MathAnswer()

    def score(self, hidden: torch.Tensor) -> torch.Tensor:
        grades = []
        for row in hidden.squeeze(-1).long():
            text = self.tokenizer.decode(row, skip_special_tokens=False)
            prompt, _, response = text.rpartition("<|im_start|>assistant\n")
            response = self.tokenizer.decode(self.tokenizer.encode(response), skip_special_tokens=True)
            ref = answer_of(prompt)
            grades.append(0.0 if ref is None else self.grader.score(response, ref))
        return torch.tensor(grades)[:, None, None].expand(hidden.size(0), hidden.size(1), 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--updates", type=int, default=6)
    ap.add_argument("--name", help="writes bench/ppo_peer/out/<name>.json (default trl112, -seed<N> for --seed N)")
    ap.add_argument("--seed", type=int, default=S["seed"], help="prompts and training seed")
    ap.add_argument("--defaults", action="store_true", help="TRL 1.12's own bf16/gradient_checkpointing defaults")
    a = ap.parse_args()
    a.name = a.name or seeded("trl112", a.seed)
    settings = {**S, "seed": a.seed}
    probe = Probe()
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    from alignkit.models import materialize_embedded

    assert trl.__version__ == "1.12.0", trl.__version__
    probe.mark("imports done")
    path = str(materialize_embedded())
    tok = AutoTokenizer.from_pretrained(path, padding_side="left")
    qs = prompts(S["rollout"] * a.updates, seed=a.seed)
    ids = [tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True) for q in qs]
    ds = Dataset.from_dict({"input_ids": [i if isinstance(i, list) else i["input_ids"] for i in ids]})
    # TRL 1.12's batch arithmetic (ppo_trainer.py): rollout = local_batch_size = per_device_train_batch_size ×
    # gradient_accumulation_steps; minibatch = rollout / num_mini_batches; each minibatch is cut into micro-batches of
    # per_device_train_batch_size, and the optimizer steps every gradient_accumulation_steps micro-batches
    # (accelerate).
    # So a 16-sequence rollout in minibatches of 8 with one optimizer step per minibatch (alignkit's schedule) is
    # per_device_train_batch_size=16, gradient_accumulation_steps=1, num_mini_batches=2: the micro-batch loop then
    # slices 8 rows (the whole minibatch). Rollout forwards and generation run in chunks of 8, alignkit's chunk too.
    args = PPOConfig(
        output_dir="/tmp/trl112-ppo-peer", per_device_train_batch_size=S["rollout"],
        gradient_accumulation_steps=1, num_mini_batches=S["rollout"] // S["per_device_train_batch_size"],
        num_ppo_epochs=S["num_ppo_epochs"], total_episodes=S["rollout"] * a.updates,
        local_rollout_forward_batch_size=S["per_device_train_batch_size"], response_length=S["response_length"],
        temperature=S["temperature"], learning_rate=S["learning_rate"], kl_coef=S["kl_coef"], cliprange=S["cliprange"],
        cliprange_value=S["cliprange_value"], vf_coef=S["vf_coef"], gamma=S["gamma"], lam=S["lam"],
        stop_token="eos", num_sample_generations=0, logging_steps=1, save_strategy="no", seed=a.seed,
        use_cpu=True, report_to="none", **({} if a.defaults else dict(bf16=False, gradient_checkpointing=False)),
    )  # fmt: skip
    with probe.phase("load models"):
        policy = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        value = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, dtype=torch.float32)
    lora = LoraConfig(r=S["lora_r"], lora_alpha=S["lora_alpha"], target_modules="all-linear", task_type="CAUSAL_LM")
    marks: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.append(time.perf_counter())

    with probe.phase("build trainer"):
        trainer = PPOTrainer(
            args=args, processing_class=tok, model=policy, ref_model=None, reward_model=GraderRewardModel(tok),
            train_dataset=ds, value_model=value, peft_config=lora, callbacks=[Clock()],
        )  # fmt: skip
    lengths, ended = _instrument(probe, trainer)
    probe.mark("trainer built")
    marks.append(time.perf_counter())
    with probe.phase("train"):
        trainer.train()
    probe.mark("train done")
    rewards = [h["objective/scores"] for h in trainer.state.log_history if "objective/scores" in h]
    kls = [h["objective/kl"] for h in trainer.state.log_history if "objective/kl" in h]
    write(
        a.name,
        {
            "trainer": "trl==1.12.0 trl.experimental.ppo.PPOTrainer",
            "update_seconds": [b - a for a, b in zip(marks, marks[1:], strict=False)],
            "update_marks": marks,  # time.perf_counter(): CLOCK_MONOTONIC, comparable across the two processes
            "peak_rss_mib": peak_rss_mib(),
            "memory_floor_mib": memory_floor_mib(trainer.model, trainer.optimizer),
            "train_seconds": marks[-1] - marks[0],
            "reward_curve": rewards,
            "kl_curve": kls,
            **completion_curves(lengths, ended, S["rollout"]),
            "settings": settings,
            "precision": {"bf16": args.bf16, "gradient_checkpointing": args.gradient_checkpointing},
            "probe": probe.summary(),
        },
    )


def _instrument(probe, trainer) -> tuple[list[int], list[bool]]:
    """Phase timers on TRL 1.12's module-level helpers (its train() is one loop, without methods to wrap). Returns
    two lists that fill as the run goes: each scored completion's tokens before EOS, and whether it had an EOS (it
    is then shorter than response_length: TRL 1.12 scores the response cut after its first EOS, pads after it)."""
    import trl.experimental.ppo.ppo_trainer as m

    probe.wrap(m, "batch_generation", "generate")  # sampling + the generation scores (TRL's old log-probs)
    forward, get_reward = m.forward, m.get_reward

    def timed_forward(model, *args, **kwargs):  # PolicyAndValueWrapper = update forward, else the reference
        with probe.phase("train_fwd" if isinstance(model, m.PolicyAndValueWrapper) else "ref_fwd"):
            return forward(model, *args, **kwargs)

    lengths: list[int] = []
    ended: list[bool] = []

    def timed_get_reward(model, query_responses, pad_token_id, context_length):
        if model is trainer.reward_model:  # the postprocessed responses, once per rollout chunk
            responses = query_responses[:, context_length:]
            lengths.extend((responses != pad_token_id).sum(1).tolist())
            ended.extend((responses == pad_token_id).any(1).tolist())  # pad = EOS: an EOS, and the pads after it
        with probe.phase("reward" if model is trainer.reward_model else "values_fwd"):
            return get_reward(model, query_responses, pad_token_id, context_length)

    m.forward, m.get_reward = timed_forward, timed_get_reward
    probe.wrap(trainer.accelerator, "backward", "backward")
    probe.wrap(trainer.optimizer, "step", "optimizer_step")
    return lengths, ended


if __name__ == "__main__":
    main()
