"""Judges: verdict rules, the position swap, and the HF next-token preference on a tiny random model."""

import types

import pytest

from alignkit.errors import AlignkitError
from alignkit.eval.judges import GraderJudge, PairwiseLLMJudge, RewardModelJudge, hf_preference_fn

PROMPTS = ["p0", "p1", "p2", "p3"]
A = ["long answer here", "x", "same", "abc"]
B = ["short", "much longer one", "same", "abcd"]


def length_scorer(prompts, completions):
    return [float(len(c)) for c in completions]


def test_reward_model_judge_uses_the_score_difference_and_tie_band():
    # lengths a: 16 1 4 3; b: 5 15 4 4 -> differences +11 -14 0 -1
    assert RewardModelJudge(length_scorer).judge(PROMPTS, A, B) == [1, -1, 0, -1]
    assert RewardModelJudge(length_scorer, tie_band=1.0).judge(PROMPTS, A, B) == [1, -1, 0, 0]  # |-1| <= 1


def test_reward_model_judge_rejects_bad_scores_and_rows():
    with pytest.raises(AlignkitError, match="returned 1 scores for 4"):
        RewardModelJudge(lambda p, c: [0.0]).judge(PROMPTS, A, B)
    with pytest.raises(AlignkitError, match="row 2"):
        RewardModelJudge(lambda p, c: [0.0, 1.0, float("nan"), 2.0]).judge(PROMPTS, A, B)
    with pytest.raises(AlignkitError, match="responses_b: has 3 rows"):
        RewardModelJudge(length_scorer).judge(PROMPTS, A, B[:3])


class ExactMatch:
    def score(self, completion, reference):
        return float(completion.strip() == reference)


def test_grader_judge_compares_grades():
    refs = ["4", "9", "1"]
    # a right / b wrong -> +1; both wrong -> tie; a wrong / b right -> -1
    assert GraderJudge(ExactMatch()).judge(["q"] * 3, ["4", "8", "2"], [" 5", "7", "1 "], refs) == [1, 0, -1]
    with pytest.raises(AlignkitError, match="references"):
        GraderJudge(ExactMatch()).judge(["q"], ["4"], ["5"])
    with pytest.raises(AlignkitError, match="no score"):
        GraderJudge(object())


def test_position_biased_judge_gives_only_ties():
    always_first = PairwiseLLMJudge(lambda prompt, first, second: 1)
    always_second = PairwiseLLMJudge(lambda prompt, first, second: 2)
    assert always_first.judge(PROMPTS, A, B) == [0, 0, 0, 0]
    assert always_second.judge(PROMPTS, A, B) == [0, 0, 0, 0]
    assert always_first.votes(PROMPTS, A, B) == ([1, 1, 1, 1], [-1, -1, -1, -1])


def test_consistent_judge_keeps_its_verdict_in_both_orders():
    prefers_longer = PairwiseLLMJudge(lambda prompt, first, second: 1 if len(first) >= len(second) else 2)
    # "same" vs "same": slot 1 wins both times -> the orders disagree about A -> tie
    assert prefers_longer.judge(PROMPTS, A, B) == [1, -1, 0, -1]


def test_probability_answers_and_a_partly_biased_judge():
    def prob_first(prompt, first, second):
        # quality signal 0.3 per character of difference, plus a +0.15 bonus for slot 1
        return min(1.0, max(0.0, 0.5 + 0.15 + 0.3 * (len(first) - len(second))))

    # row 3 (abc vs abcd): order 1 p = 0.65 - 0.3 = 0.35 -> B; order 2 p = 0.65 + 0.3 -> slot 1 = B -> -1
    # row 2 (same): p = 0.65 in both orders -> slot 1 both times -> tie
    assert PairwiseLLMJudge(prob_first).judge(PROMPTS, A, B) == [1, -1, 0, -1]
    with pytest.raises(AlignkitError, match="returned 3"):
        PairwiseLLMJudge(lambda p, f, s: 3).judge(PROMPTS, A, B)


def test_batch_method_is_called_once_with_both_orders():
    calls = []

    def one(prompt, first, second):
        raise AssertionError("the batch path must be used")

    def batch(prompts, firsts, seconds):
        calls.append((list(prompts), list(firsts), list(seconds)))
        return [
            1 if f < s else 2 for f, s in zip(firsts, seconds, strict=True)
        ]  # alphabetical: consistent across orders

    one.batch = batch
    assert PairwiseLLMJudge(one).judge(["q", "r"], ["a", "z"], ["b", "y"]) == [1, -1]
    assert calls == [(["q", "r", "q", "r"], ["a", "z", "b", "y"], ["b", "y", "a", "z"])]


def _tiny_chat_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "<s>", "<user>", "<assistant>", "1", "2", *"which answer is better the cat a b".split()]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", eos_token="<s>")
    tok.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}> {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}<assistant> {% endif %}"
    )
    return tok


def test_hf_preference_fn_batched_equals_unbatched_and_restores_train_mode():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    tok = _tiny_chat_tokenizer()
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    model = transformers.LlamaForCausalLM(config).train()
    fn = hf_preference_fn(model, tok, batch_size=2)
    # different lengths so the batch of 2 is left-padded; the padding must not change any answer
    rows = [("the cat", "a", "b"), ("which", "a b a b a b a b", "1"), ("cat", "2 2 2", "the a")]
    batched = fn.batch(*map(list, zip(*rows, strict=True)))
    single = [fn(*row) for row in rows]
    assert batched == pytest.approx(single, abs=1e-5)
    assert all(0.0 < p < 1.0 for p in batched) and len(set(batched)) == 3
    assert model.training  # restored after the eval-mode call


def test_hf_preference_fn_reads_the_digit_logits():
    torch = pytest.importorskip("torch")
    tok = _tiny_chat_tokenizer()
    one, two = tok.convert_tokens_to_ids(["1", "2"])

    class LovesOne(torch.nn.Module):  # next-token logit of "1" beats "2" by 2.0 at every position
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, attention_mask, position_ids):
            logits = torch.zeros(*input_ids.shape, len(tok))
            logits[..., one] = 2.0
            return types.SimpleNamespace(logits=logits)

    fn = hf_preference_fn(LovesOne(), tok)
    assert fn("q", "a", "b") == pytest.approx(1 / (1 + torch.exp(torch.tensor(-2.0)).item()))  # sigmoid(2 - 0)
    assert two != one
    assert PairwiseLLMJudge(fn).judge(["q", "r"], ["a", "b"], ["b", "a"]) == [0, 0]  # a pure slot-1 lover


def test_hf_preference_fn_needs_a_chat_template():
    tok = _tiny_chat_tokenizer()
    tok.chat_template = None
    with pytest.raises(AlignkitError, match="chat_template"):
        hf_preference_fn(object(), tok)
