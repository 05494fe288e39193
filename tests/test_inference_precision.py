"""The inference precision switch (alignkit.inference_precision): exact stays fp32 on a CPU, fast runs bf16 matmuls
only where bf16 is native, and the switch reaches the model loaders, the cache identities and the suite parser."""

import pytest

pytest.importorskip("torch")

import torch  # noqa: E402

from alignkit import inference_precision as ip  # noqa: E402
from alignkit.errors import AlignkitError  # noqa: E402
from alignkit.eval.model_spec import ModelSpec, load_model  # noqa: E402


@pytest.fixture
def native(monkeypatch):
    """Pretend the CPU has (True) or lacks (False) native bf16."""

    def set_native(value: bool) -> None:
        monkeypatch.setattr(ip, "native_bf16", lambda: value)

    return set_native


def test_unknown_precision_is_one_line_naming_where():
    with pytest.raises(AlignkitError, match=r"suite x.yaml: must be one of exact, fast, got 'bf16'") as err:
        ip.check_precision("bf16", "suite x.yaml")
    assert "\n" not in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU dtypes")
def test_fast_means_bf16_only_where_native(native):
    native(True)
    assert ip.effective_precision("fast") == "fast" and ip.inference_dtype("fast") == torch.bfloat16
    assert ip.inference_dtype("exact") == torch.float32
    native(False)  # bf16 would be emulated (~24x slower): fast falls back to exact
    assert ip.effective_precision("fast") == "exact" and ip.inference_dtype("fast") == torch.float32


def test_identity_names_the_dtype_only_on_the_fast_path(tiny_model, native):
    exact = ModelSpec("m", tiny_model)
    native(True)
    assert "dtype" not in exact.identity()  # exact keeps the cache keys it always had
    fast = exact.with_precision("fast")
    assert fast.identity()["dtype"] == "bfloat16" and fast.identity() != exact.identity()
    native(False)
    assert fast.identity() == exact.identity()  # same weights, same outputs, same key
    with pytest.raises(AlignkitError, match="model 'm'"):
        exact.with_precision("half")


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU dtypes")
def test_loaders_follow_the_precision(tiny_model, native):
    from alignkit.eval.metric_base import LazyModel

    def bf16_names(model):
        return {n for n, p in model.named_parameters() if p.dtype == torch.bfloat16}

    native(True)
    model, _ = load_model(ModelSpec("m", tiny_model, precision="fast"))
    fast = bf16_names(model)  # the decoder's matmuls only (inference_precision.bf16_matmuls)
    assert fast and all(".layers." in n and "_proj" in n for n in fast)
    assert model.get_output_embeddings().weight.dtype == torch.float32
    lazy = LazyModel(ModelSpec("m", tiny_model))
    assert {p.dtype for p in lazy()[0].parameters()} == {torch.float32}
    lazy.use_precision("fast")  # the harness generates in fp32, then scores in bf16 matmuls: switched in place
    assert bf16_names(lazy()[0]) == fast
    assert lazy.spec.precision == "fast"
    lazy.use_precision("fast")  # twice: one pair of hooks per layer
    layer = lazy()[0].model.layers[0].mlp.down_proj
    assert len(layer._forward_pre_hooks) == 1 and len(layer._forward_hooks) == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU dtypes")
def test_reward_scorer_fast_runs_bf16_matmuls_and_is_close_to_exact(tiny_model, native):
    from alignkit.eval.rm_score import load_reward_scorer

    native(True)
    prompts = [[{"role": "user", "content": "Say hi."}], [{"role": "user", "content": "Name a colour."}]]
    replies = ["Hi there!", "Blue, like the sky."]
    torch.manual_seed(0)  # the tiny causal LM has no score head: both loads must draw the same random one
    exact = load_reward_scorer(tiny_model, batch_size=2, max_length=64)
    torch.manual_seed(0)
    fast = load_reward_scorer(tiny_model, batch_size=2, max_length=64, precision="fast")
    # fast: the decoder's linear layers in bf16 (inference_precision.bf16_matmuls), the rest (embedding, norms,
    # score head) fp32; exact: all fp32
    bf16 = {n for n, p in fast.model.named_parameters() if p.dtype == torch.bfloat16}
    assert bf16 and all(".layers." in n and "_proj" in n for n in bf16)
    assert fast.model.score.weight.dtype == torch.float32
    assert {p.dtype for p in exact.model.parameters()} == {torch.float32}
    a, b = exact(prompts, replies), fast(prompts, replies)
    assert a != b  # bf16 rounding shows: the two paths are really different
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 0.1


