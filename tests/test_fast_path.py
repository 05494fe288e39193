"""CPU fast path (``cpu_fast_path``): the head maths by hand and against TRL's kernel, the frozen-base cast, and
one real optimizer step of SFT, DPO and reward with the fast path on vs off (loss and gradients: equal in fp32,
within bf16 rounding under bf16 autocast), plus the bad-config errors."""

from __future__ import annotations

import pytest
import torch
from plugin_runs import CPU

from alignkit.plugins.common.fast_path import cpu_fast_head, frozen_linear_cast
from alignkit.plugins.common.head_logprobs import TOKEN_CHUNK, CompactHeadLogProb, WeightCastCache

ALL_OUTPUTS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


# --------------------------------------------------------------------------------------------------- head maths
def test_head_hand_example():
    # h = [1], W = [[1], [2], [0]] → logits z = [1, 2, 0]; target y = 1.
    # Σ e^z = e + e² + 1 = 2.718282 + 7.389056 + 1 = 11.107338 → log Z = 2.407606
    # log p_y = 2 − 2.407606 = −0.407606;  p = [0.244728, 0.665241, 0.090031]
    # H = −Σ p log p = 0.244728·1.407606 + 0.665241·0.407606 + 0.090031·2.407606
    #   = 0.344481 + 0.271156 + 0.216758 = 0.832396
    # ∂ log p_y / ∂h = W_y − Σ p_v W_v = 2 − (0.244728 + 2·0.665241) = 0.424790
    h = torch.tensor([[1.0]], requires_grad=True)
    w = torch.tensor([[1.0], [2.0], [0.0]])
    lp, ent, lssp, mean, top1 = CompactHeadLogProb.apply(h, w, None, torch.tensor([1]), 1.0, 0, None, 1.0, ALL_OUTPUTS)
    assert lp.item() == pytest.approx(-0.407606, abs=1e-6)
    assert ent.item() == pytest.approx(0.832396, abs=1e-6)
    # log Σ p² = log(0.244728² + 0.665241² + 0.090031²) = log(0.059892 + 0.442546 + 0.008106) = log(0.510543)
    #          = −0.672280
    assert lssp.item() == pytest.approx(-0.672280, abs=1e-5)
    assert mean.item() == pytest.approx(1.0) and top1.item() is True
    lp.backward()
    assert h.grad.item() == pytest.approx(0.424790, abs=1e-6)


def _trl_vs_fast(autocast: bool, softcap, scale, bias: bool, n_rows: int = 2 * TOKEN_CHUNK + 44):
    """Outputs and gradients (hidden, weight, bias) of TRL's kernel and ours on the same random inputs, for the
    loss Σ g·log p + Σ g'·H (both per-token outputs carry gradient)."""
    from trl.kernels import ChunkedLogProbFunction

    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(n_rows, 32, generator=gen)
    weight = torch.randn(1000, 32, generator=gen) * 0.3
    b = torch.randn(1000, generator=gen) * 0.1 if bias else None
    targets = torch.randint(0, 1000, (n_rows,), generator=gen)
    g_lp, g_ent = torch.randn(n_rows, generator=gen), torch.randn(n_rows, generator=gen)
    results = []
    for fn in (ChunkedLogProbFunction, CompactHeadLogProb):
        leaves = [x.clone().requires_grad_() for x in (hidden, weight) + ((b,) if bias else ())]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = fn.apply(leaves[0], leaves[1], leaves[2] if bias else None, targets, 0.7, 256, softcap, scale,
                           ALL_OUTPUTS[1:])  # fmt: skip
        ((out[0] * g_lp).sum() + (out[1] * g_ent).sum()).backward()
        results.append(([x.detach() for x in out], [leaf.grad for leaf in leaves]))
    return results


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


