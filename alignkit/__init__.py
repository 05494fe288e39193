"""alignkit: QLoRA alignment recipes and thin plugins for Hugging Face TRL 1.16.

Subpackages (one import namespace, mapped from the project card's top-level folders):

- ``alignkit.plugins``: drop-in TRL trainer subclasses, penalties, KL controllers, advantage variants, graders.
- ``alignkit.eval``: generation cache, metrics, judges, lm-eval bridge, reports.
- ``alignkit.recipes`` / ``alignkit.datasets_cards``: YAML shipped as package data.
"""

__version__ = "0.1.0"
