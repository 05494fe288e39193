"""Held-out win rate during training, for any transformers/TRL trainer: :class:`WinRateCallback`.

TRL removed its win-rate callback with its judges; this one is built from alignkit's eval parts::

    from alignkit.eval import WinRateCallback
    trainer = trl.DPOTrainer(..., callbacks=[WinRateCallback(prompts, judge, every_n_steps=10)])

- when training begins, the starting policy answers ``prompts`` once (greedy, batched, shared prompt prefix:
  :func:`alignkit.eval.generation.generate_with_model`, the eval's own generation path) and the replies are kept;
- every ``every_n_steps`` optimizer steps, and at the last step, the current policy answers the same prompts and
  ``judge`` (any :class:`~alignkit.eval.judges.PairwiseJudge`: reward model, pairwise LLM, grader) compares each reply
  with the starting reply;
- it logs, through the trainer's own ``log`` (so TensorBoard, wandb, trackio, ``state.log_history`` and alignkit's
  ``train_log.jsonl`` all get it): ``winrate/win_rate`` with ``winrate/ci_low``/``ci_high`` (bootstrap over prompts,
  a tie counts ½, :func:`alignkit.eval.winrate.win_rate`), ``winrate/lc_win_rate`` with its CI (the length-controlled
  win rate, :func:`alignkit.eval.winrate.length_controlled_win_rate`), ``winrate/length`` and
  ``winrate/start_length`` (mean reply tokens), ``winrate/distinct_2`` (corpus distinct-2 of the policy's replies)
  and ``winrate/truncated`` (share cut at ``max_new_tokens``);
- when training ends it draws ``winrate.png`` into ``args.output_dir`` (when matplotlib is installed).

Seam: a ``TrainerCallback`` is not handed its trainer, and only ``Trainer.log`` reaches every reporting integration
(they are callbacks earlier in the list than a user's). Pass ``trainer=`` after building it, or let
:meth:`WinRateCallback.on_train_begin` find the trainer that is calling it (the ``Trainer`` method a few frames up
the stack; pinned by tests/test_winrate_callback.py). Entries go through ``transformers.Trainer.log``, not the TRL
subclass's ``log``: TRL's merges and clears its own running metric averages there, which would cut them short.

Judging runs on the main process only (``state.is_world_process_zero``); with a sharded model (FSDP, ZeRO-3) the
other ranks would wait in a collective, so use it with replicated models. On resume the "starting" replies are the
resumed checkpoint's unless ``start_responses`` is given.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback

from alignkit.errors import AlignkitError
from alignkit.eval.generation import GenerationConfig, generate_with_model
from alignkit.eval.judges import PairwiseJudge, judge_pairs

logger = logging.getLogger("alignkit")

__all__ = ["WinRateCallback", "find_calling_trainer", "plot_curves"]

PREFIX = "winrate/"


def find_calling_trainer(max_depth: int = 12) -> Trainer | None:
    """The ``transformers.Trainer`` whose method is on the call stack within ``max_depth`` frames, else None."""
    frame = inspect.currentframe()
    try:
        for _ in range(max_depth):
            frame = frame.f_back if frame is not None else None
            if frame is None:
                return None
            candidate = frame.f_locals.get("self")
            if isinstance(candidate, Trainer):
                return candidate
        return None
    finally:
        del frame  # frames hold their locals: do not keep the training loop alive through a reference cycle


def _memoized(judge: PairwiseJudge) -> PairwiseJudge:
    """A reward-model judge whose scores are memoized by (prompt, reply): the starting replies never change, so every
    call after the first scores only the policy's replies (half the judge's forwards)."""
    from alignkit.eval.judges import RewardModelJudge
    from alignkit.eval.metric_rm_score import MemoScorer

    if type(judge) is RewardModelJudge and not isinstance(judge.scorer, MemoScorer):
        return RewardModelJudge(MemoScorer(judge.scorer), tie_band=judge.tie_band)
    return judge


def _tokenizer_of(processing_class: Any) -> Any:
    """A processor's tokenizer, or the tokenizer itself."""
    return getattr(processing_class, "tokenizer", processing_class)


