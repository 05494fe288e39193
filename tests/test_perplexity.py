"""Perplexity equals exp(mean NLL) computed independently, one token at a time, with no batching or padding."""

import math

import pytest

torch = pytest.importorskip("torch")

from alignkit.chat_format import encode_pair  # noqa: E402
from alignkit.eval.model_spec import ModelSpec, load_model  # noqa: E402
from alignkit.eval.perplexity import (  # noqa: E402
    _windows,
    completion_perplexity,
    sequence_nlls,
    text_perplexity,
)

PROMPTS = ["What is the capital of France?", "Name three colours.", "Say hi."]
ANSWERS = [
    "The capital of France is Paris, a city on the Seine.",
    "Red, green and blue are three colours; so are cyan and magenta.",
    "Hi!",
]


@pytest.fixture(scope="module")
def tiny(tiny_model):
    return load_model(ModelSpec(name="tiny", base=tiny_model))


def manual_nll(model, ids: list[int], first: int, context: int | None = None) -> tuple[float, int]:
    """Sum of -log p(x_t | x_{t-c..t-1}) over t >= first, one unpadded forward per token (c = all, or `context`)."""
    total, n = 0.0, 0
    with torch.no_grad():
        for t in range(max(first, 1), len(ids)):
            lo = 0 if context is None else max(0, t - context)
            logits = model(input_ids=torch.tensor([ids[lo:t]])).logits[0, -1].double()
            total -= float(torch.log_softmax(logits, -1)[ids[t]])
            n += 1
    return total, n


def test_completion_perplexity_equals_exp_mean_nll(tiny):
    model, tok = tiny
    got = completion_perplexity(model, tok, PROMPTS, ANSWERS, batch_size=2)
    total, n = 0.0, 0
    for p, a in zip(PROMPTS, ANSWERS, strict=True):
        head, tail = encode_pair(tok, p, a)
        s, k = manual_nll(model, head + tail, first=len(head))
        total, n = total + s, n + k
    assert got["n_tokens"] == n  # only completion tokens count
    assert got["perplexity"] == pytest.approx(math.exp(total / n), rel=1e-4)
    assert got["ci_low"] <= got["perplexity"] <= got["ci_high"]


def test_text_perplexity_sliding_window_matches_fixed_context(tiny):
    model, tok = tiny
    text = " ".join(ANSWERS * 3)
    ids = [tok.bos_token_id] + tok.encode(text, add_special_tokens=False)
    # stride 1: every token is scored in its own window of max_length tokens, i.e. with max_length - 1 of context
    got = text_perplexity(model, tok, [text], max_length=8, stride=1, batch_size=16)
    total, n = manual_nll(model, ids, first=1, context=7)
    assert got["n_tokens"] == n == len(ids) - 1
    assert got["perplexity"] == pytest.approx(math.exp(total / n), rel=1e-4)
    # a window longer than the text is the plain full-context perplexity, whatever the stride
    full = text_perplexity(model, tok, [text], max_length=4096, stride=1000)
    total, n = manual_nll(model, ids, first=1)
    assert full["perplexity"] == pytest.approx(math.exp(total / n), rel=1e-4)


def test_windows_score_every_target_once():
    for n, first, max_len, stride in [(20, 1, 8, 3), (20, 5, 8, 7), (3, 0, 8, 4), (9, 9, 4, 2)]:
        wins = _windows(n, first, max_len, stride)
        targets = [t for _, ts, end in wins for t in range(ts, end)]
        assert targets == list(range(max(first, 1), n))
        assert all(end - ws <= max_len and ts >= ws + 1 for ws, ts, end in wins)


def test_batching_does_not_change_nll(tiny):
    model, tok = tiny
    seqs = [tok.encode(a, add_special_tokens=False) for a in ANSWERS]
    one, c1 = sequence_nlls(model, seqs, [1, 1, 1], batch_size=1, pad_id=tok.pad_token_id)
    many, c2 = sequence_nlls(model, seqs, [1, 1, 1], batch_size=3, pad_id=tok.pad_token_id)
    assert list(c1) == list(c2)
    assert many == pytest.approx(one, rel=1e-4)


def test_stride_must_be_smaller_than_window(tiny):
    from alignkit.errors import AlignkitError

    model, tok = tiny
    with pytest.raises(AlignkitError, match="stride"):
        text_perplexity(model, tok, ["hello world"], max_length=4, stride=4)
