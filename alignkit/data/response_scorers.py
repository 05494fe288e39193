"""Scorers of sampled responses for on-policy pairs: a reward model, a grader, or the pairwise LLM judge.

A scorer reference (``--scorer``, a card's ``scorer:``) is one of:

- ``run:NAME`` -- the reward model of a finished reward run ``<runs_root>/NAME`` (e.g. ``run:rm-smol``), or a
  reward-model checkpoint path / hub id; scored by :mod:`alignkit.eval.rm_score` (same rendering as training);
- ``grader:NAME`` or a bare grader name (``math_answer``, ``exact_match``, ``contains``, ``edit_distance``, see
  :data:`alignkit.plugins.graders.GRADERS`): ``grader.score(response, reference)`` against the prompts' reference
  column;
- ``llm:MODEL`` -- the pairwise LLM judge (:class:`alignkit.eval.judges.PairwiseLLMJudge`, both answer orders) with
  ``MODEL`` as in :func:`alignkit.data.model_refs.resolve_policy`. It ranks by a **round robin**: every pair of the
  N samples is judged (N(N-1)/2 pairs, each in both orders), and a sample's score is its wins minus its losses
  (a tie, including an order disagreement, counts 0). Comparing each sample against the first only would make the
  first sample's quality decide every margin; a round robin costs N/2 times more judge calls and ranks all samples
  on the same footing.

Every scorer has an :meth:`identity` (part of the pair cache key) and scores a chunk of prompts at once:
``score(prompts, groups, references) -> list[list[float]]``, one list of N scores per prompt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alignkit.chat_format import Messages
from alignkit.data.model_refs import RUN_PREFIX, require_finished_run, resolve_policy
from alignkit.errors import AlignkitError
from alignkit.eval.model_spec import ModelSpec

GRADER_PREFIX, LLM_PREFIX = "grader:", "llm:"


class ResponseScorer:
    """Base: ``needs_reference`` scorers read the prompts' reference column; models load on first use."""

    needs_reference = False
    kind = ""

    def __init__(self, ref: str):
        self.ref = ref

    def identity(self) -> dict[str, Any]:
        raise NotImplementedError

    def score(
        self, prompts: list[Messages], groups: list[list[str]], references: list[Any] | None = None
    ) -> list[list[float]]:
        raise NotImplementedError

    def release(self) -> None:
        """Free a loaded model."""


def _finite(scores: Sequence[float], where: str) -> list[float]:
    out = [float(s) for s in scores]
    for i, s in enumerate(out):
        if not math.isfinite(s):
            raise AlignkitError(f"scorer {where}: returned {s} for response {i}; scores must be finite")
    return out


def _regroup(flat: list[float], groups: list[list[str]]) -> list[list[float]]:
    out, start = [], 0
    for group in groups:
        out.append(flat[start : start + len(group)])
        start += len(group)
    return out


class RewardModelResponses(ResponseScorer):
    """Reward-model logits of ``prompt + [assistant: response]`` (:mod:`alignkit.eval.rm_score`)."""

    kind = "reward_model"

    def __init__(
        self,
        ref: str,
        base: str,
        adapter: str | None,
        batch_size: int = 8,
        max_length: int = 1024,
        precision: str = "exact",
    ):
        super().__init__(ref)
        self.spec = ModelSpec(name=ref, base=base, adapter=adapter, precision=precision)
        self.batch_size, self.max_length = batch_size, max_length
        self._scorer = None

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "ref": self.ref, "model": self.spec.identity(), "max_length": self.max_length}

    def score(self, prompts, groups, references=None):
        from alignkit.eval.rm_score import load_reward_scorer

        if self._scorer is None:
            self._scorer = load_reward_scorer(
                self.spec.base,
                self.spec.adapter,
                batch_size=self.batch_size,
                max_length=self.max_length,
                name=self.ref,
                precision=self.spec.precision,
            )
        flat_prompts = [p for p, group in zip(prompts, groups, strict=True) for _ in group]
        flat = _finite(self._scorer(flat_prompts, [r for group in groups for r in group]), self.ref)
        return _regroup(flat, groups)

    def release(self) -> None:
        self._scorer = None


