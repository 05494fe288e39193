"""The PPO critic: a scalar value head on a second LoRA adapter of the policy's frozen base (or on a separate
backbone), its forward, and its checkpointing."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
from accelerate.utils import DistributedType
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from transformers import AutoModel
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl.models.utils import disable_gradient_checkpointing

__all__ = ["CRITIC_STATE_FILE", "VALUE_ADAPTER", "CriticMixin", "ValueCritic", "active_adapter"]

CRITIC_STATE_FILE = "ppo_critic.pt"
VALUE_ADAPTER = "value"


class ValueCritic(nn.Module):
    """Scalar value head V(s_t) = w·h_t + b on hidden states, optionally owning a separate backbone."""

    def __init__(self, hidden_size: int, backbone: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(hidden_size, 1)
        # Small (|V| ≈ 0.1) rather than zero: with w = 0 and LoRA B = 0 the critic adapter gets no gradient for two
        # steps, since each blocks the other's gradient.
        nn.init.normal_(self.head.weight, std=0.1 / hidden_size**0.5)
        nn.init.zeros_(self.head.bias)


@contextmanager
def active_adapter(layers: list[nn.Module], name: str) -> Iterator[None]:
    # PEFT's set_adapter also flips requires_grad (freezing the other adapter), so swap the active name only.
    previous = [layer._active_adapter for layer in layers]
    for layer in layers:
        layer._active_adapter = name
    try:
        yield
    finally:
        for layer, prev in zip(layers, previous, strict=True):
            layer._active_adapter = prev


class CriticMixin:
    """The critic side of :class:`alignkit.plugins.ppo.ppo_trainer.PPOTrainer` (mixed in before ``GRPOTrainer``).

    The critic shares the frozen base with the policy through a second LoRA adapter ("value") and a small
    ``nn.Linear`` head, so there is one copy of the base in memory; ``value_model_name_or_path`` selects a separate,
    fully trained backbone instead. Its forward always runs without gradient checkpointing, because recomputation in
    the backward would run under the policy adapter. Checkpoints carry its parameters in ``ppo_critic.pt``, saved by
    ``_save_optimizer_and_scheduler`` (before ``trainer_state.json``, which marks a checkpoint complete) and restored
    by ``_load_optimizer_and_scheduler`` (GRPO's own seam for its entropy controller).

    Under DDP the critic runs outside the wrapped model's forward (its adapter is switched on by hand, or it is a
    backbone of its own), which DDP's reducer cannot follow: its hooks fire twice for the critic's parameters in one
    backward. So the critic's parameters are left out of DDP (``_ddp_params_and_buffers_to_ignore``), start from
    rank 0's initialization (broadcast, as DDP does for its own parameters), and their gradients are averaged over
    the processes once per optimizer step, before clipping (:meth:`_sync_critic_grads`, from the Trainer's
    ``_clip_grad_norm`` / ``_get_grad_norm`` seams): the same mean gradient DDP gives the policy.
    """

    def _add_critic(self) -> None:
        """Build the critic (call once, after ``GRPOTrainer.__init__``)."""
        if self.accelerator.distributed_type in (DistributedType.FSDP, DistributedType.DEEPSPEED):
            raise ValueError(
                f"PPOTrainer runs under DDP or in one process, not {self.accelerator.distributed_type.value}: the "
                "critic runs outside the wrapped model's forward, which a sharding engine cannot shard"
            )
        unwrapped = self.accelerator.unwrap_model(self.model)
        if self.args.value_model_name_or_path is not None:
            kwargs = {"trust_remote_code": False, **(self.args.model_init_kwargs or {})}  # remote code: opt-in only
            backbone = AutoModel.from_pretrained(self.args.value_model_name_or_path, **kwargs)
            hidden = backbone.config.get_text_config().hidden_size
        else:  # a second LoRA adapter on the policy's frozen base
            backbone = None
            hidden = unwrapped.config.get_text_config().hidden_size
            unwrapped.add_adapter(VALUE_ADAPTER, unwrapped.peft_config["default"])
        # Attached to the policy model so Trainer's optimizer, device placement and DDP wrapping include it.
        unwrapped.add_module("ppo_critic", ValueCritic(hidden, backbone).to(unwrapped.device))
        self._critic_params = {
            n: p for n, p in unwrapped.named_parameters() if n.startswith("ppo_critic.") or f".{VALUE_ADAPTER}." in n
        }
        self._tuner_layers = [m for m in unwrapped.modules() if isinstance(m, BaseTunerLayer)]
        self._critic_outside_ddp = self.accelerator.distributed_type in (
            DistributedType.MULTI_CPU,
            DistributedType.MULTI_GPU,
        )
        if self._critic_outside_ddp:  # read by DistributedDataParallel when accelerate wraps the model in train()
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(unwrapped, list(self._critic_params))
            with torch.no_grad():  # DDP's start-of-training broadcast skips ignored parameters: rank 0's init for all
                for param in self._critic_params.values():
                    torch.distributed.broadcast(param.data, src=0)

    def _sync_critic_grads(self) -> None:
        """Under DDP: every critic gradient ← its mean over the processes (a missing one counts as zero)."""
        if not self._critic_outside_ddp:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._critic_params.values()]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.accelerator.num_processes
        for p, chunk in zip(self._critic_params.values(), flat.split([g.numel() for g in grads]), strict=True):
            p.grad = chunk.view_as(p).clone()

    def _clip_grad_norm(self, model: nn.Module):
        self._sync_critic_grads()  # before the norm: clipping must see the averaged critic gradients
        return super()._clip_grad_norm(model)

    def _get_grad_norm(self, model: nn.Module, grad_norm: Any = None):
        if grad_norm is None:  # max_grad_norm = 0: _clip_grad_norm did not run this step
            self._sync_critic_grads()
        return super()._get_grad_norm(model, grad_norm=grad_norm)

    def _unfreeze_critic(self) -> None:
        # PEFT resets requires_grad of non-active adapters on add_adapter, enable/disable (GRPO's reference forward)
        # and load_adapter (Trainer's resume), so re-assert it before the optimizer is built and before each forward.
        for p in self._critic_params.values():
            p.requires_grad_(True)

    def create_optimizer(self, *args: Any, **kwargs: Any) -> torch.optim.Optimizer:
        self._unfreeze_critic()
        return super().create_optimizer(*args, **kwargs)

    def _values(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, n_completion: int) -> torch.Tensor:
        """(B, P+C) ids → (B, C) values; V for completion token t is read at the position *before* it."""
        critic = self.accelerator.unwrap_model(self.model).ppo_critic
        self._unfreeze_critic()
        backbone, adapter = critic.backbone, nullcontext()
        if critic.backbone is None:  # the shared base under the value adapter
            backbone = self.accelerator.unwrap_model(self.model).get_base_model().base_model
            adapter = active_adapter(self._tuner_layers, VALUE_ADAPTER)
        # The prompt prefix the rows share runs once, on either backbone (ppo_forward.py).
        input_ids, attention_mask, shared = self._prefix_split(
            input_ids, attention_mask, n_completion, critic.backbone
        )
        with adapter, shared, disable_gradient_checkpointing(backbone, self.args.gradient_checkpointing_kwargs):
            hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        hidden = hidden[:, -n_completion - 1 : -1]
        return critic.head(hidden.to(critic.head.weight.dtype)).squeeze(-1)

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        # here rather than after _save_checkpoint: before trainer_state.json, the file that marks a checkpoint
        # complete, so a kill while saving never leaves a complete-looking checkpoint without its critic
        super()._save_optimizer_and_scheduler(output_dir)
        self._save_critic(output_dir)

    def _save_checkpoint(self, model: nn.Module, trial: Any) -> None:
        super()._save_checkpoint(model, trial)
        if self.args.save_only_model:  # the Trainer skipped _save_optimizer_and_scheduler: the critic still goes in
            folder = f"{self._get_output_dir(trial=trial)}/{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            self._save_critic(folder)

    def _save_critic(self, folder: str) -> None:
        if self.args.should_save:
            critic = {n: p.detach().cpu() for n, p in self._critic_params.items()}
            torch.save({"critic": critic}, os.path.join(folder, CRITIC_STATE_FILE))

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, CRITIC_STATE_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: missing PPO critic state; cannot resume this checkpoint as PPO")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if set(state["critic"]) != set(self._critic_params):
            raise ValueError(f"{path}: critic parameters do not match this model (different critic configuration?)")
        with torch.no_grad():
            for name, tensor in state["critic"].items():
                self._critic_params[name].copy_(tensor)