@pytest.mark.parametrize("softcap,scale,bias", [(None, 1.0, False), (5.0, 0.5, True)])
def test_head_equals_trl_in_fp32(softcap, scale, bias):
    (trl_out, trl_grads), (out, grads) = _trl_vs_fast(False, softcap, scale, bias)
    for ours, theirs in zip(out, trl_out, strict=True):
        if ours.dtype == torch.bool:
            assert torch.equal(ours, theirs)
        else:
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    for ours, theirs in zip(grads, trl_grads, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("softcap,scale,bias", [(None, 1.0, False), (5.0, 0.5, True)])
def test_head_within_bf16_rounding_of_trl(softcap, scale, bias):
    (trl_out, trl_grads), (out, grads) = _trl_vs_fast(True, softcap, scale, bias)
    # Forward: the logits are rounded to bf16 exactly as in TRL's tile, then everything is fp32 in both.
    for ours, theirs in zip(out, trl_out, strict=True):
        if ours.dtype != torch.bool:
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    # Backward: TRL keeps the gradient GEMMs' results in fp32, ours rounds them once to bf16 (2^-9 relative per
    # element): the relative error is that rounding, far inside bf16 autocast's own error vs fp32 (~1e-2, measured
    # 2.4e-3 to 9e-3 on these inputs).
    for ours, theirs in zip(grads, trl_grads, strict=True):
        assert _rel(ours, theirs) < 4e-3


def test_head_without_rows_is_a_differentiable_zero():
    h = torch.zeros(0, 8, requires_grad=True)
    out = CompactHeadLogProb.apply(h, torch.randn(10, 8), None, torch.zeros(0, dtype=torch.long), 1.0, 0, None, 1.0,
                                   ALL_OUTPUTS[1:])  # fmt: skip
    assert out[0].shape == (0,) and out[4].dtype == torch.bool
    out[0].sum().backward()
    assert h.grad.shape == (0, 8)


def test_weight_cast_cache_reuses_only_frozen_unchanged_weights():
    cache = WeightCastCache()
    frozen = torch.randn(4, 3)
    first = cache.get(frozen, torch.bfloat16)
    assert cache.get(frozen, torch.bfloat16) is first  # cast once
    frozen.add_(1.0)  # an in-place update bumps the version counter: a stale copy must not be served
    second = cache.get(frozen, torch.bfloat16)
    assert second is not first and torch.equal(second, frozen.to(torch.bfloat16))
    trained = torch.randn(4, 3, requires_grad=True)
    assert cache.get(trained, torch.bfloat16) is not cache.get(trained, torch.bfloat16)
    assert cache.get(frozen, torch.float32).data_ptr() == frozen.data_ptr()  # already that dtype: no copy


# --------------------------------------------------------------------------------------------- frozen-base cast
def test_frozen_linear_cast_skips_trained_tied_and_restores(tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32),
        LoraConfig(task_type="CAUSAL_LM", r=4, target_modules="all-linear"),
    )
    base_q = model.base_model.model.model.layers[0].self_attn.q_proj
    embed = model.get_input_embeddings().weight
    original = base_q.base_layer.weight.detach().clone()
    storage = base_q.base_layer.weight.data_ptr()
    with pytest.raises(RuntimeError, match="boom"), frozen_linear_cast([model, None], torch.bfloat16) as n_cast:
        assert n_cast > 0
        assert base_q.base_layer.weight.dtype == torch.bfloat16  # frozen base: cast
        assert torch.equal(base_q.base_layer.weight, original.to(torch.bfloat16))  # autocast's exact copy
        assert base_q.lora_A["default"].weight.dtype == torch.float32  # trains: untouched
        assert embed.dtype == torch.float32  # tied to the embedding (the LM head): untouched
        raise RuntimeError("boom")
    weight = base_q.base_layer.weight  # restored even after the error: the same fp32 storage, unchanged
    assert weight.dtype == torch.float32 and weight.data_ptr() == storage and torch.equal(weight, original)


