"""SFT plugin: unlikelihood maths on a hand example, off-by-default equivalence with TRL, a 2-step run, bad config."""

from __future__ import annotations

import math

import pytest
import torch

from alignkit.plugins.unlikelihood import unlikelihood_loss

CPU = dict(bf16=False, use_cpu=True, gradient_checkpointing=False, report_to="none", seed=0)


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
    kwargs = dict(
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-2,
        logging_steps=1,
        max_length=64,
        save_strategy="no",
        **CPU,
    )
    args = cls_config(output_dir=str(tmp_path), **{**kwargs, **extra})
    return cls_trainer(model=model_path, args=args, train_dataset=_sft_data())


def test_off_by_default_matches_trl(tiny_model, tmp_path):
    import trl

    from alignkit.plugins import SFTConfig, SFTTrainer

    ours = _trainer(SFTTrainer, SFTConfig, tiny_model, tmp_path / "a", max_steps=1)
    ours.train()
    stock = _trainer(trl.SFTTrainer, trl.SFTConfig, tiny_model, tmp_path / "b", max_steps=1)
    stock.train()
    assert ours.state.log_history[0]["loss"] == pytest.approx(stock.state.log_history[0]["loss"], abs=1e-6)


def test_unlikelihood_run_trains_and_logs(tiny_model, tmp_path):
    from alignkit.plugins import SFTConfig, SFTTrainer

    trainer = _trainer(SFTTrainer, SFTConfig, tiny_model, tmp_path, unlikelihood_alpha=1.0)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    changed = any(not torch.equal(before[n], p) for n, p in trainer.model.named_parameters() if n in before)
    assert changed
    logged = [h for h in trainer.state.log_history if "unlikelihood" in h]
    assert len(logged) == 2 and all(h["unlikelihood"] > 0 and 0 <= h["repetition_rate"] <= 1 for h in logged)


@pytest.mark.parametrize(
    "kwargs",
    [{"unlikelihood_alpha": -0.1}, {"unlikelihood_alpha": float("nan")}, {"unlikelihood_alpha": 0.5, "packing": True}],
)
def test_invalid_config(kwargs, tmp_path):
    from alignkit.plugins import SFTConfig

    with pytest.raises(ValueError, match="unlikelihood_alpha"):
        SFTConfig(output_dir=str(tmp_path), **CPU, **kwargs)
