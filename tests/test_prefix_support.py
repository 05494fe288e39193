"""One support check for shared-prefix caches (alignkit.prefix_cache.supported), for inference (eval) and with
gradients (PPO), and the one position formula."""

import pytest

torch = pytest.importorskip("torch")

from alignkit import prefix_cache  # noqa: E402
from alignkit.prefix_cache import positions_after_prefix, supported  # noqa: E402


def test_positions_count_on_from_the_prefix_and_skip_padding():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 1, 0, 1]])
    # cumsum - 1, clamped at 0, plus the prefix length 5:
    # row 0: cumsum 0 0 1 2 -> 0 0 0 1 -> 5 5 5 6;  row 1: 1 2 3 4 -> 0 1 2 3 -> 5 6 7 8;  row 2: 0 1 1 2 -> 5 5 5 6
    assert positions_after_prefix(mask, 5).tolist() == [[5, 5, 5, 6], [5, 6, 7, 8], [5, 5, 5, 6]]
    assert positions_after_prefix(mask.bool()).tolist() == [[0, 0, 0, 1], [0, 1, 2, 3], [0, 0, 0, 1]]


def test_support_with_and_without_gradients(tiny_model, tiny_qwen):
    from transformers import AutoModelForCausalLM

    for path in (tiny_model, tiny_qwen):
        model = AutoModelForCausalLM.from_pretrained(path)
        assert supported(model) and supported(model, with_gradients=True)
        model.gradient_checkpointing_enable()
        # a recomputed layer would append to the shared cache twice: only a training forward cares
        assert supported(model) and not supported(model, with_gradients=True)


def test_unsupported_models(tiny_model):
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM, GPT2Config, GPT2LMHeadModel, LlamaConfig

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=16, vocab_size=64, n_positions=32))
    assert not supported(gpt2)  # learned absolute positions
    windowed = LlamaConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, vocab_size=64
    )
    windowed.layer_types = ["full_attention", "sliding_attention"]
    model = AutoModelForCausalLM.from_config(windowed)
    assert not supported(model)  # a sliding-window layer's cache does not hold the whole prefix
    prompt_tuned = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model),
        PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
    )
    assert not supported(prompt_tuned)  # virtual tokens come before every row


def test_eval_modules_share_the_one_prefix_module():
    from alignkit.eval import generation, perplexity, rm_score

    for module in (generation, perplexity, rm_score):
        assert module.prefix is prefix_cache


def test_ppo_shares_the_one_prefix_module():
    from alignkit.plugins.ppo import ppo_forward

    assert ppo_forward.prefix_cache is prefix_cache
    assert not hasattr(ppo_forward, "ppo_prefix")  # no second prefix module behind it
    with pytest.raises(ImportError):
        __import__("alignkit.plugins.ppo.ppo_prefix")


def test_prefix_module_imports_without_torch():
    import subprocess
    import sys

    # a torch import at module level would make the pure helpers (shared_prefix_len, MIN_PREFIX) pay for torch
    code = "import sys, alignkit.prefix_cache as p; assert 'torch' not in sys.modules, 'torch'; print(p.MIN_PREFIX)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
