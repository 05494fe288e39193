"""Shared-prompt-prefix forwards (alignkit/prefix_cache.py) as PPO uses them: the split on a hand case, equality with
the plain forward (log-probs, entropies and LoRA gradients) on Llama and Qwen2, and a PPO run that matches one
without it."""

import contextlib

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignkit import prefix_cache
from alignkit.prefix_cache import shared_prefix, split_at_prefix, supported


def test_split_hand_case(monkeypatch):
    monkeypatch.setattr(prefix_cache, "MIN_PREFIX", 2)
    pad = 0
    # Prompts (left padded to P=5): [7 8 9 4], [7 8 9 5 6], [7 8 9 1]; completions (C=2): [2 3], [2 pad], [4 4].
    ids = torch.tensor([[pad, 7, 8, 9, 4, 2, 3], [7, 8, 9, 5, 6, 2, pad], [pad, 7, 8, 9, 1, 4, 4]])
    mask = torch.tensor([[0, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1, 1]])
    prefix, suffix, suffix_mask = split_at_prefix(ids, mask, n_completion=2)
    # Shared: 7 8 9, but every row must keep one prompt token, and the shortest prompt has 4: L = min(3, 4 - 1) = 3.
    assert prefix.tolist() == [[7, 8, 9]]
    # Remainders 1, 2, 1 tokens -> R = 2 columns: the last 2 prompt columns, masked before each row's remainder.
    assert suffix.tolist() == [[9, 4, 2, 3], [5, 6, 2, pad], [9, 1, 4, 4]]
    assert suffix_mask.tolist() == [[0, 1, 1, 1], [1, 1, 1, 0], [0, 1, 1, 1]]


def test_split_refuses_short_prefix_and_single_rows():
    ids = torch.tensor([[1, 2, 3, 4], [5, 2, 3, 4]])
    assert split_at_prefix(ids, torch.ones_like(ids), 1) is None  # first tokens differ
    assert split_at_prefix(ids[:1], torch.ones_like(ids[:1]), 1) is None


@pytest.mark.parametrize("arch", ["tiny_model", "tiny_qwen"])
def test_shared_prefix_equals_plain_forward(arch, request):
    from trl.trainer.utils import add_fused_lm_head

    path = request.getfixturevalue(arch)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path)
    add_fused_lm_head(model, temperature=0.7, outputs=("log_probs", "entropy"))
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    assert supported(model.get_base_model(), with_gradients=True)
    questions = ["What is 2 + 2?", "What is 13 * 7? Please", "What is 100 - 1?"]
    prompts = [
        tok.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True) for q in questions
    ]
    prompts = [p if isinstance(p, list) else p["input_ids"] for p in prompts]
    width, c = max(map(len, prompts)), 5
    ids = torch.tensor([[tok.pad_token_id] * (width - len(p)) + p for p in prompts])
    mask = (torch.arange(width)[None] >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()
    completion = torch.randint(100, 1000, (3, c))
    completion_mask = torch.ones(3, c, dtype=torch.long)
    completion_mask[1, 3:] = 0  # a completion that ended early (right padding)
    ids, mask = torch.cat([ids, completion], 1), torch.cat([mask, completion_mask], 1)

    def run(input_ids, attention_mask, ctx):
        labels = input_ids.masked_fill(attention_mask == 0, -100)
        labels[:, :-c] = -100
        model.zero_grad()
        with ctx:
            out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True)
        logps, entropy = out.log_probs[:, -c:], out.entropy[:, -c:]
        (logps * completion_mask).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return logps.detach(), entropy.detach(), grads

    plain = run(ids, mask, contextlib.nullcontext())
    prefix, suffix, suffix_mask = split_at_prefix(ids, mask, c)
    assert prefix.size(1) >= prefix_cache.MIN_PREFIX and suffix.size(1) < ids.size(1)
    shared = run(suffix, suffix_mask, shared_prefix(model.get_base_model().model, prefix, suffix.size(1)))
    valid = completion_mask.bool()
    torch.testing.assert_close(shared[0][valid], plain[0][valid], rtol=0, atol=1e-5)
    torch.testing.assert_close(shared[1][valid], plain[1][valid], rtol=0, atol=1e-5)
    assert shared[2].keys() == plain[2].keys() and len(plain[2]) > 0
    for name, grad in plain[2].items():
        torch.testing.assert_close(shared[2][name], grad, rtol=1e-4, atol=1e-7)


