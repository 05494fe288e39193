"""alignkit.eval: generation cache, metric and judge registries, lm-eval bridge and reports.

Modules (importing this package loads neither torch nor transformers):

- :mod:`~alignkit.eval.command`: ``alignkit eval`` (targets, suite, output directory, ``--train-missing``);
- :mod:`~alignkit.eval.suite`: suites parsed into dataclasses; :mod:`~alignkit.eval.registries`: metrics, judges
  and prompt sources by name;
- :mod:`~alignkit.eval.harness`: generate once per model, run every metric, write the report
  (:mod:`~alignkit.eval.report`; its rows and the dead-metric rule in :mod:`~alignkit.eval.report_rows`, the goals
  table in :mod:`~alignkit.eval.goals`, the judge and replies sections in :mod:`~alignkit.eval.report_sections`);
- :mod:`~alignkit.eval.judge_info` (who a judge is, its held-out pair accuracy) and
  :mod:`~alignkit.eval.provenance` (which prompts a run trained on; did a judge see any);
- :mod:`~alignkit.eval.metric_base` (what a metric is), and the registered metrics: ``metric_responses``
  (lengths, grader accuracy, diversity), ``metric_rm_score``, ``metric_perplexity``, ``metric_preference``,
  ``metric_win_rate``, ``metric_lm_eval``; :mod:`~alignkit.eval.judge_builders`: the judges by name;
- :mod:`~alignkit.eval.model_spec`: ``ModelSpec`` (base + optional PEFT adapter), loading, run and target resolution;
- :mod:`~alignkit.eval.prompt_sets`: prompt rows from cards or files;
- :mod:`~alignkit.eval.generation`: batched, left-padded, cached generation (``generate``);
- the measurements themselves: :mod:`~alignkit.eval.perplexity`, :mod:`~alignkit.eval.rm_score`,
  :mod:`~alignkit.eval.preference`, :mod:`~alignkit.eval.judges`, and the pure maths in
  :mod:`~alignkit.eval.diversity`, :mod:`~alignkit.eval.stats`, :mod:`~alignkit.eval.winrate`.

Training-time callbacks for any transformers/TRL trainer (imported lazily, with transformers):
:class:`~alignkit.eval.winrate_callback.WinRateCallback` (held-out win rate against the starting policy) and
:class:`~alignkit.eval.monitor_callback.RewardHackingMonitor` (reward-hacking signals; maths in
:mod:`~alignkit.eval.hacking_signals`).

Example::

    from alignkit.eval.command import main
    main(["runs/dpo-smol"])          # base vs trained -> runs/dpo-smol/report.md
"""

from alignkit.plugins._lazy import lazy_exports

_LAZY = {"WinRateCallback": "winrate_callback", "RewardHackingMonitor": "monitor_callback"}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())
