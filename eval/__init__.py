"""alignkit.eval: generation cache, metrics, judges, lm-eval bridge and reports.

Modules (importing this package loads neither torch nor transformers):

- :mod:`~alignkit.eval.model_spec`: ``ModelSpec`` (base + optional PEFT adapter), loading, run and target resolution;
- :mod:`~alignkit.eval.generation`: batched, left-padded, cached generation (``generate``);
- :mod:`~alignkit.eval.perplexity`: token-weighted sliding-window perplexity, (a) held-out and (b) under a reference;
- :mod:`~alignkit.eval.rm_score`: reward-model scorer (TRL reward signature) and score summaries;
- :mod:`~alignkit.eval.preference`: DPO implicit-reward and length-normalized preference accuracy;
- :mod:`~alignkit.eval.diversity`, :mod:`~alignkit.eval.stats`, :mod:`~alignkit.eval.winrate`,
  :mod:`~alignkit.eval.judges`: pure metrics, bootstrap intervals, win rates and pairwise judges;
- :mod:`~alignkit.eval.suite`, :mod:`~alignkit.eval.harness`, :mod:`~alignkit.eval.report`,
  :mod:`~alignkit.eval.command`: suites, the harness, reports, and ``alignkit eval``.

Example::

    from alignkit.eval.command import main
    main(["runs/dpo-smol"])          # base vs trained -> runs/dpo-smol/report.md
"""
