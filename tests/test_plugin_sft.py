"""SFT plugin: unlikelihood maths on a hand example, off-by-default equivalence with TRL, a 2-step run, bad config."""

from __future__ import annotations

import math

import pytest
import torch
from plugin_runs import CPU, make_trainer

from alignkit.plugins.sft.fused_head import context_logprobs, sampled_repetition_rate
from alignkit.plugins.sft.unlikelihood import unlikelihood_from_context_logprobs, unlikelihood_loss


def test_unlikelihood_hand_example():
    # Vocab of 3, one sequence [0, 1, 0], all targets labelled. Logits of zero → p(v) = 1/3 for every v.
    # Prediction position 0 (target x_1 = 1): context {0}, C = {0} \ {1} = {0}  → −log(1 − 1/3) = log 1.5
    # Prediction position 1 (target x_2 = 0): context {0, 1}, C = {0, 1} \ {0} = {1} → log 1.5
    # mean over 2 targets = log 1.5 ≈ 0.405465
    logits = torch.zeros(1, 3, 3)
    ids = torch.tensor([[0, 1, 0]])
    penalty, rep = unlikelihood_loss(logits, ids, ids.clone())
    assert penalty.item() == pytest.approx(math.log(1.5), abs=1e-6)
    # argmax of a uniform row is token 0, which is in the context at both positions → rate 1.
    assert rep.item() == pytest.approx(1.0)


def test_unlikelihood_dedup_padding_and_unlabelled_targets():
    # Sequence [2, 2, 1, pad]: position 0 predicts x_1 = 2 (C = {2}\{2} = ∅ → 0);
    # position 1 predicts x_2 = 1, context {2, 2} is the set {2} → counted once: −log(1 − p(2)).
    # Row-1 logits favour token 2: logits [0, 0, ln 2] → p(2) = 2/4 = 0.5 → −log 0.5 = ln 2.
    # Position 2 targets padding (label −100) and is excluded; the padding token 0 is never a candidate.
    logits = torch.zeros(1, 4, 3)
    logits[0, 1, 2] = math.log(2.0)
    ids = torch.tensor([[2, 2, 1, 0]])
    labels = torch.tensor([[2, 2, 1, -100]])
    mask = torch.tensor([[1, 1, 1, 0]])
    penalty, _ = unlikelihood_loss(logits, ids, labels, mask)
    # (0 + ln 2) / 2 labelled targets
    assert penalty.item() == pytest.approx(math.log(2.0) / 2, abs=1e-6)


def test_unlikelihood_gradient_pushes_down_repeats():
    logits = torch.zeros(1, 3, 3, requires_grad=True)
    ids = torch.tensor([[0, 1, 0]])
    penalty, _ = unlikelihood_loss(logits, ids, ids.clone())
    penalty.backward()
    # Position 1's only candidate is token 1: its logit must get a positive gradient (descent lowers it).
    assert logits.grad[0, 1, 1] > 0


def test_fused_path_hand_example():
    # Same case as test_unlikelihood_hand_example, from hidden states: a zero LM head gives z = 0 everywhere, and the
    # fused head's target log-probs are log 1/3, so log Z = 0 − log 1/3 and every context log-prob is log 1/3.
    ids = torch.tensor([[0, 1, 0]])
    hidden = torch.randn(1, 2, 4)
    target_logprobs = torch.full((1, 2), math.log(1 / 3))
    ctx_logp = context_logprobs(hidden, torch.zeros(3, 4), None, ids, target_logprobs)
    assert torch.allclose(ctx_logp, torch.full((1, 2, 3), math.log(1 / 3)))
    penalty = unlikelihood_from_context_logprobs(ctx_logp, ids, ids.clone())
    assert penalty.item() == pytest.approx(math.log(1.5), abs=1e-6)


def _naive_unlikelihood(logits, ids, labels, mask):
    """Reference L_UL written as the paper's sets, one position at a time, from full logits."""
    total, n_targets = 0.0, 0
    for b in range(ids.size(0)):
        for i in range(ids.size(1) - 1):
            if labels[b, i + 1] == -100:
                continue
            n_targets += 1
            probs = torch.softmax(logits[b, i].double(), dim=-1)
            context = {int(ids[b, j]) for j in range(i + 1) if mask[b, j]}
            for c in context - {int(ids[b, i + 1])}:
                total = total - torch.log((1 - probs[c]).clamp(min=1e-5))
    return total / max(n_targets, 1)


