"""Prompt-only ShareGPT rows of one prompt role, for RL on chat (PPO against a reward model).

train = the prompts of ``role`` (``policy`` by default: never a judge, proxy or test prompt, see
:mod:`alignkit.data.splits`); test = the held-out ``test`` prompts, which the eval also uses. The reply is dropped:
an RL policy writes its own, and a reward model scores it.
"""

from __future__ import annotations

from alignkit.data.onpolicy_prompts import ROLE_PREFIX, load_pool
from alignkit.data.store import SPLITS, BuildResult, cached_build

BUILDER_VERSION = 1


def build_role_prompts(role: str = "policy", force: bool = False) -> BuildResult:
    """``{id, prompt}`` rows (prompt = the opening user turn) of ``role`` (train) and of the test role (test)."""
    pools = {split: load_pool(f"{ROLE_PREFIX}{role}", split) for split in SPLITS}
    fingerprint = {"builder": "role_prompts", "version": BUILDER_VERSION, "role": role}
    fingerprint["pools"] = {split: pool.identity for split, pool in pools.items()}

    def produce():
        rows = {split: [{"id": r["id"], "prompt": r["prompt"]} for r in pool.rows] for split, pool in pools.items()}
        return rows, {"role": role}

    return cached_build(f"sharegpt-prompts-{role}", fingerprint, produce, force=force)