class GraderResponses(ResponseScorer):
    """``grader.score(response, reference)`` of every response, against its prompt's reference answer."""

    kind = "grader"
    needs_reference = True

    def __init__(self, ref: str, name: str, purpose: str = "scorer"):
        from alignkit.plugins.graders import GRADERS, get_grader

        super().__init__(ref)
        if name not in GRADERS:
            raise AlignkitError(f"{purpose} '{ref}': unknown grader '{name}'; graders: {', '.join(sorted(GRADERS))}")
        self.name, self.grader = name, get_grader(name)

    def identity(self) -> dict[str, Any]:
        return {"kind": self.kind, "grader": self.name, "class": type(self.grader).__qualname__}

    def score(self, prompts, groups, references=None):
        if references is None:
            raise AlignkitError(f"scorer '{self.ref}': a grader needs a reference answer per prompt")
        out = []
        for group, reference in zip(groups, references, strict=True):
            try:
                out.append(_finite([self.grader.score(r, reference) for r in group], self.ref))
            except ValueError as exc:  # a missing reference
                raise AlignkitError(f"scorer '{self.ref}': {exc}") from None
        return out


class LLMJudgeResponses(ResponseScorer):
    """Round-robin wins minus losses under :class:`~alignkit.eval.judges.PairwiseLLMJudge` (module docstring)."""

    kind = "llm_judge"

    def __init__(self, ref: str, spec: ModelSpec, batch_size: int = 8):
        super().__init__(ref)
        self.spec, self.batch_size = spec, batch_size
        self._judge = None

    def identity(self) -> dict[str, Any]:
        from alignkit.eval.judges import JUDGE_TEMPLATE

        return {"kind": self.kind, "model": self.spec.identity(), "template": JUDGE_TEMPLATE, "rank": "round_robin"}

    def score(self, prompts, groups, references=None):
        from alignkit.eval.judges import PairwiseLLMJudge, hf_preference_fn
        from alignkit.eval.model_spec import load_model

        if self._judge is None:
            model, tokenizer = load_model(self.spec)
            self._judge = PairwiseLLMJudge(hf_preference_fn(model, tokenizer, batch_size=self.batch_size))
        matches = [
            (p, i, j) for p, group in enumerate(groups) for i in range(len(group)) for j in range(i + 1, len(group))
        ]
        out = [[0.0] * len(group) for group in groups]
        if not matches:
            return out
        verdicts = self._judge.judge(
            [prompts[p] for p, _, _ in matches],
            [groups[p][i] for p, i, _ in matches],
            [groups[p][j] for p, _, j in matches],
        )
        for (p, i, j), verdict in zip(matches, verdicts, strict=True):  # +1: i won, -1: j won, 0: tie
            out[p][i] += verdict
            out[p][j] -= verdict
        return out

    def release(self) -> None:
        self._judge = None


def parse_scorer(
    ref: str,
    runs_root: str | Path = "runs",
    batch_size: int = 8,
    max_length: int = 1024,
    purpose: str = "scorer",
    precision: str = "exact",
) -> ResponseScorer:
    """The scorer a reference names (module docstring); a bad reference is a one-line error that starts with
    ``purpose``. A model scorer loads in ``precision`` (:func:`alignkit.inference_precision.apply_precision`)."""
    from alignkit.plugins.graders import GRADERS

    if not ref:
        raise AlignkitError("scorer: none given; use run:NAME, a reward-model path, grader:NAME or llm:MODEL")
    if ref.startswith(GRADER_PREFIX) or ref in GRADERS:
        return GraderResponses(ref, ref.removeprefix(GRADER_PREFIX), purpose)
    if ref.startswith(LLM_PREFIX):
        spec = resolve_policy(ref[len(LLM_PREFIX) :], runs_root, purpose=f"{purpose} (LLM judge)")
        spec = spec.with_precision(precision)
        return LLMJudgeResponses(ref, spec, batch_size=batch_size)
    if ref.startswith(RUN_PREFIX):
        require_finished_run(ref, runs_root, purpose)
    elif "/" not in ref and not Path(ref).exists():
        raise AlignkitError(
            f"{purpose}: unknown scorer '{ref}': not run:NAME, a reward-model path, grader:NAME "
            f"(graders: {', '.join(sorted(GRADERS))}) or llm:MODEL"
        )
    from alignkit.eval.rm_score import resolve_reward_model

    resolved = resolve_reward_model(ref, runs_root)
    assert resolved is not None  # a run was checked finished above
    base, adapter = resolved
    return RewardModelResponses(ref, base, adapter, batch_size=batch_size, max_length=max_length, precision=precision)
