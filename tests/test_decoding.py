"""The decode engine (alignkit.decoding) against model.generate, its sampling maths, and the loop stop.

Greedy checks use a tiny model re-initialised with large weights: the stock tiny model (init std 0.02) answers every
prompt with the same token, which would make an identity check vacuous. Two frequent tokens of its replies are made
extra stop ids, so rows end at different steps and the engine has to retire and admit rows mid-run.
"""

from collections import Counter

import pytest

torch = pytest.importorskip("torch")

from alignkit import decoding  # noqa: E402
from alignkit.chat_format import prompt_text  # noqa: E402
from alignkit.eval.model_spec import ModelSpec, load_model  # noqa: E402
from alignkit.sampling import RowStreams, candidates, pick, row_seed, sampling_probs  # noqa: E402
from alignkit.stop_tokens import loop_stop_length, reply_length, stop_token_ids  # noqa: E402

QUESTIONS = [
    "Say hi.",
    "What is 2 + 2? Answer briefly, please, and explain the steps you took to get there.",
    "Name a colour.",
    "Write one sentence about the sea, the wind and the boats that sail between the islands at dusk.",
    "Why?",
    "List three fruits that are red.",
]
PROMPTS = QUESTIONS + [q + " Thanks!" for q in QUESTIONS]  # 12 prompts, 9 different lengths
NEW = 32


def _vary(model) -> None:
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 1.0 if "embed" in name else 0.2, generator=g)


def _reference(model, rows, new, stop):
    """The straightforward loop: one unpadded greedy model.generate per prompt, cut after its first stop id."""
    from transformers import GenerationConfig

    config = GenerationConfig(max_new_tokens=new, do_sample=False, eos_token_id=stop, pad_token_id=0)
    out = []
    with torch.inference_mode():
        for row in rows:
            ids = torch.tensor([row])
            seq = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=config)
            seq = seq[0, len(row) :].tolist()
            out.append(seq)
    return out


def _cut(seq, stop):
    n, ended = reply_length(seq, stop)
    return seq[: n + ended]


@pytest.fixture(scope="module", params=["tiny_model", "tiny_qwen"])
def varied(request):
    """``(model, tokenizer, encoded prompts, stop ids, reference replies)`` for a varied tiny model."""
    model, tok = load_model(ModelSpec(name="tiny", base=request.getfixturevalue(request.param)))
    _vary(model)
    enc = [tok.encode(prompt_text(tok, p), add_special_tokens=False) for p in PROMPTS]
    base_stop = stop_token_ids(tok, model)
    free = _reference(model, enc, NEW, base_stop)
    common = Counter(t for seq in free for t in set(seq[1:])).most_common(2)
    stop = sorted({*base_stop, *(t for t, _ in common)})
    return model, tok, enc, stop, [_cut(seq, stop) for seq in free]


@pytest.mark.parametrize("slots,share", [(16, True), (16, False), (3, True), (4, False), (1, True)])
def test_greedy_is_token_identical_to_model_generate(varied, slots, share):
    model, _, enc, stop, ref = varied
    out = decoding.decode(model, enc, NEW, stop, slots=slots, share_prefix=share)
    assert out.tokens == ref
    lengths = [len(t) for t in out.tokens]
    assert len(set(lengths)) >= 3 and any(out.ended) and not all(out.ended)  # rows end at different steps
    assert out.ended == [t[-1] in stop for t in out.tokens]
    # no slot is spent on a finished row: one forward row per generated token
    assert out.row_steps == sum(lengths)
    if 1 < slots < len(enc):
        assert out.steps < sum(lengths)  # rows did share forwards, and waiting rows entered mid-run


