"""PPOTrainer's forward economies (plugins/ppo/ppo_forward.py, plugins/ppo/ppo_logps.py): the compact fused head
gives the same log-probs, entropies and gradients as TRL's all-position CPU path; log-probs captured while sampling
equal a recomputation; the trainer skips the π_old forward after its check rollout, and keeps recomputing when the
check fails or is off."""

import inspect

import pytest
import torch
import trl
from transformers import AutoModelForCausalLM, AutoTokenizer

import alignkit.plugins.ppo.ppo_forward as ppo_forward
from alignkit.plugins.ppo.ppo_logps import SampledLogProbs, compact_fused_head


def test_fused_head_seam_still_exists():
    # compact_fused_head swaps this module global; TRL must still read it in the fused forward to pick the branch.
    import trl.trainer.utils as trl_utils

    assert trl.__version__.startswith("1.16.")
    assert callable(trl_utils._use_triton)
    assert "compact = _use_triton(hidden_states.device)" in inspect.getsource(trl_utils.add_fused_lm_head)


@pytest.fixture(scope="module")
def lm(tiny_model):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tiny_model, padding_side="left")
    return model, tok


def _batch(tok):
    # Left padding: the two prompts have different lengths, as in a rollout.
    texts = ["What is 2 + 2?", "Name a colour that is often seen in the sky on a clear summer afternoon."]
    return tok(texts, return_tensors="pt", padding=True)


def test_compact_fused_head_equals_full_path(lm, monkeypatch):
    import trl.trainer.utils as trl_utils
    from trl.trainer.utils import add_fused_lm_head

    rows = []  # positions projected through the head, per call
    apply = trl_utils._ChunkedLogProbFunction.apply
    monkeypatch.setattr(trl_utils._ChunkedLogProbFunction, "apply", lambda h, *a: rows.append(len(h)) or apply(h, *a))
    model, tok = lm
    add_fused_lm_head(model, temperature=0.7, outputs=("log_probs", "entropy"))
    enc = _batch(tok)
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    labels[:, :-4] = -100  # only the last 4 positions are "completion", as in PPO
    results = []
    for ctx in (torch.enable_grad, compact_fused_head):
        model.zero_grad()
        with ctx():
            out = model(**enc, labels=labels, fused_lm_head=True)
        (out.log_probs.sum() + out.entropy.sum()).backward()
        grad = model.model.layers[0].self_attn.q_proj.weight.grad.clone()
        results.append((out.log_probs.detach(), out.entropy.detach(), grad))
    del model.forward  # drop the patched forward for the other tests
    assert rows == [2 * (enc["input_ids"].size(1) - 1), 2 * 4]  # all positions, then only the labelled ones
    for full, compact in zip(results[0], results[1], strict=True):
        torch.testing.assert_close(compact, full, rtol=1e-5, atol=1e-6)
    assert results[0][0].abs().sum() > 0


def test_sampled_logprobs_equal_a_recomputed_forward(lm):
    model, tok = lm
    enc = _batch(tok)
    temperature = 0.7
    sampled = SampledLogProbs(temperature)
    torch.manual_seed(1)
    with sampled.capture(model, model):
        seqs = model.generate(**enc, do_sample=True, temperature=temperature, max_new_tokens=6, top_k=0)
    assert "generate" not in vars(model)  # the wrapper is gone
    width = seqs.size(1) - enc["input_ids"].size(1)
    assert sampled.logps.shape == (2, width)
    attn = torch.cat([enc["attention_mask"], torch.ones(2, width, dtype=torch.long)], dim=1)
    with torch.no_grad():
        logits = model(input_ids=seqs, attention_mask=attn).logits[:, -width - 1 : -1] / temperature
    expected = torch.log_softmax(logits, -1).gather(-1, seqs[:, -width:, None]).squeeze(-1)
    torch.testing.assert_close(sampled.logps, expected, rtol=0, atol=1e-5)
    # serve() aligns to the trainer's padded completion ids and refuses ids that are not the sampled ones.
    mask = torch.ones(2, width + 2, dtype=torch.long)
    mask[:, width:] = 0
    padded = torch.nn.functional.pad(seqs[:, -width:], (0, 2), value=tok.pad_token_id)
    torch.testing.assert_close(sampled.serve(padded, mask)[:, :width], expected, rtol=0, atol=1e-5)
    assert sampled.serve(padded.roll(1, dims=0), mask) is None