def test_suite_rejects_an_unknown_precision(tmp_path):
    from alignkit.eval.suite import load_suite

    good = tmp_path / "s.yaml"
    good.write_text("name: s\nprecision: fast\nprompt_sets: [{card: sharegpt-sft-smol}]\n")
    assert load_suite(str(good)).precision == "fast"
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: s\nprecision: half\nprompt_sets: [{card: sharegpt-sft-smol}]\n")
    with pytest.raises(AlignkitError, match=r"bad.yaml: 'precision': must be one of exact, fast"):
        load_suite(str(bad))


def test_pair_builder_rejects_an_unknown_precision(tmp_path):
    from alignkit.data.onpolicy import build_onpolicy_pairs

    with pytest.raises(AlignkitError, match="on-policy pairs: precision: must be one of exact, fast"):
        build_onpolicy_pairs(4, precision="half", scorer="grader:math_answer", cache_root=tmp_path)


def _small_update_adapter(rm_path: str, out_dir, ratio: float) -> str:
    """A LoRA adapter on the last layer's ``down_proj`` whose update is exactly ``ratio`` times the base output:
    ``A = W`` (the base weight, r = hidden size), ``B = ratio * I``, scaling 1. With ``ratio = 2**-10`` the update is
    under half a bf16 step of every base output element, the case where a bf16 sum erases it."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(rm_path, num_labels=1)
    last = model.config.num_hidden_layers - 1
    hidden = model.config.hidden_size
    config = LoraConfig(
        r=hidden,
        lora_alpha=hidden,
        target_modules=["down_proj"],
        layers_to_transform=[last],
        task_type=TaskType.SEQ_CLS,
        init_lora_weights=False,
    )
    peft = get_peft_model(model, config)
    layer = peft.base_model.model.model.layers[last].mlp.down_proj
    with torch.no_grad():
        layer.lora_A["default"].weight.copy_(layer.base_layer.weight)
        layer.lora_B["default"].weight.copy_(torch.eye(hidden) * ratio)
    peft.save_pretrained(out_dir)
    return str(out_dir)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU dtypes")
def test_reward_scorer_fast_keeps_a_lora_update_below_bf16_resolution(tiny_rm, native, tmp_path):
    """The smol reward run lost ~0.16 of every score in a whole-model bf16 cast: bf16(bf16(W x) + d) erases a LoRA
    update d under half a bf16 step of W x. The fast path keeps the sum in fp32 (inference_precision.bf16_matmuls):
    the adapter's effect on the score (with adapter minus without) must match fp32's."""
    from alignkit.eval.rm_score import load_reward_scorer

    native(True)
    adapter = _small_update_adapter(tiny_rm, tmp_path / "adapter", ratio=2**-10)
    prompts = [[{"role": "user", "content": q}] for q in ("Say hi.", "Name a colour.", "Capital of France?")]
    replies = ["Hi there!", "Blue, like the sky.", "Paris, on the Seine."]

    def adapter_effect(scorer):
        with_adapter = torch.tensor(scorer(prompts, replies))
        with scorer.model.disable_adapter():
            without = torch.tensor(scorer(prompts, replies))
        return with_adapter - without

    exact = adapter_effect(load_reward_scorer(tiny_rm, adapter, batch_size=4, max_length=64))
    fast_scorer = load_reward_scorer(tiny_rm, adapter, batch_size=4, max_length=64, precision="fast")
    fast = adapter_effect(fast_scorer)
    assert exact.abs().min() > 1e-6  # the update is small but real in fp32
    assert (fast - exact).abs().max() < 0.1 * exact.abs().min(), (exact, fast)
    # the mechanism: the decoder's matmul weights are bf16; the LoRA branch and the score head stay fp32
    model = fast_scorer.model.base_model.model
    down = model.model.layers[-1].mlp.down_proj
    assert down.base_layer.weight.dtype == torch.bfloat16
    assert down.lora_A["default"].weight.dtype == torch.float32
    assert {p.dtype for p in model.score.parameters()} == {torch.float32}


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU dtypes")
def test_causal_lm_fast_keeps_a_dpo_adapters_log_prob_ratio(tiny_model, native, tmp_path):
    """The DPO implicit reward is ``beta * (log pi - log pi_ref)``, pi_ref being the model with its adapter off: a
    whole-model bf16 cast erases a small adapter update and, with it, the ratio. Fast must keep it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alignkit.eval.preference import pair_logps, reference_pair_logps

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    with torch.no_grad():  # sharper logits (std ~5, not ~0.2), so the small update moves log-probs measurably
        base.model.norm.weight.mul_(30)
    base.save_pretrained(tmp_path / "base")
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tmp_path / "base")
    hidden = base.config.hidden_size
    last = base.config.num_hidden_layers - 1
    config = LoraConfig(
        r=hidden, lora_alpha=hidden, target_modules=["down_proj"], layers_to_transform=[last], init_lora_weights=False
    )
    peft = get_peft_model(base, config)
    layer = peft.base_model.model.model.layers[last].mlp.down_proj
    with torch.no_grad():  # update = 2**-10 x the base output: under half a bf16 step of every element
        layer.lora_A["default"].weight.copy_(layer.base_layer.weight)
        layer.lora_B["default"].weight.copy_(torch.eye(hidden) * 2**-10)
    peft.save_pretrained(tmp_path / "adapter")
    prompts = [[{"role": "user", "content": q}] for q in ("Say hi.", "Name a colour.")]
    chosen, rejected = ["Hi there!", "Blue, like the sky."], ["No.", "I will not."]

    def log_ratio(precision):
        spec = ModelSpec("m", str(tmp_path / "base"), adapter=str(tmp_path / "adapter"), precision=precision)
        model, tok = load_model(spec)
        policy = pair_logps(model, tok, prompts, chosen, rejected, max_length=64)
        ref = reference_pair_logps(model, tok, prompts, chosen, rejected, max_length=64)
        return torch.tensor(policy["chosen"] - ref["chosen"])

    native(True)
    exact, fast = log_ratio("exact"), log_ratio("fast")
    assert exact.abs().min() > 1e-6
    assert (fast - exact).abs().max() < 0.1 * exact.abs().min(), (exact, fast)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU dtypes")
