"""Who a judge is, and how good it is on pairs it never trained on: what every reported win rate states.

:class:`JudgeInfo` travels with a built judge (:class:`alignkit.eval.judge_builders.SuiteJudge`): its registry name,
the model or rule that judges, the run that trained it (whose ``run.json`` names its dataset card), whether it is
the same model as the suite's proxy (``metrics.rm_score.reward_model``, the scorer that may have labelled training
pairs) and its held-out pair accuracy. Whether it saw a training prompt of the evaluated run depends on that run too,
so it is computed per comparison (:mod:`alignkit.eval.provenance`).

Held-out pair accuracy (:func:`heldout_pair_accuracy`) is measured, not assumed: the share of the judge's own card's
test pairs on which it scores chosen strictly above rejected, with a 95% bootstrap interval. It is cached on disk by
the judge's weights identity and the pairs, so only the first eval with a given judge pays for it. The card is read
from its existing build (built when the judge trained), never rebuilt here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from alignkit.cache import cache_dir
from alignkit.io import atomic_write_json

KINDS = ("reward model", "LLM", "grader")


@dataclass
class JudgeInfo:
    name: str  # registry name: rm, llm, grader
    model: str  # what judges: run:NAME, a path or hub id, grader:NAME
    kind: str  # one of KINDS
    run_dir: str | None = None  # the run that trained it, when it is one
    trained: bool = True  # False for a rule (a grader): it saw no data at all
    proxy: str | None = None  # the suite's proxy reward model (rm_score), when there is one
    same_as_proxy: bool = False
    heldout_accuracy: dict[str, Any] | None = None  # {"value", "n", "ci_low", "ci_high", "card", "split"} or a reason

    @property
    def label(self) -> str:
        return f"{self.name}: {self.model}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def not_measured(reason: str) -> dict[str, Any]:
    return {"value": None, "reason": reason}


def _cache_key(identity: Any, card: str, split: str, rows: list[dict[str, Any]]) -> str:
    payload = {"judge": identity, "card": card, "split": split, "rows": rows}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def heldout_pair_accuracy(
    scorer: Callable[..., list[float]],
    card: str,
    split: str = "test",
    max_pairs: int = 64,
    identity: Any = None,
    use_cache: bool = True,
) -> dict[str, Any]:
    """Accuracy of a reward-model ``scorer(prompts, completions)`` on a card's held-out pairs: the share with
    ``score(prompt, chosen) > score(prompt, rejected)`` (strict: a tie is wrong), with a 95% bootstrap interval.

    ``identity`` (JSON-able, e.g. :meth:`ModelSpec.identity`) keys the disk cache; ``None`` disables it.
    Returns ``{"value", "n", "ci_low", "ci_high", "card", "split"}``.
    """
    import numpy as np

    from alignkit.chat_format import completion_text
    from alignkit.data.store import reuse_only
    from alignkit.eval.prompt_sets import load_rows
    from alignkit.eval.stats import bootstrap_ci

    with reuse_only():  # the judge's own card was built when it trained; a missing build is not rebuilt here
        rows = load_rows(card, split, max_pairs)
    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected") if k in r} for r in rows]
    if not rows or any(set(r) != {"prompt", "chosen", "rejected"} for r in rows):
        return not_measured(f"card '{card}' split '{split}' has no prompt/chosen/rejected pairs")
    path = None
    if identity is not None and use_cache:
        path = cache_dir("judge_accuracy") / f"{_cache_key(identity, card, split, rows)}.json"
        if path.exists():
            return json.loads(path.read_text(encoding="utf-8"))
    prompts = [r["prompt"] for r in rows]
    chosen = scorer(prompts, [completion_text(r["chosen"]) for r in rows])
    rejected = scorer(prompts, [completion_text(r["rejected"]) for r in rows])
    hits = (np.asarray(chosen, dtype=float) > np.asarray(rejected, dtype=float)).astype(float)
    value, low, high = bootstrap_ci(hits, np.mean)
    out = {"value": value, "n": len(rows), "ci_low": low, "ci_high": high, "card": card, "split": split}
    if path is not None:
        atomic_write_json(path, out)
    return out
