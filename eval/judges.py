"""Pairwise judges: one verdict per prompt, ``+1`` (A better), ``0`` (tie) or ``-1`` (B better).

TRL removed its judges in 1.1; these replace them with one interface::

    judge.judge(prompts, responses_a, responses_b, references=None) -> list[int]

* :class:`RewardModelJudge` compares reward-model scores (any TRL-style ``scorer(prompts, completions)``);
* :class:`GraderJudge` compares verifiable-task grades, ``grader.score(completion, reference)``;
* :class:`PairwiseLLMJudge` asks a chat model "which is better, 1 or 2?" in both orders and keeps a verdict only when
  the orders agree; :func:`hf_preference_fn` builds its model call from a local Hugging Face causal LM.

A judge may also offer ``judgement(...) -> Judgement``: the verdicts plus what else it measured (the LLM judge's
order agreement) and remarks for the report. :func:`judge_pairs` calls whichever a judge has. Which judges a suite
uses is looked up by name in :data:`alignkit.eval.registries.JUDGES` (:mod:`alignkit.eval.judge_builders`).

Verdicts feed :func:`alignkit.eval.winrate.win_rate` with ``scale="signed"``. torch is imported lazily, only by
:func:`hf_preference_fn`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from alignkit.chat_format import as_messages, transcript
from alignkit.errors import AlignkitError

# (prompt, first, second) -> 1 or 2 (which is better), or a float: the probability that the *first* is better.
PreferenceFn = Callable[[str, str, str], float]

JUDGE_TEMPLATE = (
    "Two assistants answered the same request. Decide which answer serves the user better: it should be correct, "
    "follow the request, and be clear. Do not reward an answer for being longer or for coming first.\n\n"
    "### Request\n{prompt}\n\n"
    "### Answer 1\n{first}\n\n"
    "### Answer 2\n{second}\n\n"
    "Which answer is better, 1 or 2? Reply with the digit only."
)


class PairwiseJudge(Protocol):
    def judge(
        self,
        prompts: Sequence[Any],
        responses_a: Sequence[str],
        responses_b: Sequence[str],
        references: Sequence[Any] | None = None,
    ) -> list[int]: ...


@dataclass
class Judgement:
    """Verdicts (``+1``/``0``/``-1`` per prompt), a judge's own extra measurements for the report (e.g.
    ``order_agreement``) and remarks worth a note."""

    verdicts: list[int]
    extras: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def judge_pairs(judge: PairwiseJudge, prompts, responses_a, responses_b, references=None) -> Judgement:
    """``judge.judgement(...)`` when the judge offers one, else its plain ``judge(...)`` verdicts."""
    judgement = getattr(judge, "judgement", None)
    if callable(judgement):
        return judgement(prompts, responses_a, responses_b, references)
    return Judgement(list(judge.judge(prompts, responses_a, responses_b, references)))


def _check_rows(prompts: Sequence, responses_a: Sequence, responses_b: Sequence, references: Sequence | None) -> int:
    n = len(prompts)
    named = {"responses_a": responses_a, "responses_b": responses_b, "references": references}
    for name, seq in named.items():
        if seq is not None and len(seq) != n:
            raise AlignkitError(f"{name}: has {len(seq)} rows but prompts has {n}; they must align")
    return n


def _verdict_from_scores(score_a: float, score_b: float, tie_band: float) -> int:
    """``+1`` if ``a - b > tie_band``, ``-1`` if ``a - b < -tie_band``, else ``0`` (a tie)."""
    diff = score_a - score_b
    return 1 if diff > tie_band else -1 if diff < -tie_band else 0


def _finite_scores(scores: Any, n: int, source: str) -> list[float]:
    scores = [float(s) for s in scores]
    if len(scores) != n:
        raise AlignkitError(f"{source}: returned {len(scores)} scores for {n} responses")
    for i, s in enumerate(scores):
        if not math.isfinite(s):
            raise AlignkitError(f"{source}: returned {s} for row {i}; scores must be finite")
    return scores


class RewardModelJudge:
    """Verdict from the reward-score difference ``r(prompt, a) - r(prompt, b)`` with a tie band.

    ``scorer(prompts, completions) -> list[float]`` is the TRL reward-function signature, so the same callable that
    scored RL rollouts can judge evaluation pairs. A ``tie_band`` > 0 absorbs score noise: differences within
    ``[-tie_band, tie_band]`` are ties.
    """

    def __init__(self, scorer: Callable[[list[str], list[str]], Sequence[float]], tie_band: float = 0.0):
        if tie_band < 0:
            raise AlignkitError(f"tie_band: must be >= 0, got {tie_band}")
        self.scorer, self.tie_band = scorer, tie_band

    def judge(self, prompts, responses_a, responses_b, references=None) -> list[int]:
        n = _check_rows(prompts, responses_a, responses_b, None)
        name = getattr(self.scorer, "__name__", type(self.scorer).__name__)
        sa = _finite_scores(self.scorer(list(prompts), list(responses_a)), n, f"scorer {name}")
        sb = _finite_scores(self.scorer(list(prompts), list(responses_b)), n, f"scorer {name}")
        return [_verdict_from_scores(a, b, self.tie_band) for a, b in zip(sa, sb, strict=True)]


class GraderJudge:
    """Verdict for verifiable tasks from ``grader.score(completion, reference)`` of each side, with a tie band.

    Both right (or both wrong) is a tie under a binary grader, which is the honest outcome: neither system is better
    on that prompt.
    """

    def __init__(self, grader: Any, tie_band: float = 0.0):
        if not callable(getattr(grader, "score", None)):
            raise AlignkitError(f"grader: {type(grader).__name__} has no score(completion, reference) method")
        if tie_band < 0:
            raise AlignkitError(f"tie_band: must be >= 0, got {tie_band}")
        self.grader, self.tie_band = grader, tie_band

    def judge(self, prompts, responses_a, responses_b, references=None) -> list[int]:
        if references is None:
            raise AlignkitError("references: GraderJudge needs one reference answer per prompt")
        _check_rows(prompts, responses_a, responses_b, references)
        name = type(self.grader).__name__
        verdicts = []
        for i, (a, b, ref) in enumerate(zip(responses_a, responses_b, references, strict=True)):
            sa, sb = _finite_scores(
                [self.grader.score(a, ref), self.grader.score(b, ref)], 2, f"grader {name} row {i}"
            )
            verdicts.append(_verdict_from_scores(sa, sb, self.tie_band))
        return verdicts


def _vote(answer: float) -> int:
    """One order's vote for the *first* position: +1 first, -1 second, 0 undecided.

    ``1``/``2`` are position labels; any other number is P(first is better) and compared with ½.
    """
    if answer == 1 or answer == 2:
        return 1 if answer == 1 else -1
    p = float(answer)
    if not 0.0 <= p <= 1.0:
        raise AlignkitError(f"preference_fn: returned {answer}; expected 1, 2 or a probability in [0, 1]")
    return 1 if p > 0.5 else -1 if p < 0.5 else 0


class PairwiseLLMJudge:
    """LLM-as-a-judge with position swapping (Zheng et al. 2023, "Judging LLM-as-a-Judge", §3.4).

    Each pair is asked twice, ``(a, b)`` and ``(b, a)``. The verdict stands only when both orders name the same
    response; when they disagree the judge was deciding by position, so the verdict is a tie. A judge that always
    prefers the first slot therefore yields all ties, not a win for A.

    ``preference_fn(prompt, first, second)`` returns ``1`` or ``2`` or P(first is better). If it also has a
    ``batch(prompts, firsts, seconds) -> list`` method (as :func:`hf_preference_fn` does), all ``2n`` questions go
    through it in one call. Prompts may be strings or chat messages; messages are shown to the judge as
    :func:`alignkit.chat_format.transcript`.
    """

    def __init__(self, preference_fn: PreferenceFn):
        if not callable(preference_fn):
            raise AlignkitError(f"preference_fn: expected a callable, got {type(preference_fn).__name__}")
        self.preference_fn = preference_fn

    def _ask(self, prompts: list[str], firsts: list[str], seconds: list[str]) -> list[float]:
        batch = getattr(self.preference_fn, "batch", None)
        if callable(batch):
            answers = list(batch(prompts, firsts, seconds))
            if len(answers) != len(prompts):
                raise AlignkitError(f"preference_fn.batch: returned {len(answers)} answers for {len(prompts)} pairs")
            return answers
        return [self.preference_fn(p, f, s) for p, f, s in zip(prompts, firsts, seconds, strict=True)]

    def votes(self, prompts, responses_a, responses_b) -> tuple[list[int], list[int]]:
        """Votes for A in each order: ``(a_first, a_second)``, each ``+1`` A, ``-1`` B, ``0`` undecided."""
        n = _check_rows(prompts, responses_a, responses_b, None)
        p = [x if isinstance(x, str) else transcript(as_messages(x)) for x in prompts]
        a, b = list(responses_a), list(responses_b)
        answers = self._ask(p + p, a + b, b + a)
        a_first = [_vote(x) for x in answers[:n]]
        a_second = [-_vote(x) for x in answers[n:]]  # A sat in slot 2, so a vote for slot 1 is a vote for B
        return a_first, a_second

    def judgement(self, prompts, responses_a, responses_b, references=None) -> Judgement:
        """The verdicts (a verdict stands only when both orders agree, else a tie) and ``order_agreement``, the
        share of pairs on which the two orders agreed; under ½ the verdicts are mostly ties, which a note says."""
        first, second = self.votes(prompts, responses_a, responses_b)
        verdicts = [u if u == v else 0 for u, v in zip(first, second, strict=True)]
        agreement = sum(u == v for u, v in zip(first, second, strict=True)) / len(first) if first else float("nan")
        notes = []
        if agreement < 0.5:
            notes.append(
                f"the two answer orders agreed on only {agreement:.0%} of pairs (position bias); "
                "its win rate is mostly ties"
            )
        return Judgement(verdicts, {"order_agreement": float(agreement)}, notes)

    def judge(self, prompts, responses_a, responses_b, references=None) -> list[int]:
        return self.judgement(prompts, responses_a, responses_b).verdicts


def hf_preference_fn(
    model: Any,
    tokenizer: Any,
    template: str = JUDGE_TEMPLATE,
    system_prompt: str | None = None,
    batch_size: int = 8,
) -> PreferenceFn:
    """Build a :class:`PairwiseLLMJudge` model call from a local Hugging Face causal LM and its chat tokenizer.

    The judge prompt (``template`` formatted with ``prompt``, ``first``, ``second``) is chat-templated with the
    generation prompt appended, and the answer is read from the next-token logits, without sampling::

        P(first is better) = softmax(logit["1"], logit["2"])[0] = sigmoid(logit["1"] - logit["2"])

    Inputs are left-padded and batched ``batch_size`` at a time; position ids follow the attention mask so padding
    does not shift positions. The model is put in eval mode for the call (dropout would make verdicts random) and
    restored afterwards. "1" and "2" must each be a single token, which holds for common chat tokenizers.

    Returns a callable ``(prompt, first, second) -> float`` with a ``batch(prompts, firsts, seconds)`` method.
    """
    import torch  # lazy: the rest of the eval maths must import without torch

    from alignkit.prefix_cache import positions_after_prefix

    if batch_size < 1:
        raise AlignkitError(f"batch_size: must be >= 1, got {batch_size}")
    if not getattr(tokenizer, "chat_template", None):
        raise AlignkitError("tokenizer: has no chat_template; the pairwise judge needs a chat (instruct) model")
    ids = []
    for digit in ("1", "2"):
        enc = tokenizer.encode(digit, add_special_tokens=False)
        if len(enc) != 1:
            raise AlignkitError(f"tokenizer: '{digit}' encodes to {len(enc)} tokens; the judge needs one token each")
        ids.append(enc[0])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise AlignkitError("tokenizer: has neither pad_token_id nor eos_token_id to pad batched judge prompts")

    def render(prompt: str, first: str, second: str) -> list[int]:
        messages = [{"role": "user", "content": template.format(prompt=prompt, first=first, second=second)}]
        if system_prompt is not None:
            messages.insert(0, {"role": "system", "content": system_prompt})
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return tokenizer.encode(text, add_special_tokens=False)  # the template already holds any BOS

    def batch(prompts: Sequence[str], firsts: Sequence[str], seconds: Sequence[str]) -> list[float]:
        rows = [render(p, f, s) for p, f, s in zip(prompts, firsts, seconds, strict=True)]
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        out: list[float] = []
        try:
            with torch.inference_mode():
                for start in range(0, len(rows), batch_size):
                    chunk = rows[start : start + batch_size]
                    width = max(len(r) for r in chunk)
                    input_ids = torch.tensor([[pad_id] * (width - len(r)) + r for r in chunk], device=device)
                    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in chunk], device=device)
                    positions = positions_after_prefix(mask)
                    logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions).logits[:, -1]
                    margin = (logits[:, ids[0]] - logits[:, ids[1]]).float()
                    out.extend(torch.sigmoid(margin).tolist())
        finally:
            model.train(was_training)
        return out

    def preference_fn(prompt: str, first: str, second: str) -> float:
        return batch([prompt], [first], [second])[0]

    preference_fn.batch = batch  # type: ignore[attr-defined]
    preference_fn.__name__ = "hf_preference_fn"
    return preference_fn
