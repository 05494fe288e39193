"""Generation cache: a hit does no generation (and loads no model); any change of model, prompts or config misses."""

import json

import pytest

pytest.importorskip("torch")

import alignkit.eval.generation as gen_mod  # noqa: E402
from alignkit.eval.generation import GenerationConfig, generate  # noqa: E402
from alignkit.eval.model_spec import ModelSpec, load_model  # noqa: E402

PROMPTS = ["Say hi.", [{"role": "user", "content": "What is 2 + 2? Answer briefly, please."}], "Name a colour."]


@pytest.fixture
def counted(monkeypatch, tmp_path):
    """Isolated cache; counts calls of the real generation routine."""
    monkeypatch.setenv("ALIGNKIT_CACHE", str(tmp_path / "cache"))
    calls = []
    real = gen_mod._run_generation

    def spy(model, tokenizer, prompts, config, desc, **kwargs):
        calls.append(len(prompts))
        return real(model, tokenizer, prompts, config, desc, **kwargs)

    monkeypatch.setattr(gen_mod, "_run_generation", spy)
    return calls


def test_cache_hit_does_no_generation_and_config_change_misses(tiny_model, counted):
    spec = ModelSpec(name="tiny", base=tiny_model)
    cfg = GenerationConfig(max_new_tokens=6, batch_size=2)
    first = generate(spec, PROMPTS, cfg)
    assert counted == [3] and not first.from_cache
    assert len(first.responses) == 3 and all(0 < n <= 6 for n in first.n_tokens)
    rows = [json.loads(x) for x in first.cache_path.read_text().splitlines()]
    assert rows[0]["meta"]["config"]["max_new_tokens"] == 6 and len(rows) == 4

    def no_model():
        raise AssertionError("a cache hit must not load the model")

    again = generate(spec, PROMPTS, cfg, model_fn=no_model)
    assert counted == [3] and again.from_cache
    assert again.responses == first.responses and again.n_tokens == first.n_tokens

    generate(spec, PROMPTS, GenerationConfig(max_new_tokens=5, batch_size=2))  # changed config: miss
    assert counted == [3, 3]
    generate(spec, PROMPTS[:2], cfg)  # changed prompts: miss
    assert counted == [3, 3, 2]
    fresh = generate(spec, PROMPTS, cfg, use_cache=False)  # --no-cache regenerates, deterministically (greedy)
    assert counted == [3, 3, 2, 3] and fresh.responses == first.responses


def test_adapter_change_misses(tiny_model, counted, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model), LoraConfig(r=2, target_modules=["q_proj"])
    )
    model.save_pretrained(adapter)
    spec = ModelSpec(name="tuned", base=tiny_model, adapter=str(adapter))
    cfg = GenerationConfig(max_new_tokens=3)
    generate(spec, PROMPTS, cfg)
    generate(spec, PROMPTS, cfg)
    assert counted == [3]
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model),
        LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False),
    )
    model.save_pretrained(adapter)  # retrained in place: same path, new weights
    generate(spec, PROMPTS, cfg)
    assert counted == [3, 3]


def test_batched_left_padded_generation_matches_one_by_one(tiny_model, counted):
    spec = ModelSpec(name="tiny", base=tiny_model)
    loaded = load_model(spec)
    batched = generate(spec, PROMPTS, GenerationConfig(max_new_tokens=8, batch_size=3), model_fn=lambda: loaded)
    single = generate(spec, PROMPTS, GenerationConfig(max_new_tokens=8, batch_size=1), model_fn=lambda: loaded)
    assert batched.responses == single.responses


def test_seeded_sampling_is_reproducible(tiny_model, counted):
    spec = ModelSpec(name="tiny", base=tiny_model)
    cfg = GenerationConfig(max_new_tokens=8, do_sample=True, seed=3, temperature=1.0)
    a = generate(spec, PROMPTS, cfg, use_cache=False)
    b = generate(spec, PROMPTS, cfg, use_cache=False)
    assert a.responses == b.responses


def test_bad_config_is_a_one_line_error():
    from alignkit.errors import AlignkitError

    with pytest.raises(AlignkitError, match="unknown generation key 'max_tokens'"):
        GenerationConfig.from_dict({"max_tokens": 5})
    with pytest.raises(AlignkitError, match="max_new_tokens"):
        GenerationConfig(max_new_tokens=0)
    with pytest.raises(AlignkitError, match="generation.stop_loops: greedy decoding only"):
        GenerationConfig(do_sample=True, stop_loops=True)
    with pytest.raises(AlignkitError, match="generation.top_p"):
        GenerationConfig(do_sample=True, top_p=0)
    assert GenerationConfig.from_dict({"stop_loops": True}).stop_loops  # the suite key


def test_cache_key_covers_the_new_fields_but_not_logprobs():
    spec = ModelSpec(name="tiny", base="/nowhere")
    keys = {
        gen_mod.cache_key(spec, PROMPTS, GenerationConfig()),
        gen_mod.cache_key(spec, PROMPTS, GenerationConfig(stop_loops=True)),
        gen_mod.cache_key(spec, PROMPTS, GenerationConfig(do_sample=True, top_p=0.9)),
    }
    assert len(keys) == 3
    assert gen_mod.CACHE_VERSION == 3  # the decode engine changed sampled outputs: old entries must miss


def test_logprobs_are_stored_only_when_asked_for(tiny_model, counted):
    spec = ModelSpec(name="tiny", base=tiny_model)
    cfg = GenerationConfig(max_new_tokens=5, batch_size=2)
    plain = generate(spec, PROMPTS, cfg)
    assert plain.logprobs is None and plain.looping == [False] * 3
    assert not any("logprobs" in json.loads(x) for x in plain.cache_path.read_text().splitlines())
    rich = generate(spec, PROMPTS, cfg, return_logprobs=True)  # stored without them: generated again
    assert counted == [3, 3] and not rich.from_cache and rich.cache_path == plain.cache_path
    assert rich.responses == plain.responses
    for ids, logprobs, n, truncated in zip(rich.token_ids, rich.logprobs, rich.n_tokens, rich.truncated, strict=True):
        assert len(ids) == len(logprobs) == n + (not truncated)  # the end-of-turn token's log-prob is included
        assert all(lp <= 0 for lp in logprobs)
    again = generate(spec, PROMPTS, cfg, return_logprobs=True)
    assert counted == [3, 3] and again.from_cache and again.logprobs == rich.logprobs
    assert generate(spec, PROMPTS, cfg).from_cache and counted == [3, 3]


def test_looping_rate_is_reported_when_the_loop_stop_is_on(tmp_path):
    from types import SimpleNamespace

    from alignkit.eval.generation import Generations
    from alignkit.eval.metric_responses import response_stats

    gens = Generations(
        ["a", "b", "c", "d"], [3, 60, 60, 2], [False, True, True, False], [False, True, False, False], tmp_path
    )
    for stop_loops, expected in (
        (True, {"truncated_rate": 0.5, "looping_rate": 0.25, "limit_rate": 0.25}),
        (False, {"truncated_rate": 0.5}),
    ):
        metrics: dict = {}
        ctx = SimpleNamespace(
            specs=[SimpleNamespace(name="m")],
            data={"chat": SimpleNamespace(references=None)},
            gens={"m": {"chat": gens}},
            set_metrics=lambda model, prompt_set, out=metrics: out,
            suite=SimpleNamespace(generation=GenerationConfig(stop_loops=stop_loops)),
        )
        response_stats(ctx)
        assert {k: v for k, v in metrics.items() if k != "length_tokens"} == expected