@pytest.mark.parametrize("scale, softcap", [(1.0, None), (0.5, 3.0)])
def test_fused_path_matches_naive_reference(scale, softcap):
    # Candidates log-probs from hidden states + the target log-prob (as TRL's fused head returns it) must give the same
    # penalty and the same gradients as the full softmax, including the logit transform (scale, softcap).
    gen = torch.Generator().manual_seed(0)
    vocab, dim = 11, 5
    ids = torch.tensor([[3, 4, 3, 5, 4, 4, 0], [7, 7, 2, 9, 2, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]])
    labels = torch.where(mask.bool(), ids, -100)
    labels[0, :2] = -100  # a prompt: its tokens are candidates, never targets
    hidden = torch.randn(2, 6, dim, generator=gen, requires_grad=True)
    weight = (3 * torch.randn(vocab, dim, generator=gen)).requires_grad_()
    bias = torch.randn(vocab, generator=gen, requires_grad=True)

    def full_logits():
        z = (hidden @ weight.T + bias) * scale
        return softcap * torch.tanh(z / softcap) if softcap else z

    # Ours: only the target log-probs come from the full softmax, standing in for TRL's fused head.
    logp = torch.log_softmax(full_logits(), dim=-1)
    target = logp.gather(2, ids[:, 1:].unsqueeze(2)).squeeze(2) * (labels[:, 1:] != -100)
    ctx_logp = context_logprobs(hidden, weight, bias, ids, target, scale, softcap)
    ours = unlikelihood_from_context_logprobs(ctx_logp, ids, labels, mask)
    ours_grads = torch.autograd.grad(ours, (hidden, weight, bias))

    ref = _naive_unlikelihood(full_logits(), ids, labels, mask)
    ref_grads = torch.autograd.grad(ref, (hidden, weight, bias))
    assert ref.item() > 0.1  # the case exercises real probabilities, not ~0
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)
    for got, want in zip(ours_grads, ref_grads, strict=True):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-6)


def test_sampled_repetition_rate_is_exact_on_small_batches():
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 6, (3, 8), generator=gen)
    mask = torch.ones_like(ids)
    mask[2, 5:] = 0
    labels = torch.where(mask.bool(), ids, -100)
    hidden, weight = torch.randn(3, 7, 4, generator=gen), torch.randn(6, 4, generator=gen)
    _, exact = unlikelihood_loss(torch.cat([hidden @ weight.T, torch.zeros(3, 1, 6)], dim=1), ids, labels, mask)
    assert 0 < exact.item() < 1
    assert sampled_repetition_rate(hidden, weight, None, ids, labels, mask).item() == pytest.approx(exact.item())
    # With fewer positions it is a subsample of the same indicator, so it stays a rate.
    assert 0 <= sampled_repetition_rate(hidden, weight, None, ids, labels, mask, max_positions=3).item() <= 1


def _sft_data():
    from datasets import Dataset

    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Say hello {i}"},
                {"role": "assistant", "content": "hello hello hello world hello " * (1 + i % 2)},
            ]
        }
        for i in range(4)
    ]
    return Dataset.from_list(rows)


def _trainer(cls_trainer, cls_config, model_path, tmp_path, **extra):
    return make_trainer(cls_trainer, cls_config, model_path, tmp_path, _sft_data(), **extra)


def test_off_by_default_matches_trl(tiny_model, tmp_path, monkeypatch):
    import trl

    import alignkit.plugins.sft.sft_trainer as sft
    from alignkit.plugins import SFTConfig, SFTTrainer

    # Off means TRL's code path after one check: no hooks, no extra forward, no unlikelihood maths.
    for name in ("capture_fused_forward", "context_logprobs", "unlikelihood_loss", "sampled_repetition_rate"):
        monkeypatch.setattr(sft, name, lambda *a, _name=name, **k: pytest.fail(f"{_name} called with the plugin off"))
    ours = _trainer(SFTTrainer, SFTConfig, tiny_model, tmp_path / "a", max_steps=1)
    ours.train()
    stock = _trainer(trl.SFTTrainer, trl.SFTConfig, tiny_model, tmp_path / "b", max_steps=1)
    stock.train()
    assert ours.state.log_history[0]["loss"] == pytest.approx(stock.state.log_history[0]["loss"], abs=1e-6)
    assert ours.state.log_history[0].keys() == stock.state.log_history[0].keys()


