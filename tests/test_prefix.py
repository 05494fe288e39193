"""Shared-prefix prefill (alignkit.prefix_cache) gives the per-row numbers: generation, RM scores and perplexity.

Every check compares the harness path (shared chat-template prefix run once, rows prefilled unpadded on the CPU)
with the same code with prefix sharing switched off, and with a plain one-row-at-a-time computation.
"""

import pytest

torch = pytest.importorskip("torch")

import alignkit.prefix_cache as prefix  # noqa: E402
from alignkit.chat_format import encode_pair, prompt_text  # noqa: E402
from alignkit.eval.generation import GenerationConfig, _run_generation  # noqa: E402
from alignkit.eval.model_spec import ModelSpec, load_model  # noqa: E402
from alignkit.eval.perplexity import completion_nlls  # noqa: E402
from alignkit.prefix_cache import MIN_PREFIX, shared_prefix_len  # noqa: E402

# different lengths, so that batches pad and the ragged prefill has rows of several widths
PROMPTS = [
    "Say hi.",
    "What is 2 + 2? Answer briefly, please, and explain the steps you took to get there.",
    "Name a colour.",
    "Write one sentence about the sea, the wind and the boats that sail between the islands at dusk.",
    "Why?",
]
ANSWERS = ["Hi!", "4. I added two and two.", "Blue.", "The boats drift home as the wind drops.", "Because."]


def test_shared_prefix_len_hand_examples():
    row = list(range(1, 11))  # 1 … 10
    assert shared_prefix_len([row, row[:9] + [0]], limit=12) == 9
    assert shared_prefix_len([row, row], limit=12) == 10  # capped by the length
    assert shared_prefix_len([row, row], limit=9) == 9  # and by the caller's limit
    assert shared_prefix_len([row, row[:7] + [0]], limit=12) == 0  # 7 < MIN_PREFIX: not worth a forward
    assert MIN_PREFIX == 8
    assert shared_prefix_len([], limit=3) == 0


def test_prefill_groups_pad_within_the_token_budget():
    # longest first; a run takes the next row while (rows + 1) x its first (longest) row <= 10 tokens:
    # [6] + 5: 2x6=12 no | [5] + 3: 2x5=10 yes, + 3: 3x5=15 no | [3] + 2: 2x3=6, + 1: 3x3=9, + 1: 4x3=12 no | [1]
    assert prefix._groups([6, 5, 3, 3, 2, 1, 1], tokens=10) == [[0], [1, 2], [3, 4, 5], [6]]
    assert prefix._groups([20, 1], tokens=10) == [[0], [1]]  # an over-budget row still runs, alone
    assert prefix._groups([0, 0, 0], tokens=10) == [[0, 1, 2]]  # rows with nothing to prefill group freely


@pytest.fixture(params=["tiny_model", "tiny_qwen"])
def loaded(request):
    return load_model(ModelSpec(name="tiny", base=request.getfixturevalue(request.param)))


def _without_prefix(monkeypatch):
    monkeypatch.setattr(prefix, "supported", lambda model: False)


def test_chat_prompts_share_the_template_prefix(loaded):
    _, tok = loaded
    rows = [tok.encode(prompt_text(tok, p), add_special_tokens=False) for p in PROMPTS]
    assert shared_prefix_len(rows, min(map(len, rows)) - 1) >= 20  # SmolLM2's system turn + user header


def test_ragged_prefill_builds_a_cache(loaded):
    """The fast path must really run (not silently fall back) on a plain Llama/Qwen2 cache: the seam is pinned."""
    model, tok = loaded
    rows = [tok.encode(prompt_text(tok, p), add_special_tokens=False) for p in PROMPTS]
    n = shared_prefix_len(rows, min(map(len, rows)) - 1)
    cache = prefix.prefill_rows(model, prefix.prefix_cache(model, rows[0][:n]), n, [r[n:] for r in rows])
    assert cache is not None
    width = max(len(r) - n for r in rows)
    assert cache.layers[0].keys.shape[0] == len(rows) and cache.get_seq_length() == n + width - 1


def test_generation_with_prefix_matches_one_prompt_at_a_time(loaded, monkeypatch):
    model, tok = loaded
    cfg = GenerationConfig(max_new_tokens=8, batch_size=4)
    shared = _run_generation(model, tok, PROMPTS, cfg, "prefix")
    # the straightforward loop: one unpadded generate per prompt
    from transformers import GenerationConfig as HF

    loop = []
    for p in PROMPTS:
        ids = torch.tensor([tok.encode(prompt_text(tok, p), add_special_tokens=False)])
        hf = HF(max_new_tokens=8, do_sample=False, eos_token_id=[tok.eos_token_id], pad_token_id=tok.pad_token_id)
        row = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=hf)
        row = row[0, ids.shape[1] :].tolist()
        row = row[: row.index(tok.eos_token_id)] if tok.eos_token_id in row else row
        loop.append(tok.decode(row, skip_special_tokens=True).strip())
    assert shared[0] == loop
    _without_prefix(monkeypatch)
    assert _run_generation(model, tok, PROMPTS, cfg, "plain") == shared


def test_generation_with_prefix_on_a_lora_adapter(tiny_model, tmp_path, monkeypatch):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    adapter = tmp_path / "adapter"
    torch.manual_seed(0)
    peft = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    peft.save_pretrained(adapter)
    model, tok = load_model(ModelSpec(name="tuned", base=tiny_model, adapter=str(adapter)))
    assert prefix.supported(model)
    cfg = GenerationConfig(max_new_tokens=6, batch_size=3)
    shared = _run_generation(model, tok, PROMPTS, cfg, "prefix")
    _without_prefix(monkeypatch)
    assert _run_generation(model, tok, PROMPTS, GenerationConfig(max_new_tokens=6, batch_size=1), "one") == shared


def test_rm_scores_with_prefix_match_one_text_at_a_time(tiny_model, monkeypatch):
    from transformers import AutoModelForSequenceClassification

    from alignkit.eval.rm_score import RewardModelScorer
    from alignkit.models import load_tokenizer

    tok = load_tokenizer(tiny_model)
    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=1).eval()
    scorer = RewardModelScorer(rm, tok, batch_size=2)
    shared = scorer(PROMPTS, ANSWERS)
    with torch.inference_mode():
        one = [
            float(rm(input_ids=torch.tensor([scorer.render(p, a)])).logits[0, 0])
            for p, a in zip(PROMPTS, ANSWERS, strict=True)
        ]
    assert shared == pytest.approx(one, abs=1e-5)
    _without_prefix(monkeypatch)
    assert scorer(PROMPTS, ANSWERS) == pytest.approx(shared, abs=1e-5)


def test_perplexity_with_prefix_matches_without(loaded, monkeypatch):
    model, tok = loaded
    shared, n1 = completion_nlls(model, tok, PROMPTS, ANSWERS, batch_size=2)
    # one unpadded full forward per text, all logits, as a user would write it
    one = []
    with torch.inference_mode():
        for p, a in zip(PROMPTS, ANSWERS, strict=True):
            head, tail = encode_pair(tok, p, a)
            logits = model(input_ids=torch.tensor([head + tail])).logits[0]
            one.append(
                float(
                    torch.nn.functional.cross_entropy(logits[len(head) - 1 : -1], torch.tensor(tail), reduction="sum")
                )
            )
    assert list(shared) == pytest.approx(one, rel=1e-5)
    _without_prefix(monkeypatch)
    plain, n2 = completion_nlls(model, tok, PROMPTS, ANSWERS, batch_size=2)
    assert list(n1) == list(n2)
    assert list(plain) == pytest.approx(list(shared), rel=1e-5)
