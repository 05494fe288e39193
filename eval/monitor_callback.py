"""A reward-hacking monitor for any transformers/TRL trainer: :class:`RewardHackingMonitor`.

It reads what the trainer already logs (no extra forward pass), and, for GRPO-style trainers (TRL's GRPO, alignkit's
GRPO and PPO), the completions and rewards of the last generation batch that TRL keeps in ``trainer._logs``. On every
log entry it logs, under ``monitor/``:

- ``reward_length_corr``: Pearson correlation between reward and reply length. GRPO/PPO: over the completions of the
  last generation batch (per sample, total weighted reward vs tokens). Other trainers: over the last ``window`` log
  entries of the logged reward (DPO: the implicit reward margin) and the logged policy length
  (``lengths/policy``, ``winrate/length``);
- ``kl`` and ``kl_target``, ``kl_over_target`` (``kl / kl_target``) where an adaptive KL controller runs, and
  ``beta``;
- ``entropy`` (TRL's mean token entropy, where the trainer logs it);
- ``zero_spread_share``: share of GRPO/PPO groups whose rewards all equal (no learning signal; TRL's
  ``frac_reward_zero_std``);
- ``length``, ``distinct_2`` and ``repetition_rate`` (3-gram, ``1 − unique / total`` tokens) of the policy's replies:
  the GRPO/PPO completions, else what DPO's policy samples logged. The held-out replies of a
  :class:`~alignkit.eval.WinRateCallback` are a series apart (``heldout_length``, ``heldout_distinct_2``), used by the
  checks when the training replies give fewer than two points.

It warns once per signature, in one line (:mod:`alignkit.eval.hacking_signals`): the proxy reward rose while the
held-out win rate fell (needs the WinRateCallback), the reply length grew by more than ``max_length_growth``, and
distinct-2 collapsed by more than ``max_distinct_drop``. At the end of training it draws ``training.png`` (reward,
KL against target, length, diversity over steps) into ``args.output_dir``.

Entries go through ``transformers.Trainer.log`` as the win-rate callback's do (its module docstring says why),
found on the call stack at train begin or given as ``trainer=``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from transformers import Trainer, TrainerCallback

from alignkit.eval import hacking_signals as signals
from alignkit.eval.winrate_callback import find_calling_trainer

logger = logging.getLogger("alignkit")

__all__ = ["RewardHackingMonitor", "plot_training"]

PREFIX = "monitor/"
# The first of these keys present in a log entry is the series (trainers name the same quantity differently).
SERIES_KEYS = {
    "reward": ("reward", "rewards/margins"),  # GRPO/PPO mean reward; DPO implicit reward margin
    "kl": ("kl", "kl_implicit"),
    "beta": ("beta",),
    "entropy": ("entropy",),
    "zero_spread_share": ("frac_reward_zero_std",),
    "length": ("completions/mean_length", "lengths/policy"),
    "repetition_rate": ("repetition_rate/policy",),
}
# What the monitor keeps of a WinRateCallback entry (held-out greedy replies: a series apart from training replies).
HELDOUT_KEYS = {
    "win_rate": "winrate/win_rate",
    "heldout_length": "winrate/length",
    "heldout_distinct_2": "winrate/distinct_2",
}


def _text(completion: Any) -> str:
    """A completion as text: a string, or the contents of a conversational completion's messages."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content") or "") for m in completion if isinstance(m, dict))


def batch_stats(trainer: Any, tokenizer: Any) -> dict[str, float]:
    """Per-sample statistics of a GRPO-style trainer's last generation batch (``trainer._logs``): reward/length
    correlation, mean length, distinct-2 and 3-gram repetition rate; ``{}`` for other trainers."""
    import numpy as np

    from alignkit.eval.diversity import distinct_n, repetition_rate, tokenize_all

    logs = getattr(trainer, "_logs", None)
    if not isinstance(logs, dict) or not logs.get("completion") or not logs.get("rewards"):
        return {}
    tokens = tokenize_all([_text(c) for c in logs["completion"]], tokenizer)
    per_func = [np.asarray(v, dtype=float) for v in logs["rewards"].values()]
    if any(len(r) != len(tokens) for r in per_func):
        return {}
    weights = getattr(trainer, "reward_weights", None)
    weights = [1.0] * len(per_func) if weights is None else [float(w) for w in weights][: len(per_func)]
    total = np.nansum([w * r for w, r in zip(weights, per_func, strict=True)], axis=0)
    lengths = [len(t) for t in tokens]
    return {
        "reward_length_corr": signals.pearson(total, lengths),
        "length": float(np.mean(lengths)),
        "distinct_2": distinct_n(tokens, 2)["corpus"],
        "repetition_rate": repetition_rate(tokens, 3),
    }


