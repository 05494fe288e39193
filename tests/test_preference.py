"""Preference metrics: hand-computed implicit rewards and length-normalized accuracy, then constructed model cases."""

import pytest

from alignkit.eval.preference import implicit_reward_metrics, length_normalized_accuracy


def test_implicit_reward_by_hand():
    # beta = 0.1
    # chosen rewards   = 0.1 * ([-10, -20] - [-11, -20]) = [0.1, 0.0]
    # rejected rewards = 0.1 * ([-12, -15] - [-11, -16]) = [-0.1, 0.1]
    # margins = [0.2, -0.1] -> accuracy 1/2, mean margin 0.05
    m = implicit_reward_metrics([-10, -20], [-12, -15], [-11, -20], [-11, -16], beta=0.1)
    assert m["accuracy"]["value"] == pytest.approx(0.5)
    assert m["margin"]["mean"] == pytest.approx(0.05)
    assert m["chosen_reward"] == pytest.approx(0.05) and m["rejected_reward"] == pytest.approx(0.0)


def test_equal_rewards_count_as_wrong():
    # the reference itself: every reward is 0, so no pair is strictly preferred (TRL's rewards/accuracies convention)
    m = implicit_reward_metrics([-3, -4], [-5, -1], [-3, -4], [-5, -1], beta=0.5)
    assert m["accuracy"]["value"] == 0.0 and m["margin"]["mean"] == 0.0


def test_length_normalization_flips_the_summed_preference():
    # pair 1: chosen -20 over 10 tokens = -2/token; rejected -9 over 3 tokens = -3/token
    #         summed logp prefers the (short) rejected answer, per-token logp prefers chosen -> correct
    # pair 2: chosen -8 over 2 = -4/token; rejected -6 over 3 = -2/token -> wrong
    m = length_normalized_accuracy([-20, -8], [10, 2], [-9, -6], [3, 3])
    assert m["value"] == pytest.approx(0.5)
    assert m["mean_margin"] == pytest.approx(((-2 - -3) + (-4 - -2)) / 2)


def test_model_prefers_its_own_greedy_answer(tiny_model):
    pytest.importorskip("torch")
    from alignkit.eval.generation import GenerationConfig, _run_generation
    from alignkit.eval.model_spec import ModelSpec, load_model
    from alignkit.eval.preference import preference_metrics

    model, tok = load_model(ModelSpec(name="tiny", base=tiny_model))
    prompts = ["Tell me a story.", "What is love?", "Explain gravity."]
    own = _run_generation(model, tok, prompts, GenerationConfig(max_new_tokens=12), "tiny").responses
    foreign = ["Colorless green ideas sleep furiously tonight indeed."] * 3
    m = preference_metrics(model, tok, prompts, own, foreign)
    assert m["length_normalized"]["value"] == 1.0 and m["implicit_reward"] is None
    m = preference_metrics(model, tok, prompts, foreign, own)
    assert m["length_normalized"]["value"] == 0.0


def test_implicit_reward_uses_the_disabled_adapter_as_reference(tiny_model):
    pytest.importorskip("torch")
    import numpy as np
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from alignkit.eval.preference import pair_logps, preference_metrics
    from alignkit.models import load_tokenizer

    tok = load_tokenizer(tiny_model)
    prompts = ["Say hi.", "Name a colour.", "Count to three."]
    chosen = ["Hi there!", "Blue.", "One, two, three."]
    rejected = ["No.", "I cannot name colours because colours are hard.", "3 2 1"]
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    policy = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model), lora).eval()
    reference = AutoModelForCausalLM.from_pretrained(tiny_model).eval()  # an independent copy of the base

    beta = 0.5
    got = preference_metrics(policy, tok, prompts, chosen, rejected, beta=beta)["implicit_reward"]
    pi = pair_logps(policy, tok, prompts, chosen, rejected)  # the adapter is back on after the reference pass
    ref = pair_logps(reference, tok, prompts, chosen, rejected)
    margins = beta * ((pi["chosen"] - ref["chosen"]) - (pi["rejected"] - ref["rejected"]))
    assert np.abs(margins).min() > 1e-6  # the random adapter really moved the policy
    assert got["margin"]["mean"] == pytest.approx(float(margins.mean()), rel=1e-4, abs=1e-6)
    assert got["accuracy"]["value"] == pytest.approx(float(np.mean(margins > 0)))

    # an untrained adapter (LoRA B = 0) is the reference: every reward is exactly 0
    identity = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model), LoraConfig(r=4, target_modules=["q_proj"])
    )
    zero = preference_metrics(identity.eval(), tok, prompts, chosen, rejected, beta=beta)["implicit_reward"]
    assert zero["margin"]["mean"] == pytest.approx(0.0, abs=1e-6) and zero["accuracy"]["value"] == 0.0
