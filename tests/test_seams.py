"""Guards for the TRL internals our trainers rely on: fail loudly if TRL moves them (review before bumping TRL).

Each assertion names the plugin that depends on it. Fast: only inspects TRL's source, loads no model.
"""

from __future__ import annotations

import inspect

import pytest

trl = pytest.importorskip("trl")


def _src(fn) -> str:
    return inspect.getsource(fn)


def test_trl_minor_version_is_the_reviewed_one():
    assert trl.__version__.startswith("1.16."), f"plugins were reviewed against TRL 1.16, found {trl.__version__}"


def test_grpo_advantage_seam():
    """plugins/grpo/grpo_trainer.py overrides _generate_and_score_completions and wraps _calculate_rewards."""
    from trl import GRPOTrainer

    assert list(inspect.signature(GRPOTrainer._generate_and_score_completions).parameters) == ["self", "inputs"]
    assert list(inspect.signature(GRPOTrainer._calculate_rewards).parameters) == [
        "self",
        "inputs",
        "prompts",
        "completions",
        "completion_ids_list",
    ]
    src = _src(GRPOTrainer._generate_and_score_completions)
    # Rewards come from _calculate_rewards (gathered over processes), weighted by self.reward_weights, and the local
    # slice of the advantages is returned under "advantages".
    assert "rewards_per_func = self._calculate_rewards(inputs, prompts, completions, completion_ids_list)" in src
    assert "self.reward_weights" in src
    assert "self.accelerator.process_index * len(prompts)" in src
    assert '"advantages": advantages' in src
    assert "self.num_generations_eval" in src


def test_grpo_beta_and_kl_metric_seam():
    """plugins/grpo/grpo_trainer.py moves self.beta and reads the `kl` metric that _compute_loss appends once per
    call."""
    from trl import GRPOTrainer

    src = _src(GRPOTrainer._compute_loss)
    assert "per_token_loss + self.beta * per_token_kl" in src
    assert 'self._metrics[mode]["kl"].append(' in src
    assert "return self._compute_loss(model, inputs)" in _src(GRPOTrainer.compute_loss)
    assert "if self.beta != 0.0:" in _src(GRPOTrainer._generate_and_score_completions)  # reference logps need β > 0


def test_dpo_forward_order_seam():
    """plugins/dpo/dpo_trainer.py hooks the fused-head forwards inside _compute_loss: policy first, reference
    second."""
    from trl import DPOTrainer

    assert "return self._compute_loss(model, inputs, return_outputs)" in _src(DPOTrainer.compute_loss)
    src = _src(DPOTrainer._compute_loss)
    policy = src.index("outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)")
    reference = src.index("ref_outputs = self.model(**ref_model_kwargs, labels=labels, fused_lm_head=True)")
    assert policy < reference
    assert "ref_outputs = self.ref_model(**ref_model_kwargs, labels=labels, fused_lm_head=True)" in src
    assert "ref_per_token_logps = ref_outputs.log_probs[:, -seq_len:]" in src
    assert 'ref_chosen_logps, ref_rejected_logps = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]' in src
    assert "chosen_logratios = chosen_logps - ref_chosen_logps" in src
    assert "self.beta * delta_score" in src
    # The tilt of the reference sits at the first completion token, inside the `shared` part that ld_alpha keeps.
    assert "shared_mask = (comp_pos > 0) & (comp_pos <= shared_lens.unsqueeze(1))" in src


def test_dpo_precompute_reference_seam():
    """plugins/dpo/dpo_trainer.py runs TRL's precompute of the reference log-probs through the fast path by wrapping
    compute_ref_log_probs, which _precompute_ref_logps calls once per batch with a fused-head forward."""
    from trl import DPOTrainer

    assert "self.compute_ref_log_probs(model, padded_batch)" in _src(DPOTrainer._precompute_ref_logps)
    assert "model(**model_kwargs, labels=labels, fused_lm_head=True).log_probs" in _src(
        DPOTrainer.compute_ref_log_probs
    )
    # The precompute runs inside __init__, before CPUFastPathMixin.__init__'s own lines after super().__init__.
    assert "self._precompute_ref_logps(" in _src(DPOTrainer.__init__)