# ------------------------------------------------------------------------------------ one real step, fast vs TRL
class _GradProbe:
    """Keeps the trainable gradients just before the optimizer step, and the dtype of a frozen base weight then."""

    def __new__(cls):
        from transformers import TrainerCallback

        class Probe(TrainerCallback):
            grads: dict = {}
            base_dtype = None

            def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
                self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
                self.base_dtype = next(p.dtype for n, p in model.named_parameters() if "base_layer.weight" in n)

        return Probe()


def _pairs():
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": f"Question number {i}: what should I do about it?"}],
                "chosen": [{"role": "assistant", "content": "A fine and helpful answer. " * (2 + i)}],
                "rejected": [{"role": "assistant", "content": "No no no." * (1 + i % 2)}],
            }
            for i in range(4)
        ]
    )


def _prompt_completion():
    from datasets import Dataset

    return Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": f"Please say hello to person {i}, and be polite about it."}],
                "completion": [{"role": "assistant", "content": "hello there, world " * (1 + i % 3)}],
            }
            for i in range(4)
        ]
    )


def _run_one_step(kind: str, model_path: str, tmp_path, fast: bool, bf16: bool, **extra_args):
    """One optimizer step (batch 4) with LoRA; returns ``(loss, grads, base weight dtype during the step, trainer)``.
    No gradient clipping: the probe reads the gradients after it, and clipping to norm 1 would hide a scale error."""
    from peft import LoraConfig

    import alignkit.plugins as ak

    out = str(tmp_path / f"{kind}-{fast}-{bf16}")
    common = dict(CPU, bf16=bf16, max_steps=1, per_device_train_batch_size=4, max_grad_norm=0.0, logging_steps=1,
                  save_strategy="no", output_dir=out, cpu_fast_path=fast, **extra_args)  # fmt: skip
    lora = dict(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear")
    if kind == "dpo":
        args, data, task = ak.DPOConfig(**common, max_length=64), _pairs(), "CAUSAL_LM"
    elif kind == "sft":
        args, data, task = ak.SFTConfig(**common, max_length=64), _prompt_completion(), "CAUSAL_LM"
    else:
        args, data, task = ak.RewardConfig(**common, max_length=64), _pairs(), "SEQ_CLS"
    trainer_cls = {"dpo": ak.DPOTrainer, "sft": ak.SFTTrainer, "reward": ak.RewardTrainer}[kind]
    extra = {"modules_to_save": ["score"]} if kind == "reward" else {}
    probe = _GradProbe()
    trainer = trainer_cls(
        model=model_path,
        args=args,
        train_dataset=data,
        peft_config=LoraConfig(task_type=task, **lora, **extra),
        callbacks=[probe],
    )
    trainer.train()
    return trainer.state.log_history[0]["loss"], probe.grads, probe.base_dtype, trainer


def _packed_calls(monkeypatch) -> list[int]:
    """Sequences per call of the packed (per-sequence) attention the fast path swaps in."""
    import alignkit.plugins.common.packed_forward as packed_forward

    calls: list[int] = []
    original = packed_forward.segment_attention
    monkeypatch.setattr(
        packed_forward,
        "segment_attention",
        lambda *a, **k: (
            calls.append(sum(len(tails) for _, tails in packed_forward._active.groups)) or original(*a, **k)
        ),
    )
    return calls


def _head_rows(monkeypatch) -> list[int]:
    """Rows each fast-head call projects (recorded through the function the fast path swaps in)."""
    rows: list[int] = []
    apply = CompactHeadLogProb.apply
    monkeypatch.setattr(CompactHeadLogProb, "apply", lambda h, *a: rows.append(len(h)) or apply(h, *a))
    return rows


@pytest.mark.parametrize("kind", ["dpo", "sft"])
def test_fast_step_equals_trl_step_in_fp32(kind, tiny_model, tmp_path, monkeypatch):
    rows, packed = _head_rows(monkeypatch), _packed_calls(monkeypatch)
    slow_loss, slow_grads, _, _ = _run_one_step(kind, tiny_model, tmp_path, fast=False, bf16=False)
    assert rows == [] and packed == []  # off: TRL's own head and padded forwards
    fast_loss, fast_grads, _, trainer = _run_one_step(kind, tiny_model, tmp_path, fast=True, bf16=False)
    # The fast head ran, on the scored positions only (DPO: policy then reference forward).
    batch = next(iter(trainer.get_train_dataloader()))
    labels = batch["labels"] if kind == "sft" else batch["input_ids"].masked_fill(batch["completion_mask"] == 0, -100)
    scored = int((labels[:, 1:] != -100).sum())
    assert rows and set(rows) == {scored} and scored < labels[:, 1:].numel()
    # ... and padding-free: every layer's attention ran per sequence (the batch has padding to drop).
    assert bool((batch["attention_mask"] == 0).any()) and set(packed) == {len(labels)}
    assert fast_loss == pytest.approx(slow_loss, rel=1e-6, abs=1e-6)
    assert fast_grads.keys() == slow_grads.keys()
    assert sum(g.norm() for g in slow_grads.values()) > 0  # a vacuous all-zero comparison would pass anything
    for name, grad in slow_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-4, atol=1e-7, msg=name)