def test_ppo_run_with_shared_prefix_matches_plain(tiny_model, tmp_path):
    from test_ppo_forward import _two_rollouts

    logs = {}
    for share in (True, False):
        trainer = _two_rollouts(tiny_model, tmp_path / str(share), share_prompt_prefix=share)
        trainer.train()
        assert trainer._prefix_trusted is (True if share else None)
        logs[share] = [h for h in trainer.state.log_history if "policy_loss" in h]
    assert len(logs[True]) == len(logs[False]) == 4
    for on, off in zip(logs[True], logs[False], strict=True):
        keys = {"policy_loss", "value_loss", "entropy", "kl", "score", "value/mean"} & on.keys()
        assert keys >= {"policy_loss", "value_loss", "entropy"} and keys == keys & off.keys()
        for key in keys:
            assert on[key] == pytest.approx(off[key], rel=1e-3, abs=1e-5), key


def test_separate_critic_shares_the_prefix_and_matches_plain(tiny_model, tmp_path, monkeypatch):
    # value_model_name_or_path: the critic's own backbone runs the shared prefix once too, after its own check, and
    # the run's numbers match the plain critic forward's.
    from test_ppo_forward import _two_rollouts

    logs, shared_on = {}, []
    real = prefix_cache.shared_prefix

    def recording(backbone, *args):
        shared_on.append(backbone)
        return real(backbone, *args)

    monkeypatch.setattr(prefix_cache, "shared_prefix", recording)
    for share in (True, False):
        trainer = _two_rollouts(tiny_model, tmp_path / str(share), share_prompt_prefix=share,
                                value_model_name_or_path=tiny_model)  # fmt: skip
        trainer.train()
        critic = trainer.model.ppo_critic.backbone
        assert trainer._critic_prefix_trusted is (True if share else None)
        if share:
            assert any(b is critic for b in shared_on), "the separate critic never ran the shared prefix"
        logs[share] = [h for h in trainer.state.log_history if "value_loss" in h]
    assert len(logs[True]) == len(logs[False]) == 4
    for on, off in zip(logs[True], logs[False], strict=True):
        for key in ("value_loss", "value/mean", "policy_loss"):
            if key in on:
                assert on[key] == pytest.approx(off[key], rel=1e-3, abs=1e-5), key


def test_supported_only_for_rotary_full_attention_models(tiny_model):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=32, n_embd=16, n_layer=1, n_head=2))
    assert not supported(gpt2, with_gradients=True)  # learned absolute positions: shifting them changes the result
    llama = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert supported(llama, with_gradients=True)
    llama.gradient_checkpointing_enable()
    assert not supported(llama, with_gradients=True)  # a recomputed layer would append to the shared cache twice


def test_failed_check_keeps_the_plain_forward(tiny_model, tmp_path, monkeypatch):
    from test_ppo_forward import _two_rollouts

    monkeypatch.setattr(prefix_cache, "PREFIX_TOLERANCE", {torch.float32: -1.0})
    trainer = _two_rollouts(tiny_model, tmp_path, max_steps=2)
    calls = []
    monkeypatch.setattr(prefix_cache, "shared_prefix", lambda *a: calls.append(a) or contextlib.nullcontext())
    trainer.train()
    assert trainer._prefix_trusted is False
    assert len(calls) == 1  # the check itself; no training forward shared the prefix