def test_generation_head_is_bf16_only_on_the_fast_path_and_only_inside(tiny_model, native):
    native(True)
    fast, _ = load_model(ModelSpec("m", tiny_model, precision="fast"))
    exact, _ = load_model(ModelSpec("m", tiny_model))
    head = fast.get_output_embeddings()
    x = torch.randn(3, head.in_features)
    want_fp32 = torch.nn.functional.linear(x, head.weight)
    want_bf16 = torch.nn.functional.linear(x.bfloat16(), head.weight.bfloat16()).float()
    assert not torch.equal(want_fp32, want_bf16)  # the two heads are distinguishable on this input
    with torch.no_grad():
        with ip.bf16_generation_head(fast) as swapped:
            assert swapped and torch.equal(head(x), want_bf16) and head(x).dtype == torch.float32
        assert torch.equal(head(x), want_fp32)  # put back on exit
        with ip.bf16_generation_head(exact) as swapped:
            assert not swapped and torch.equal(exact.get_output_embeddings()(x), want_fp32)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU dtypes")
def test_decode_chooses_tokens_with_the_bf16_head_but_reports_log_probs_with_the_fp32_one(
    tiny_model, native, monkeypatch
):
    from alignkit import decoding

    native(True)
    fast, _ = load_model(ModelSpec("m", tiny_model, precision="fast"))
    calls = []
    real = ip._Bf16Head.__call__
    monkeypatch.setattr(ip._Bf16Head, "__call__", lambda self, h: calls.append(h.shape[0]) or real(self, h))
    prompts = [[5, 6, 7, 8], [9, 10, 11]]
    out = decoding.decode(fast, prompts, 4, stop_ids=[], slots=2)
    # every decode step used it (a prefill may too)
    assert [len(t) for t in out.tokens] == [4, 4] and len(calls) >= out.steps
    calls.clear()
    decoding.decode(fast, prompts, 4, stop_ids=[], slots=2, return_logprobs=True)
    assert calls == []
    assert type(fast.get_output_embeddings()).forward is torch.nn.Linear.forward  # the head is plain again
    assert "forward" not in vars(fast.get_output_embeddings())


def test_preference_pair_builder_rejects_an_unknown_precision_naming_the_card(tmp_path):
    from alignkit.data.pairs import build_pairs

    with pytest.raises(AlignkitError, match="sharegpt-pairs-smol: precision: must be one of exact, fast"):
        build_pairs(4, 2, precision="half", cache_root=tmp_path)