def test_sft_fused_head_seam():
    """plugins/sft/fused_head.py rebuilds log-probs of context tokens from the backbone's hidden states and the fused
    head's target log-probs, so it needs TRL's head to be: backbone → last_hidden_state[:, :-1] → f(h·Wᵀ + b) with
    the temperature 1 and the transform that head_transform mirrors, on the forward whose log_probs make the loss."""
    from trl import SFTTrainer
    from trl.trainer.utils import add_fused_lm_head

    head = _src(add_fused_lm_head)
    assert 'backbone_attr = "base_model"' in head
    assert "backbone_outputs = getattr(self, backbone_attr)(*args, **kwargs)" in head
    assert "hidden_states = backbone_outputs.last_hidden_state[:, :-1]" in head
    assert "lm_head = self.get_output_embeddings()" in head
    assert "weight, bias = lm_head.weight, lm_head.bias" in head
    for lookup in (
        'final_logit_softcapping = getattr(text_config, "final_logit_softcapping", None)',
        'logit_scale = getattr(text_config, "logit_scale", None)',
        'logit_scale = getattr(text_config, "output_multiplier", None)',
        'logit_scale = getattr(text_config, "lm_head_multiplier", None)',
        'logit_scale = logits_scaling if text_config.model_type == "hyperclovax" else 1 / logits_scaling',
    ):
        assert lookup in head, lookup
    init = _src(SFTTrainer.__init__)
    assert 'outputs=("log_probs", "entropy", "is_top1"),' in init  # no temperature: 1.0
    loss = _src(SFTTrainer.compute_loss)
    assert (
        "outputs = model(**inputs, fused_lm_head=True)\n                    per_token_loss = -outputs.log_probs"
        in loss
    )


def test_metrics_buffer_seam():
    """All four plugins append to self._metrics[mode][name], which each TRL trainer's log() averages and clears."""
    from trl import DPOTrainer, GRPOTrainer, RewardTrainer, SFTTrainer

    for cls in (SFTTrainer, RewardTrainer, DPOTrainer, GRPOTrainer):
        assert "self._metrics" in _src(cls.__init__), cls.__name__
        assert "self._metrics[mode]" in _src(cls.log), cls.__name__


def test_pure_modules_do_not_import_trl():
    """`import alignkit.plugins.<maths>` must stay light: the trainer names are resolved lazily (PEP 562)."""
    import subprocess
    import sys

    code = (
        "import sys, alignkit.plugins, alignkit.plugins.kl, alignkit.plugins.sft.unlikelihood, "
        "alignkit.plugins.reward.length_decorrelation; print('trl' in sys.modules or 'transformers' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False"


def test_fused_head_function_seam():
    """plugins/common/fast_path.py swaps trl.trainer.utils._ChunkedLogProbFunction (and _use_triton) inside
    cpu_fast_head: TRL's fused forward must still look both up as module globals at call time, and the kernel's
    arguments must still be the ones CompactHeadLogProb takes, in the same order."""
    import trl.trainer.utils as trl_utils
    from trl.kernels import ChunkedLogProbFunction

    from alignkit.plugins.common.head_logprobs import CompactHeadLogProb

    src = _src(trl_utils.add_fused_lm_head)
    assert "compact = _use_triton(hidden_states.device)" in src
    assert "per_token = _ChunkedLogProbFunction.apply(" in src
    assert trl_utils._ChunkedLogProbFunction is ChunkedLogProbFunction
    theirs = list(inspect.signature(ChunkedLogProbFunction.forward).parameters)
    ours = list(inspect.signature(CompactHeadLogProb.forward).parameters)
    assert ours[: len(theirs)] == theirs and ours[len(theirs) :] == ["weight_cast"]


def test_trainer_grad_norm_seams_for_the_ppo_critic_under_ddp():
    """plugins/ppo/ppo_critic.py averages the critic's gradients (kept out of DDP) in ``_clip_grad_norm``, or in
    ``_get_grad_norm`` when clipping is off: both run once per optimizer step, before ``optimizer.step()``."""
    from transformers import Trainer

    assert list(inspect.signature(Trainer._clip_grad_norm).parameters) == ["self", "model"]
    assert list(inspect.signature(Trainer._get_grad_norm).parameters) == ["self", "model", "grad_norm"]
    loop = _src(Trainer._run_epoch)
    clip, norm, step = (
        loop.index("grad_norm = self._clip_grad_norm(model)"),
        loop.index("grad_norm = self._get_grad_norm(model, grad_norm=grad_norm)"),
        loop.index("self.optimizer.step()"),
    )
    assert clip < norm < step