class RewardHackingMonitor(TrainerCallback):
    """Logs reward-hacking signals and warns once per signature (module docstring).

    Args:
        max_length_growth: warn when the reply length grows by more than this share of its start (0.5 = +50 %).
        max_distinct_drop: warn when distinct-2 falls by more than this share of its start.
        min_winrate_drop: warn when the held-out win rate falls this far below its best while the proxy rises.
        window: log entries over which the reward/length correlation is taken when there are no per-sample rewards.
        trainer: the trainer to log through; found on the call stack at train begin when None.
        plot: draw ``training.png`` into ``args.output_dir`` at the end of training.
    """

    def __init__(
        self,
        max_length_growth: float = 0.5,
        max_distinct_drop: float = 0.3,
        min_winrate_drop: float = 0.1,
        window: int = 8,
        trainer: Trainer | None = None,
        plot: bool = True,
    ):
        self.max_length_growth, self.max_distinct_drop = max_length_growth, max_distinct_drop
        self.min_winrate_drop, self.window = min_winrate_drop, window
        self.trainer, self.plot = trainer, plot
        self.rows: list[dict[str, float]] = []  # one per log entry: step + the series found in it + monitor values
        self.warned: dict[str, str] = {}  # signature -> the warning line
        self._logging = False
        self._processing_class = None

    def on_train_begin(self, args, state, control, processing_class=None, **kwargs):
        self._processing_class = processing_class
        if self.trainer is None and state.is_world_process_zero:
            self.trainer = find_calling_trainer()
        if state.global_step > 0 and not self.rows:  # resumed: the checkpoint's log history is the run so far
            self._replay(state.log_history)

    def _replay(self, log_history: list[dict[str, Any]]) -> None:
        """Rebuild the rows (and which signatures were already warned about, without warning again) from the log
        entries of a checkpoint, so a resumed run's monitor values and plot continue the interrupted run's."""
        for entry in log_history:
            step = entry.get("step")
            if "winrate/win_rate" in entry:
                row = {k: float(entry[v]) for k, v in HELDOUT_KEYS.items() if v in entry}
            else:
                row = {k[len(PREFIX) :]: float(v) for k, v in entry.items() if k.startswith(PREFIX)}
            if row and step is not None:
                self.rows.append({"step": step, **row})
        if self.rows:
            self._check(self.rows[-1]["step"], quiet=True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._logging or not state.is_world_process_zero or not logs or "train_runtime" in logs:
            return
        if all(k.startswith(PREFIX) for k in logs):
            return
        if "winrate/win_rate" in logs:  # the win-rate callback's entry: kept for the checks, already logged
            self.rows.append(
                {"step": state.global_step, **{k: float(logs[v]) for k, v in HELDOUT_KEYS.items() if v in logs}}
            )
            self._check(state.global_step)
            return
        row = self._row(args, state, logs)
        self.rows.append(row)
        self._check(state.global_step)
        values = {PREFIX + k: v for k, v in row.items() if k != "step" and math.isfinite(v)}
        if not values:
            return
        if self.trainer is None:
            state.log_history.append({**values, "step": state.global_step})
            return
        self._logging = True
        try:
            Trainer.log(self.trainer, values)
        finally:
            self._logging = False

    def _row(self, args, state, logs: dict[str, Any]) -> dict[str, float]:
        row: dict[str, float] = {"step": state.global_step}
        for name, keys in SERIES_KEYS.items():
            key = next((k for k in keys if isinstance(logs.get(k), (int, float))), None)
            if key is not None:
                row[name] = float(logs[key])
        target = getattr(args, "kl_target", None)
        if target:
            row["kl_target"] = float(target)
            if "kl" in row:
                row["kl_over_target"] = row["kl"] / float(target)
        tokenizer = getattr(self._processing_class, "tokenizer", self._processing_class)
        if self.trainer is not None:
            row.update(batch_stats(self.trainer, tokenizer))
        if "reward_length_corr" not in row and "reward" in row and "length" in row:
            recent = [r for r in self.rows[-(self.window - 1) :] if "reward" in r and "length" in r] + [row]
            row["reward_length_corr"] = signals.pearson([r["reward"] for r in recent], [r["length"] for r in recent])
        return row

    def _series(self, name: str) -> list[float]:
        """The training replies' series, or the held-out replies' (``heldout_<name>``) when training logs too few."""
        own = [r[name] for r in self.rows if name in r]
        return own if len(own) >= 2 else [r[f"heldout_{name}"] for r in self.rows if f"heldout_{name}" in r]

    def _check(self, step: int, quiet: bool = False) -> None:
        found = {
            "length_growth": signals.check_length_growth(self._series("length"), self.max_length_growth),
            "distinct_collapse": signals.check_distinct_collapse(self._series("distinct_2"), self.max_distinct_drop),
        }
        rewards, win_rates, last_reward = [], [], math.nan
        for r in self.rows:  # align the proxy reward (latest at or before) with each win-rate measurement
            last_reward = r.get("reward", last_reward)
            if "win_rate" in r:
                rewards.append(last_reward)
                win_rates.append(r["win_rate"])
        found["proxy_up_heldout_down"] = signals.check_proxy_up_heldout_down(rewards, win_rates, self.min_winrate_drop)
        for signature, message in found.items():
            if message is not None and signature not in self.warned:
                self.warned[signature] = f"reward-hacking monitor, step {step}: {message}"
                if not quiet:
                    logger.warning(self.warned[signature])

    def on_train_end(self, args, state, control, **kwargs):
        if self.plot and self.rows and state.is_world_process_zero:
            plot_training(self.rows, Path(args.output_dir) / "training.png")


def plot_training(rows: list[dict[str, float]], path: Path) -> Path | None:
    """Reward (and held-out win rate), KL against target, length, and diversity over steps, in four panels saved to
    ``path``; None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed; %s not drawn", path)
        return None
    panels = [
        ("reward", [("reward", "proxy reward"), ("win_rate", "held-out win rate")]),
        ("KL", [("kl", "KL"), ("kl_target", "target")]),
        ("reply tokens", [("length", "training replies"), ("heldout_length", "held-out replies")]),
        (
            "diversity",
            [
                ("distinct_2", "distinct-2"),
                ("heldout_distinct_2", "distinct-2 held-out"),
                ("repetition_rate", "3-gram repetition"),
            ],
        ),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(8, 5.5))
    for ax, (title, series) in zip(axes.flat, panels, strict=True):
        for key, label in series:
            points = [(r["step"], r[key]) for r in rows if key in r and math.isfinite(r[key])]
            if points:
                ax.plot(*zip(*points, strict=True), marker=".", label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        if ax.lines:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not logged by this trainer", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
