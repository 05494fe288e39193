"""Maths and glue shared by several trainers (pure torch/Python unless a module says otherwise).

- KL: ``kl_estimators`` (k1/k2/k3), ``kl_controllers`` (fixed/adaptive β), ``kl_fields`` (the config mixin),
  ``kl_callback`` (drives a controller from a Trainer and checkpoints it; imports transformers).
- ``masked`` (the masked mean), ``group_stats`` + ``advantage_methods`` (GRPO advantage registry).
- Penalties: ``length_penalty``, ``repetition_penalty``, ``penalty_fields`` (config mixin + the helper that attaches
  them as reward functions), ``reward_units`` (what a length is measured in).
- Graders: ``completions`` (completion text), ``text_graders``, ``math_grader``; ``reward_funcs`` is the registry
  from recipe names to reward callables.
"""
