"""The decode engine on the embedded SmolLM2-135M-Instruct in fp32, against model.generate on real chat prompts.

Slow (about a minute on one core), run in CI: the tiny-model tests prove the mechanism; this one proves it on the
real model, cache layout and chat template, with rows entering and leaving (16 prompts through 6 slots).
"""

import pytest

torch = pytest.importorskip("torch")

pytestmark = pytest.mark.slow


def test_engine_is_token_identical_to_model_generate_on_the_embedded_model(embedded_model):
    from alignkit import decoding
    from alignkit.chat_format import prompt_text
    from alignkit.data.sharegpt import build_sft
    from alignkit.eval.generation import GenerationConfig, _generate_with_hf
    from alignkit.eval.model_spec import ModelSpec, load_model
    from alignkit.stop_tokens import reply_length, stop_token_ids

    model, tok = load_model(ModelSpec(name="smol", base=embedded_model))
    assert next(model.parameters()).dtype == torch.float32 and decoding.supported(model)
    rows = build_sft().rows("test")[:16]
    enc = [tok.encode(prompt_text(tok, r["messages"][:1]), add_special_tokens=False) for r in rows]
    stop = stop_token_ids(tok, model)
    new = 48
    reference, _ = _generate_with_hf(model, tok, enc, GenerationConfig(max_new_tokens=new, batch_size=6), stop)
    reference = [row[: sum(reply_length(row, stop))] for row in reference]
    out = decoding.decode(model, enc, new, stop, slots=6, pad_id=tok.pad_token_id)
    assert out.tokens == reference
    assert out.steps < out.row_steps == sum(map(len, out.tokens))  # rows shared steps; none ran past its end
    sampler = decoding.Sampler(True, temperature=0.8, top_p=0.95, seed=1)
    a = decoding.decode(model, enc[:6], 24, stop, slots=6, sampler=sampler)
    b = decoding.decode(model, enc[:6], 24, stop, slots=2, sampler=sampler)
    assert a.tokens == b.tokens and a.tokens != [t[:24] for t in out.tokens[:6]]  # sampled, not greedy