class WinRateCallback(TrainerCallback):
    """Win rate of the current policy against its start on held-out prompts, every ``every_n_steps`` steps.

    Args:
        prompts: held-out prompts (strings or chat messages); keep it small (16-64), it is generated every call.
        judge: a :class:`~alignkit.eval.judges.PairwiseJudge`; the policy's reply is side A, the start's side B.
        every_n_steps: optimizer steps between two measurements (the last step is always measured).
        generation: decoding settings (greedy, 64 new tokens by default), as in an eval suite.
        references: reference answers, one per prompt, for a grader judge.
        trainer: the trainer to log through; found on the call stack at train begin when None.
        start_responses: the starting policy's replies, if already known (skips their generation; e.g. on resume).
        plot: draw ``winrate.png`` into ``args.output_dir`` at the end of training.
    """

    def __init__(
        self,
        prompts: Sequence[Any],
        judge: PairwiseJudge,
        every_n_steps: int = 50,
        generation: GenerationConfig | None = None,
        references: Sequence[Any] | None = None,
        trainer: Trainer | None = None,
        start_responses: Sequence[str] | None = None,
        plot: bool = True,
        n_resamples: int = 1000,
    ):
        if not prompts:
            raise AlignkitError("prompts: WinRateCallback needs at least one held-out prompt")
        if not callable(getattr(judge, "judge", None)):
            raise AlignkitError(f"judge: {type(judge).__name__} has no judge(prompts, a, b, references) method")
        if not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise AlignkitError(f"every_n_steps: must be an integer >= 1, got {every_n_steps!r}")
        for name, rows in (("references", references), ("start_responses", start_responses)):
            if rows is not None and len(rows) != len(prompts):
                raise AlignkitError(f"{name}: has {len(rows)} rows but prompts has {len(prompts)}")
        self.prompts = list(prompts)
        self.judge = _memoized(judge)
        self.every_n_steps = every_n_steps
        self.generation = generation or GenerationConfig(max_new_tokens=64, batch_size=min(len(prompts), 64))
        self.references = None if references is None else list(references)
        self.trainer = trainer
        self.start = None if start_responses is None else list(start_responses)
        self._start_tokens: list[int] | None = None
        self.plot = plot
        self.n_resamples = n_resamples
        self.history: list[dict[str, float]] = []  # every logged entry, with its step
        self.seconds: list[float] = []  # wall time of each measurement (generation + judging)

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        if not state.is_world_process_zero:
            return
        if self.trainer is None:
            self.trainer = find_calling_trainer()
            if self.trainer is None:
                logger.warning("WinRateCallback: no trainer found; entries go to state.log_history only")
        if self.start is None:
            tokenizer = _tokenizer_of(processing_class)
            out = generate_with_model(model, tokenizer, self.prompts, self.generation, desc="winrate start")
            self.start, self._start_tokens = out.responses, out.n_tokens
        elif self._start_tokens is None:
            tok = _tokenizer_of(processing_class)
            self._start_tokens = [len(tok.encode(r, add_special_tokens=False)) for r in self.start]

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if state.global_step % self.every_n_steps == 0 or state.global_step >= state.max_steps > 0:
            self.measure(args, state, model, processing_class, control)

    def on_train_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        if not state.is_world_process_zero:
            return
        if not self.history or self.history[-1]["step"] != state.global_step:
            self.measure(args, state, model, processing_class)
        if self.plot and self.history:
            plot_curves(self.history, Path(args.output_dir) / "winrate.png")

    def measure(self, args, state, model, processing_class, control=None) -> dict[str, float] | None:
        """Generate, judge and log once now; returns the logged entry (None off the main process).

        ``control``: the trainer's control object when called from ``on_step_end``. Logging clears
        ``control.should_log`` (the callback handler's ``on_log`` does), which would cancel the step's regular log
        entry that ``DefaultFlowCallback`` just requested; the flag is put back."""
        import time

        from alignkit.eval.diversity import distinct_n
        from alignkit.eval.winrate import length_controlled_win_rate, win_rate

        if not state.is_world_process_zero or self.start is None:
            return None
        began = time.perf_counter()
        tokenizer = _tokenizer_of(processing_class)
        out = generate_with_model(model, tokenizer, self.prompts, self.generation, desc="winrate")
        judged = judge_pairs(self.judge, self.prompts, out.responses, self.start, self.references)
        n = self.n_resamples
        raw = win_rate(judged.verdicts, n_resamples=n)
        lc = length_controlled_win_rate(judged.verdicts, out.n_tokens, self._start_tokens, n_resamples=n)
        distinct = distinct_n(out.responses, 2, tokenizer)["corpus"]
        entry = {
            "win_rate": raw["win_rate"],
            "ci_low": raw["ci_low"],
            "ci_high": raw["ci_high"],
            "lc_win_rate": lc["lc_win_rate"],
            "lc_ci_low": lc["ci_low"],
            "lc_ci_high": lc["ci_high"],
            "length": sum(out.n_tokens) / len(out.n_tokens),
            "start_length": sum(self._start_tokens) / len(self._start_tokens),
            "distinct_2": distinct,
            "truncated": sum(out.truncated) / len(out.truncated),
        }
        entry.update({k: float(v) for k, v in judged.extras.items()})
        self.seconds.append(time.perf_counter() - began)
        logs = {PREFIX + k: v for k, v in entry.items() if not (isinstance(v, float) and math.isnan(v))}
        self.history.append({"step": state.global_step, **entry})
        if self.trainer is not None:
            should_log = control.should_log if control is not None else None
            Trainer.log(self.trainer, logs)  # the base class's log: see the module docstring
            if control is not None:
                control.should_log = should_log
        else:
            state.log_history.append({**logs, "step": state.global_step})
        return entry