@pytest.mark.parametrize("kind", ["dpo", "sft"])
def test_fast_step_within_bf16_rounding_of_trl_step(kind, tiny_model, tmp_path):
    ref_loss, ref_grads, _, _ = _run_one_step(kind, tiny_model, tmp_path, fast=False, bf16=False)
    slow_loss, slow_grads, slow_dtype, _ = _run_one_step(kind, tiny_model, tmp_path, fast=False, bf16=True)
    fast_loss, fast_grads, fast_dtype, trainer = _run_one_step(kind, tiny_model, tmp_path, fast=True, bf16=True)
    assert (slow_dtype, fast_dtype) == (torch.float32, torch.bfloat16)  # the frozen base was cast during the step
    assert next(p for n, p in trainer.model.named_parameters() if "base_layer.weight" in n).dtype == torch.float32
    # bf16 tolerance: the fast step's distance to TRL's bf16 step is at most TRL bf16's own distance to fp32 (plus
    # a floor for when that is tiny), for the loss and for the stacked gradient vector.
    assert abs(fast_loss - slow_loss) <= max(abs(slow_loss - ref_loss), 1e-3 * abs(slow_loss))
    names = sorted(ref_grads)
    fast_g, slow_g, ref_g = (torch.cat([g[n].flatten() for n in names]) for g in (fast_grads, slow_grads, ref_grads))
    assert slow_g.norm() > 0
    assert _rel(fast_g, slow_g) <= max(_rel(slow_g, ref_g), 1e-2)


def test_precomputed_reference_runs_the_fast_path_and_equals_trl_in_fp32(tiny_model, tmp_path, monkeypatch):
    # precompute_ref_log_probs: TRL computes the reference log-probs once, in __init__; the fast path must cover that
    # forward too (it is a third of a step's forwards otherwise), with TRL's numbers.
    rows = _head_rows(monkeypatch)
    slow = _run_one_step("dpo", tiny_model, tmp_path, fast=False, bf16=False, precompute_ref_log_probs=True)
    assert rows == []
    fast = _run_one_step("dpo", tiny_model, tmp_path, fast=True, bf16=False, precompute_ref_log_probs=True)
    # One fast-head call for the precompute (4 pairs, one batch), then only the policy's in the step: no reference
    # forward while training.
    assert len(rows) == 2
    for column in ("ref_chosen_logps", "ref_rejected_logps"):
        got, want = (torch.tensor(run[3].train_dataset[column]) for run in (fast, slow))
        assert bool((want < 0).all())  # real log-probs, not a zero-filled column
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=column)
    assert fast[0] == pytest.approx(slow[0], rel=1e-6, abs=1e-6)
    for name, grad in slow[1].items():
        torch.testing.assert_close(fast[1][name], grad, rtol=1e-4, atol=1e-7, msg=name)