def test_unlikelihood_run_trains_and_logs(tiny_model, tmp_path):
    from alignkit.plugins import SFTConfig, SFTTrainer

    trainer = _trainer(SFTTrainer, SFTConfig, tiny_model, tmp_path, unlikelihood_alpha=1.0)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    changed = any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters() if n in before)
    assert changed
    logged = [h for h in trainer.state.log_history if "unlikelihood" in h]
    assert len(logged) == 2 and all(h["unlikelihood"] > 0 and 0 <= h["repetition_rate"] <= 1 for h in logged)


def test_unlikelihood_reuses_trl_forward_and_matches_full_logits(tiny_model, tmp_path):
    # The trainer's term (hidden states + log-probs captured from TRL's single fused forward) must equal the term from
    # an extra full-logits forward, in value and in its gradient, and the backbone must run once per compute_loss.
    import trl

    from alignkit.plugins import SFTConfig, SFTTrainer

    trainer = _trainer(
        SFTTrainer, SFTConfig, tiny_model, tmp_path, unlikelihood_alpha=1.0, per_device_train_batch_size=4
    )
    model = trainer.model
    with torch.no_grad():  # a peaked head, so that p(c) is far from 1/V and the penalty is not ~0
        model.get_output_embeddings().weight.mul_(40)
    model.train()
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    params = [p for p in model.parameters() if p.requires_grad]

    calls = []
    handle = model.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        ours = trainer.compute_loss(model, dict(batch))
    finally:
        handle.remove()
    assert len(calls) == 1
    penalty = trainer._metrics["train"]["unlikelihood"][-1]
    ours_grads = torch.autograd.grad(ours, params)

    stock = trl.SFTTrainer.compute_loss(trainer, model, dict(batch))
    stock_grads = torch.autograd.grad(stock, params, retain_graph=True)
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    ref, _ = unlikelihood_loss(logits, batch["input_ids"], batch["labels"], batch["attention_mask"])
    ref_grads = torch.autograd.grad(stock + ref, params)

    assert ref.item() > 0.05
    assert penalty == pytest.approx(ref.item(), rel=1e-5)
    assert ours.item() == pytest.approx((stock + ref).item(), rel=1e-6)

    def norm(xs, ys):
        return math.sqrt(sum(((x - y) ** 2).sum().item() for x, y in zip(xs, ys, strict=True)))

    # The error is measured against the size of the unlikelihood gradient, so a wrong or missing gradient through the
    # fused head's log-probs (log Z) would show. It is not ~0: TRL's fused head accumulates its backward in fp32 even
    # for fp64 inputs, so the total gradient (~4000x the unlikelihood part here) carries ~1e-7 relative noise.
    assert norm(ours_grads, ref_grads) < 1e-2 * norm(ref_grads, stock_grads)


def test_unlikelihood_follows_mixed_precision(tiny_model, tmp_path):
    # Under bf16 autocast TRL's fused head projects in bf16; the context logits must be projected the same way, or the
    # recovered log Z is off by the bf16 rounding of the target logit (a 30% error on this peaked head).
    from alignkit.plugins import SFTConfig, SFTTrainer

    trainer = _trainer(
        SFTTrainer, SFTConfig, tiny_model, tmp_path, unlikelihood_alpha=1.0, per_device_train_batch_size=4
    )
    model = trainer.model
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(40)
    model.train()
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        trainer.compute_loss(model, dict(batch))
        ref, _ = trainer._unlikelihood_extra_forward(model, dict(batch))
    assert trainer._metrics["train"]["unlikelihood"][-1] == pytest.approx(ref.item(), rel=1e-3)


@pytest.mark.parametrize(
    "kwargs",
    [{"unlikelihood_alpha": -0.1}, {"unlikelihood_alpha": float("nan")}, {"unlikelihood_alpha": 0.5, "packing": True}],
)
def test_invalid_config(kwargs, tmp_path):
    from alignkit.plugins import SFTConfig

    with pytest.raises(ValueError, match="unlikelihood_alpha"):
        SFTConfig(output_dir=str(tmp_path), **CPU, **kwargs)


def test_head_transform_lookup():
    from types import SimpleNamespace

    from alignkit.plugins.sft.fused_head import head_transform

    assert head_transform(SimpleNamespace()) == (1.0, None)
    assert head_transform(SimpleNamespace(logit_scale=0.25, final_logit_softcapping=30.0)) == (0.25, 30.0)
    assert head_transform(SimpleNamespace(logit_scale=None, lm_head_multiplier=2.0)) == (2.0, None)
    assert head_transform(SimpleNamespace(logits_scaling=4.0, model_type="granite")) == (0.25, None)
    assert head_transform(SimpleNamespace(logits_scaling=4.0, model_type="hyperclovax")) == (4.0, None)
