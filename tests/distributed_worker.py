"""``alignkit train`` under ``accelerate launch``, for tests/test_distributed.py: after training, every rank writes
the full weights it ends with (FSDP shards gathered) and what it trained under to ``DUMP_DIR/rank-N.*``; a GRPO or
PPO rank also writes each training rollout it scored (its advantages, completion mask and the gathered rewards) to
``DUMP_DIR/rank-N.rollouts.pt``.

Usage: accelerate launch ... tests/distributed_worker.py DUMP_DIR train RECIPE [key=value ...]
With ALIGNKIT_TEST_FAIL_RANK=R, rank R alone stops with a bad-input error while it builds its trainer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _progress_bars_enabled() -> bool:
    from datasets.utils.tqdm import are_progress_bars_disabled
    from transformers.utils import logging as hf_logging

    return not are_progress_bars_disabled() and hf_logging.is_progress_bar_enabled()


def _dump_callback(dump_dir: Path):
    from transformers import TrainerCallback

    class DumpWeights(TrainerCallback):
        kl_coefs: list = []  # this rank's β at each logged step (GRPO with adaptive KL) ...
        kls: list = []  # ... and the KL reading it logged
        rollouts: list = []  # GRPO/PPO: what each training rollout handed the loss on this rank

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "kl_coef" in logs:
                self.kl_coefs.append(logs["kl_coef"])
                self.kls.append(logs.get("kl"))

        def on_train_end(self, args, state, control, model=None, **kwargs):
            import torch
            from safetensors.torch import save_file
            from torch.distributed.tensor import DTensor

            from alignkit.distributed import rank

            weights, sharded, zero3 = {}, False, False
            for name, param in model.named_parameters():  # the same order on every rank: gathers are collective
                if isinstance(param, DTensor):  # an FSDP2 shard
                    sharded = True
                    param = param.full_tensor()
                elif hasattr(param, "ds_id"):  # a ZeRO-3 partition
                    import deepspeed

                    zero3 = True
                    with deepspeed.zero.GatheredParameters([param]):
                        param = param.data.clone()
                weights[name.removeprefix("module.")] = param.detach().to(torch.float32).contiguous().clone()
            save_file(weights, str(dump_dir / f"rank-{rank()}.safetensors"))
            info = {
                "sharded": sharded,
                "zero3_partitioned": zero3,
                "global_step": state.global_step,
                "world_size": args.world_size,
                "optimizer": type(kwargs.get("optimizer")).__name__,  # DeepSpeed's engine wraps its own
                "kl_coefs": self.kl_coefs,
                "kls": self.kls,
                "progress_bars": _progress_bars_enabled(),
            }
            (dump_dir / f"rank-{rank()}.json").write_text(json.dumps(info))
            if self.rollouts:
                torch.save(self.rollouts, dump_dir / f"rank-{rank()}.rollouts.pt")

    return DumpWeights()


def _record_rollouts(trainer, rollouts: list) -> None:
    """Wrap the trainer's rollout seam: keep, per training rollout, the advantages this rank trains on, its
    completion mask and the rewards matrix gathered over every rank (with the weights that sum it)."""
    scored = trainer._generate_and_score_completions

    def recording(inputs):
        out = scored(inputs)
        if trainer.model.training:
            gathered = getattr(trainer, "_last_rewards_per_func", None)  # GRPO
            if gathered is None:
                gathered = trainer._rollout_rewards_per_func  # PPO
            rollouts.append(
                {
                    "advantages": out["advantages"].detach().cpu().clone(),
                    "completion_mask": out["completion_mask"].detach().cpu().clone(),
                    "rewards_per_func": gathered.detach().cpu().clone(),
                    "reward_weights": trainer.reward_weights.detach().cpu().clone(),
                }
            )
        return out

    trainer._generate_and_score_completions = recording


def main() -> int:
    import os

    import alignkit.train
    from alignkit.cli import main as alignkit_main
    from alignkit.distributed import rank
    from alignkit.errors import AlignkitError

    dump_dir = Path(sys.argv[1])
    build = alignkit.train.build_trainer

    def build_with_dump(recipe, model_path, tokenizer, callbacks=None, builder_args=None):
        if os.environ.get("ALIGNKIT_TEST_FAIL_RANK") == str(rank()):
            raise AlignkitError(f"injected by the test on rank {rank()}")
        dump = _dump_callback(dump_dir)
        built = build(recipe, model_path, tokenizer, [*(callbacks or []), dump], builder_args)
        if recipe.args.trainer in ("grpo", "ppo"):
            _record_rollouts(built.trainer, dump.rollouts)
        return built

    alignkit.train.build_trainer = build_with_dump
    return alignkit_main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