def plot_curves(history: list[dict[str, float]], path: Path) -> Path | None:
    """Win rate (raw and LC, with their CIs) and reply length against steps, saved to ``path``; None without
    matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed; %s not drawn", path)
        return None
    steps = [h["step"] for h in history]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(6, 5), sharex=True)
    for key, label in (("win_rate", "win rate"), ("lc_win_rate", "LC win rate")):
        low_key, high_key = ("ci_low", "ci_high") if key == "win_rate" else ("lc_ci_low", "lc_ci_high")
        top.plot(steps, [h[key] for h in history], marker="o", label=label)
        top.fill_between(steps, [h[low_key] for h in history], [h[high_key] for h in history], alpha=0.2)
    top.axhline(0.5, color="grey", linewidth=0.8, linestyle="--")
    top.set_ylim(0, 1)
    top.set_ylabel("vs start (95% CI)")
    top.legend(loc="lower left")
    bottom.plot(steps, [h["length"] for h in history], marker="o", label="policy")
    bottom.axhline(history[0]["start_length"], color="grey", linewidth=0.8, linestyle="--", label="start")
    bottom.set_ylabel("reply tokens (mean)")
    bottom.set_xlabel("step")
    bottom.legend(loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def callback_from_suite(
    suite_name: str, runs_root: str | Path, every_n_steps: int, n_prompts: int = 16, max_new_tokens: int = 64
) -> WinRateCallback:
    """The callback a recipe's ``winrate_steps`` turns on: the first ``n_prompts`` rows of the suite's first prompt
    set, judged by the suite's held-out reward model (``win_rate.rm_judge``, else the proxy ``rm_score``, which
    logs a warning: a judge should not grade its own pupil), or by the set's grader when no reward model is named."""
    from alignkit.eval.judges import GraderJudge, RewardModelJudge
    from alignkit.eval.prompt_sets import load_rows, rows_to_prompts
    from alignkit.eval.rm_score import load_reward_scorer, resolve_reward_model
    from alignkit.eval.suite import load_suite

    suite = load_suite(suite_name)
    if not suite.prompt_sets:
        raise AlignkitError(f"winrate_steps: eval suite '{suite.name}' has no prompt set to judge on")
    ps = suite.prompt_sets[0]
    data = rows_to_prompts(load_rows(ps.card, ps.split, min(n_prompts, ps.max_prompts), ps.source), ps)
    win, proxy = suite.metric("win_rate"), suite.metric("rm_score")
    ref = (win.rm_judge if win is not None else None) or (proxy.reward_model if proxy is not None else None)
    if ref is not None:
        resolved = resolve_reward_model(ref, runs_root)
        if resolved is None:
            raise AlignkitError(f"winrate_steps: judge '{ref}' of suite '{suite.name}' is not trained yet")
        if win is None or not win.rm_judge:
            logger.warning("winrate_steps: suite '%s' names no held-out rm_judge; judging with the proxy", suite.name)
        judge: PairwiseJudge = RewardModelJudge(load_reward_scorer(*resolved, name=ref))
    elif ps.grader and data.references is not None:
        from alignkit.plugins.graders import get_grader

        judge = GraderJudge(get_grader(ps.grader))
    else:
        raise AlignkitError(f"winrate_steps: eval suite '{suite.name}' names no reward model and no grader to judge")
    config = GenerationConfig(max_new_tokens=max_new_tokens, batch_size=min(len(data.prompts), 64))
    return WinRateCallback(data.prompts, judge, every_n_steps, config, references=data.references)