def test_two_generate_calls_invalidate_the_capture(lm):
    model, tok = lm
    sampled = SampledLogProbs(1.0)
    enc = _batch(tok)
    with sampled.capture(model, model):
        model.generate(**enc, do_sample=True, max_new_tokens=2)
        seqs = model.generate(**enc, do_sample=True, max_new_tokens=2)
    assert sampled.serve(seqs[:, -2:], torch.ones(2, 2)) is None


def _count_rollout_forwards(monkeypatch) -> list[int]:
    calls = []
    original = trl.GRPOTrainer._get_per_token_logps_and_entropies

    def counted(self, *args, **kwargs):
        calls.append(int(bool(kwargs.get("compute_entropy"))))  # 1 = loss forward, 0 = rollout (π_old or ref)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(trl.GRPOTrainer, "_get_per_token_logps_and_entropies", counted)
    return calls


def _two_rollouts(model_path, out, **overrides):
    from test_ppo import _trainer

    # 2 rollouts of 4 sequences, each used for one PPO epoch of 2 minibatches: 4 optimizer steps.
    args = dict(max_steps=4, num_iterations=1, steps_per_generation=2, save_strategy="no")
    return _trainer(model_path, out, **{**args, **overrides})


@pytest.mark.parametrize("case", ["trusted", "check fails", "off"])
def test_trainer_skips_old_logp_forward_once_checked(tiny_model, tmp_path, monkeypatch, case):
    if case == "check fails":
        monkeypatch.setattr(ppo_forward, "SAMPLED_LOGP_TOLERANCE", -1.0)
    calls = _count_rollout_forwards(monkeypatch)
    # share_prompt_prefix off: its own one-time check would add a forward to the count (tested in test_ppo_prefix.py)
    trainer = _two_rollouts(tiny_model, tmp_path, old_logps_from_sampling=case != "off", share_prompt_prefix=False)
    trainer.train()
    rollout_forwards = calls.count(0)
    # Rollout 1: π_old (the check) + reference. Rollout 2: reference only once sampled log-probs are trusted.
    assert trainer._sampled_trusted is {"trusted": True, "check fails": False, "off": None}[case]
    if case == "off":
        assert trainer.sampled_logp_gap is None  # no check rollout ran
    else:  # fp32 sampling and training forward agree to rounding; the gap is kept either way
        largest, mean = trainer.sampled_logp_gap
        assert 0.0 <= mean <= largest < 1e-3
    assert rollout_forwards == (3 if case == "trusted" else 4)
    assert calls.count(1) == 4  # one loss forward per optimizer step, unchanged


@pytest.mark.parametrize("autocast", [True, False])
def test_rollouts_sample_in_the_training_precision(tiny_model, tmp_path, monkeypatch, autocast):
    # Under bf16 training, TRL samples a PEFT policy outside autocast (PeftModel.generate steps the base model's own
    # forward, not the autocast-wrapped one); autocast_generation=True samples under it. Record the autocast state of
    # every decoder forward that runs inside generate.
    import transformers

    inside, seen = [], []
    original = transformers.GenerationMixin.generate

    def generate(self, *args, **kwargs):
        inside.append(True)
        try:
            return original(self, *args, **kwargs)
        finally:
            inside.pop()

    monkeypatch.setattr(transformers.GenerationMixin, "generate", generate)
    trainer = _two_rollouts(tiny_model, tmp_path, bf16=True, autocast_generation=autocast, max_steps=2)
    layer = trainer.accelerator.unwrap_model(trainer.model).get_base_model().model.layers[0]
    layer.register_forward_pre_hook(
        lambda module, args: seen.append(torch.is_autocast_enabled("cpu")) if inside else None
    )
    trainer.train()
    assert len(seen) > 1  # prefill and decode steps of the rollout
    assert set(seen) == {autocast}