def test_fast_path_with_unlikelihood_keeps_padding_and_equals_trl_in_fp32(tiny_model, tmp_path, monkeypatch):
    # Unlikelihood reads the backbone's (B, T, H) hidden states: the fast path must not pack, and still be exact.
    packed = _packed_calls(monkeypatch)
    slow_loss, slow_grads, _, _ = _run_one_step("sft", tiny_model, tmp_path, False, False, unlikelihood_alpha=0.5)
    fast_loss, fast_grads, _, trainer = _run_one_step("sft", tiny_model, tmp_path, True, False, unlikelihood_alpha=0.5)
    assert packed == [] and trainer.state.log_history[0]["unlikelihood"] > 0
    assert fast_loss == pytest.approx(slow_loss, rel=1e-6, abs=1e-6)
    for name, grad in slow_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-4, atol=1e-7, msg=name)


def test_policy_samples_generate_under_the_frozen_cast(tiny_model, tmp_path):
    # DPO's logged policy samples call generate() inside train(), outside autocast, while the frozen base is bf16.
    _, _, dtype, trainer = _run_one_step("dpo", tiny_model, tmp_path, True, True, policy_sample_steps=1,
                                         policy_sample_max_new_tokens=4)  # fmt: skip
    assert dtype == torch.bfloat16
    assert "lengths/policy" in trainer.state.log_history[0]


def test_reward_fast_step_is_bit_identical_in_bf16(tiny_rm, tmp_path):
    # No LM head: only the frozen-base cast applies, and it rounds exactly as autocast's per-forward cast does.
    slow_loss, slow_grads, _, _ = _run_one_step("reward", tiny_rm, tmp_path, fast=False, bf16=True)
    fast_loss, fast_grads, fast_dtype, _ = _run_one_step("reward", tiny_rm, tmp_path, fast=True, bf16=True)
    assert fast_dtype == torch.bfloat16
    assert fast_loss == slow_loss
    for name, grad in slow_grads.items():
        assert torch.equal(fast_grads[name], grad), name


# ------------------------------------------------------------------------------------------------------ packing
def test_pack_and_unpack_by_hand():
    from types import SimpleNamespace

    from alignkit.plugins.common.packed_forward import pack_batch, unpack_outputs

    # Two right-padded rows: [5, 6, 7] and [8, 9, pad]; labels score the last two tokens of row 0, last of row 1.
    ids = torch.tensor([[5, 6, 7], [8, 9, 0]])
    labels = torch.tensor([[-100, 6, 7], [-100, 9, -100]])
    kwargs = dict(input_ids=ids, attention_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]), labels=labels,
                  fused_lm_head=True)  # fmt: skip
    packed, mask, gather, groups = pack_batch(kwargs)
    assert groups == [(0, [3]), (0, [2])]  # two sequences, nothing shared
    assert packed["input_ids"].tolist() == [[5, 6, 7, 8, 9]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 1]]  # restart at each sequence: no cross attention
    # Token j predicts the next token of its own row: (0,0)->6, (0,1)->7, (0,2)->end, (1,0)->9, (1,1)->end.
    assert packed["shift_labels"].tolist() == [[6, 7, -100, 9, -100]]
    assert packed["attention_mask"] is None and "labels" not in packed
    out = unpack_outputs(SimpleNamespace(log_probs=torch.tensor([[-1.0, -2.0, 0.0, -3.0, 0.0]])), mask, gather)
    # TRL's layout (B, T−1): column t holds the log-prob of token t+1.
    assert out.log_probs.tolist() == [[-1.0, -2.0], [-3.0, 0.0]]


