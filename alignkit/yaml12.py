"""YAML as alignkit reads recipes and their ``key=value`` overrides: safe loading, YAML 1.2 booleans.

PyYAML resolves YAML 1.1, where ``no``, ``yes``, ``on``, ``off``, ``y`` and ``n`` are booleans too, so
``save_strategy: no`` (a TRL value) would reach TRL as ``False`` and fail as "False is not a valid SaveStrategy".
Here, as in YAML 1.2, only ``true`` and ``false`` (also ``True``/``TRUE``, ``False``/``FALSE``) are booleans; the
other words stay strings, and TRL's argument parser turns ``yes``/``no``/``y``/``n`` into a bool where a field
is boolean. Cards and eval suites, which alignkit validates itself, keep ``yaml.safe_load``.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_BOOL = "tag:yaml.org,2002:bool"


class _SafeYaml12BoolLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose implicit booleans are only true/false."""


_SafeYaml12BoolLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_SafeYaml12BoolLoader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with YAML 1.2 booleans (module doc)."""
    return yaml.load(text, Loader=_SafeYaml12BoolLoader)  # a SafeLoader subclass