def test_rows_entering_and_leaving_keep_outputs_and_logprobs(varied):
    model, _, enc, stop, ref = varied
    alone = decoding.decode(model, enc, NEW, stop, slots=1, return_logprobs=True)
    packed = decoding.decode(model, enc, NEW, stop, slots=2, return_logprobs=True)
    assert packed.relayouts >= 1  # columns were compacted or grown while rows came and went
    assert alone.tokens == packed.tokens == ref
    for a, b in zip(alone.logprobs, packed.logprobs, strict=True):
        assert a == pytest.approx(b, abs=1e-4)


def test_no_attended_column_is_left_unwritten(varied, monkeypatch):
    """The slot buffers are allocated uninitialised; filled with NaN instead, any column attended before being
    written (even masked: 0 x NaN = NaN) would turn the replies into garbage."""
    model, _, enc, stop, ref = varied
    monkeypatch.setattr(decoding, "_new_buffer", lambda like, shape: like.new_full(shape, float("nan")))
    for slots in (2, 5):
        out = decoding.decode(model, enc, NEW, stop, slots=slots)
        assert out.relayouts >= 1 and out.tokens == ref


def test_logprobs_are_raw_log_softmax_of_the_chosen_tokens(varied):
    model, _, enc, stop, _ = varied
    out = decoding.decode(
        model, enc[:3], 12, stop, slots=3, sampler=decoding.Sampler(True, 0.7, 0.9, 0, 5), return_logprobs=True
    )
    for prompt, tokens, logprobs in zip(enc[:3], out.tokens, out.logprobs, strict=True):
        assert len(logprobs) == len(tokens)
        with torch.inference_mode():  # teacher-forced forward over prompt + reply, untempered
            logits = model(input_ids=torch.tensor([prompt + tokens])).logits[0, len(prompt) - 1 : -1].float()
        expected = torch.log_softmax(logits, -1).gather(1, torch.tensor(tokens)[:, None]).squeeze(1)
        assert logprobs == pytest.approx(expected.tolist(), abs=1e-4)


def test_sampling_is_seeded_per_prompt_not_per_batch(varied):
    model, _, enc, stop, _ = varied
    sampler = decoding.Sampler(True, temperature=0.8, top_p=0.95, top_k=0, seed=7)
    a = decoding.decode(model, enc, NEW, stop, slots=16, sampler=sampler)
    b = decoding.decode(model, enc, NEW, stop, slots=3, sampler=sampler)
    c = decoding.decode(model, enc[:4], NEW, stop, slots=2, sampler=sampler)  # the same prompts, other neighbours
    assert a.tokens == b.tokens and a.tokens[:4] == c.tokens
    other = decoding.decode(model, enc, NEW, stop, slots=16, sampler=decoding.Sampler(True, 0.8, 0.95, 0, seed=8))
    assert other.tokens != a.tokens
    greedy = decoding.decode(model, enc, NEW, stop, slots=16)
    assert greedy.tokens != a.tokens


def test_engine_runs_a_lora_adapter_like_model_generate(tiny_model, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    _vary(base)
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).eval()
    assert decoding.supported(model)
    _, tok = load_model(ModelSpec(name="tiny", base=tiny_model))
    enc = [tok.encode(prompt_text(tok, p), add_special_tokens=False) for p in PROMPTS[:6]]
    stop = stop_token_ids(tok, model)
    out = decoding.decode(model, enc, 16, stop, slots=4)
    assert out.tokens == [_cut(s, stop) for s in _reference(model, enc, 16, stop)]


def test_sliding_window_models_are_not_supported(tiny_qwen):
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(tiny_qwen)
    config.use_sliding_window, config.sliding_window = True, 8
    config.layer_types = ["sliding_attention", "full_attention"]
    model = AutoModelForCausalLM.from_config(config)
    assert not decoding.supported(model)
    assert decoding.supported(AutoModelForCausalLM.from_pretrained(tiny_qwen))


# --- sampling maths -------------------------------------------------------------------------------------------------


