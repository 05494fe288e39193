"""One penalty path: GRPO and PPO share the penalty fields (one name, one sign) and the helper that appends them as
reward functions, which never edits the caller's args, reward_funcs or reward_processing_classes."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from alignkit.plugins.common.penalty_fields import PenaltyFields, add_penalty_rewards
from alignkit.plugins.penalties import LengthPenalty, RepetitionPenalty

CPU = dict(bf16=False, use_cpu=True, report_to="none")


def user_reward(prompts, completions, **kwargs):
    return [0.0 for _ in completions]


def _fields(args) -> dict:
    """A deep snapshot of a config's dataclass fields (what a user set)."""
    return copy.deepcopy({f.name: getattr(args, f.name) for f in dataclasses.fields(args)})


def _ppo_args(tmp_path, **extra):
    from alignkit.plugins import PPOConfig

    return PPOConfig(output_dir=str(tmp_path), **CPU, **extra)


def test_helper_leaves_the_callers_objects_untouched(tmp_path):
    args = _ppo_args(
        tmp_path, reward_weights=[2.0], length_penalty_coef=0.1, length_penalty_target=4, repetition_penalty_weight=0.5
    )
    before = _fields(args)
    funcs, classes = [user_reward], ["tokenizer-of-user_reward"]
    new_funcs, new_args, new_classes = add_penalty_rewards(funcs, args, classes)

    assert _fields(args) == before and args.reward_weights == [2.0]  # the user's config, field by field
    assert funcs == [user_reward] and classes == ["tokenizer-of-user_reward"]
    assert new_args is not args and new_args.reward_weights == [2.0, 0.1, 0.5]
    assert new_funcs[0] is user_reward
    assert [type(f) for f in new_funcs[1:]] == [LengthPenalty, RepetitionPenalty]
    assert new_classes == ["tokenizer-of-user_reward", None, None]
    # One sign convention: each penalty reward is <= 0 unweighted, and its weight is >= 0.
    ids = [[7, 7, 7, 7, 7, 7, 7]]  # 7 tokens: 3 over the target 4; 5 trigrams, 1 unique → rate 1 − 1/5 = 0.8
    assert new_funcs[1]([""], ["x"], completion_ids=ids) == [-3.0]
    assert new_funcs[2]([""], ["x"], completion_ids=ids) == [pytest.approx(-0.8)]


def test_helper_with_every_penalty_off_returns_the_inputs(tmp_path):
    args = _ppo_args(tmp_path)
    funcs = [user_reward]
    assert add_penalty_rewards(funcs, args, None) == (funcs, args, None)


def test_grpo_and_ppo_share_the_penalty_fields(tmp_path):
    from alignkit.plugins import GRPOConfig, PPOConfig

    names = [f.name for f in dataclasses.fields(PenaltyFields)]
    assert names == [
        "length_penalty_coef",
        "length_penalty_target",
        "repetition_penalty_weight",
        "repetition_ngram_size",
    ]
    for cls in (GRPOConfig, PPOConfig):
        assert issubclass(cls, PenaltyFields)
        with pytest.raises(ValueError, match="repetition_penalty_weight"):
            cls(output_dir=str(tmp_path), **CPU, repetition_penalty_weight=-0.5)


def test_ppo_trainer_leaves_the_users_args_untouched(tiny_model, tmp_path):
    from alignkit.plugins import PPOTrainer
    from alignkit.plugins.graders import MathAnswer

    args = _ppo_args(
        tmp_path,
        per_device_train_batch_size=2,
        steps_per_generation=2,
        max_completion_length=6,
        reward_weights=[1.0],
        length_penalty_coef=0.01,
        length_penalty_target=4,
        repetition_penalty_weight=0.5,
        gradient_checkpointing=False,
    )
    before = _fields(args)
    trainer = PPOTrainer(tiny_model, [MathAnswer()], args=args, train_dataset=_prompts(), peft_config=_lora())
    assert _fields(args) == before  # PPO used to append to args.reward_weights in place
    assert trainer.reward_weights.tolist() == pytest.approx([1.0, 0.01, 0.5])
    with pytest.raises(ValueError, match="repetition_penalty_weight is set and reward_funcs already has a Repetition"):
        PPOTrainer(
            tiny_model, [MathAnswer(), RepetitionPenalty()], args=args, train_dataset=_prompts(), peft_config=_lora()
        )


def _prompts():
    from datasets import Dataset

    return Dataset.from_list(
        [{"prompt": [{"role": "user", "content": f"{i} + {i}?"}], "answer": str(2 * i)} for i in range(4)]
    )


def _lora():
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