def test_pair_prefix_is_packed_once_by_hand():
    from types import SimpleNamespace

    from alignkit.plugins.common.packed_forward import pack_batch, unpack_outputs

    # One DPO pair: chosen [1, 2, 3, 7, 8] and rejected [1, 2, 3, 9, pad]; the completion (scored) starts at
    # position 3 in both. The prompt [1, 2, 3] is shared, but token 3 (position 2) predicts the first completion
    # token, 7 in one row and 9 in the other, so only [1, 2] is packed once; each row keeps its tail from 3 on.
    ids = torch.tensor([[1, 2, 3, 7, 8], [1, 2, 3, 9, 0]])
    labels = torch.tensor([[-100, -100, -100, 7, 8], [-100, -100, -100, 9, -100]])
    kwargs = dict(input_ids=ids, attention_mask=torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]), labels=labels,
                  fused_lm_head=True)  # fmt: skip
    packed, mask, gather, groups = pack_batch(kwargs, share_pair_prefix=True)
    assert groups == [(2, [3, 2])]  # prefix of 2, then the chosen tail (3 tokens) and the rejected tail (2)
    assert packed["input_ids"].tolist() == [[1, 2, 3, 7, 8, 3, 9]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 3, 4, 2, 3]]  # original positions: same rotary phases
    assert packed["shift_labels"].tolist() == [[-100, -100, 7, 8, -100, 9, -100]]
    assert gather.tolist() == [[0, 1, 2, 3, 4], [0, 1, 5, 6, 0]]  # the rejected row reads the prefix from 0, 1
    out = unpack_outputs(
        SimpleNamespace(log_probs=torch.tensor([[0.0, 0.0, -1.0, -2.0, 0.0, -3.0, 0.0]])), mask, gather
    )
    assert out.log_probs.tolist() == [[0.0, 0.0, -1.0, -2.0], [0.0, 0.0, -3.0, 0.0]]


def test_pack_leaves_unknown_layouts_alone():
    from alignkit.plugins.common.packed_forward import pack_batch

    ids = torch.tensor([[5, 6, 7], [8, 9, 0]])
    base = dict(input_ids=ids, labels=ids, fused_lm_head=True)
    assert pack_batch({**base, "attention_mask": torch.tensor([[1, 1, 1], [0, 1, 1]])}) is None  # left padding
    assert pack_batch({**base, "attention_mask": torch.ones(2, 3, dtype=torch.long)}) is None  # nothing to drop
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    assert pack_batch({**base, "attention_mask": mask, "token_type_ids": ids}) is None  # unknown per-token input
    assert pack_batch({**base, "attention_mask": mask, "fused_lm_head": False}) is None  # not a fused-head call


# ------------------------------------------------------------------------------------------------ bad config
def test_fast_path_rejects_fp16(tmp_path):
    from alignkit.plugins import DPOConfig

    with pytest.raises(ValueError, match="^cpu_fast_path: fp16 is not supported"):
        DPOConfig(output_dir=str(tmp_path), use_cpu=True, fp16=True, cpu_fast_path=True)


@pytest.mark.parametrize("config", ["SFTConfig", "DPOConfig", "RewardConfig"])
def test_fast_path_must_be_a_bool(config, tmp_path):
    import alignkit.plugins as ak

    with pytest.raises(ValueError, match="^cpu_fast_path must be true or false"):
        getattr(ak, config)(output_dir=str(tmp_path), use_cpu=True, cpu_fast_path="yes")


def test_fast_head_context_restores_trl():
    import trl.trainer.utils as trl_utils

    before = (trl_utils._ChunkedLogProbFunction, trl_utils._use_triton)
    with pytest.raises(KeyError), cpu_fast_head():
        assert trl_utils._ChunkedLogProbFunction is not before[0]
        assert trl_utils._use_triton(torch.device("cpu"))
        raise KeyError
    assert (trl_utils._ChunkedLogProbFunction, trl_utils._use_triton) == before