def _reference_probs(logits, temperature, top_p, top_k):
    """transformers' own warpers, in generate's order, then softmax."""
    from transformers.generation.logits_process import (
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    scores = TemperatureLogitsWarper(temperature)(None, logits.clone())
    if top_k:
        scores = TopKLogitsWarper(top_k)(None, scores)
    if top_p < 1:
        scores = TopPLogitsWarper(top_p)(None, scores)
    return torch.softmax(scores, -1)


@pytest.mark.parametrize(
    "temperature,top_p,top_k",
    [(1.0, 1.0, 0), (0.8, 0.95, 0), (0.5, 0.5, 0), (1.3, 0.9, 0), (1.0, 1.0, 5), (0.8, 0.7, 10), (1.0, 0.3, 3)],
)
@pytest.mark.parametrize("prefilter", [4, 16, 1024])
def test_top_k_top_p_match_the_transformers_warpers(temperature, top_p, top_k, prefilter):
    torch.manual_seed(0)
    # 6 rows over a 40-token vocabulary, from peaked (scale 4) to flat (scale 0.3): with a prefilter of 4 the flat
    # rows hold less than top_p inside it and must take the full-sort fallback
    logits = torch.randn(6, 40) * torch.tensor([4.0, 2.0, 1.0, 0.6, 0.3, 0.1])[:, None]
    ours = sampling_probs(logits, temperature, top_p, top_k, prefilter=prefilter)
    ref = _reference_probs(logits, temperature, top_p, top_k)
    assert torch.allclose(ours, ref, atol=1e-6)
    assert torch.equal(ours > 0, ref > 0)  # the same kept set, token for token


def test_prefilter_fallback_handles_a_flat_row_beside_a_peaked_one():
    # row 0: one token holds ~all mass (the nucleus is 1 token); row 1: uniform over 40 (the nucleus is 38 tokens:
    # keep while the mass before a token, k/40, is < 0.95, i.e. k = 0..37)
    logits = torch.stack([torch.tensor([20.0] + [0.0] * 39), torch.zeros(40)])
    ids, probs = candidates(logits, top_p=0.95, prefilter=4)
    assert ids.shape[1] >= 38  # widened for the fallback row
    assert (probs[0] > 0).sum() == 1 and (probs[1] > 0).sum() == 38
    assert probs[1][probs[1] > 0] == pytest.approx(torch.full((38,), 1 / 38))


def test_inverse_cdf_pick_reproduces_the_probabilities():
    # u on an even grid of 1000 points: each token is chosen for a share of u equal to its probability (+-1/1000)
    ids = torch.tensor([[7, 3, 9, 1]]).expand(1000, -1)
    probs = torch.tensor([[0.5, 0.3, 0.2, 0.0]]).expand(1000, -1)
    u = (torch.arange(1000, dtype=torch.float64) + 0.5) / 1000
    chosen = pick(ids, probs, u)
    counts = Counter(chosen.tolist())
    assert counts == {7: 500, 3: 300, 9: 200}  # the cut token (prob 0) is never chosen
    assert pick(ids[:1], probs[:1], torch.tensor([1.0 - 1e-12])).item() == 9  # u * Z rounding up to Z


def test_row_streams_depend_on_seed_and_index_only():
    a, b = RowStreams(3), RowStreams(3)
    first = a.uniforms([0, 1, 2])
    assert torch.equal(b.uniforms([2]), first[2:]) and torch.equal(b.uniforms([0, 1]), first[:2])
    assert row_seed(3, 0) != row_seed(3, 1) != row_seed(4, 0)
    assert not torch.equal(RowStreams(4).uniforms([0, 1, 2]), first)


# --- loop stop ------------------------------------------------------------------------------------------------------


def test_loop_stop_length_hand_examples():
    assert loop_stop_length([5] * 47) is None and loop_stop_length([5] * 60) == 48  # period 1: 48 equal tokens
    cycle = [1, 2, 3, 4, 5]
    # 2 tokens of lead-in, then period 5: the last 48 tokens repeat once the reply is 2 + 48 = 50 long
    assert loop_stop_length([8, 9] + cycle * 20) == 50
    # period 20: needs 3 x 20 = 60 repeating tokens
    long_cycle = list(range(100, 120))
    assert loop_stop_length(long_cycle * 5) == 60
    assert loop_stop_length(list(range(33, 33 + 34)) * 3) is None  # period 34 > 32: never a loop
    assert loop_stop_length([1, 2] * 10 + [3]) is None


def _cycling(tiny_model, start):
    """A real tiny Llama whose greedy continuation is a fixed walk: layers silenced (output projections zeroed), so
    the next token depends on the current one only, and an untied LM head that maps start -> y -> a -> b -> c -> d
    -> e -> a (a 1-token lead-in, then a 5-token cycle)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, tie_word_embeddings=False).eval()
    walk = [start, 1001, 2000, 2001, 2002, 2003, 2004, 2000]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight")):
                p.zero_()
        emb = model.get_input_embeddings().weight
        head = torch.zeros_like(model.lm_head.weight)
        for cur, nxt in zip(walk, walk[1:], strict=False):
            head[nxt] += 50 * emb[cur] / emb[cur].norm()
        model.lm_head.weight.copy_(head)
    return model


@pytest.fixture
def cycling(tiny_model):
    return _cycling(tiny_model, start=1000)


def test_loop_stop_cuts_a_greedy_cycle(cycling):
    prompts = [[5, 6, 7, 1000], [5, 6, 7, 8, 9, 2001]]  # enters the walk at z, and inside the cycle at b
    plain = decoding.decode(cycling, prompts, 80, stop_ids=[0], slots=2)
    assert plain.tokens[0][:8] == [1001, 2000, 2001, 2002, 2003, 2004, 2000, 2001]  # the walk is real
    assert [len(t) for t in plain.tokens] == [80, 80] and plain.looping == [False, False]
    stopped = decoding.decode(cycling, prompts, 80, stop_ids=[0], slots=2, stop_loops=True)
    assert stopped.looping == [True, True]
    assert [len(t) for t in stopped.tokens] == [49, 48]  # 1-token lead-in (y) + 48; inside the cycle from the start
    assert [t[: len(s)] for t, s in zip(plain.tokens, stopped.tokens, strict=True)] == stopped.tokens
    assert [loop_stop_length(t) for t in plain.tokens] == [49, 48]  # the same rule as the pure function
    with pytest.raises(ValueError, match="greedy"):
        decoding.decode(cycling, prompts, 8, [0], sampler=decoding.Sampler(do_sample=True), stop_loops=True)


def test_loop_stop_gives_the_same_replies_from_the_engine_and_model_generate(tiny_model, monkeypatch):
    from alignkit.eval.generation import GenerationConfig, _run_generation

    _, tok = load_model(ModelSpec(name="tiny", base=tiny_model))
    prompts = PROMPTS[:3]
    model = _cycling(tiny_model, start=tok.encode(prompt_text(tok, prompts[0]), add_special_tokens=False)[-1])
    cfg = GenerationConfig(max_new_tokens=80, batch_size=2, stop_loops=True)
    engine = _run_generation(model, tok, prompts, cfg, "engine", return_logprobs=True)
    assert engine.looping == [True] * 3 and engine.truncated == [True] * 3 and engine.n_tokens == [49] * 3
    monkeypatch.setattr(decoding, "supported", lambda model: False)  # the model.generate fallback, cut afterwards
    fallback = _run_generation(model, tok, prompts, cfg, "fallback", return_logprobs=True)
    assert fallback[:5] == engine[:5]  # responses, n_tokens, truncated, looping, token_ids
    for a, b in zip(fallback.logprobs, engine.logprobs, strict=True):
        assert a == pytest.approx(b, abs=1e-4)
    off = _run_generation(model, tok, prompts, GenerationConfig(max_new_tokens=80, batch_size=2), "off")
    assert off.n_tokens == [80] * 3 and off.looping == [False] * 3
