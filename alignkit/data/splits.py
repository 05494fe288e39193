"""Deterministic held-out splits: a row's split is a pure function of its key, stable across runs and machines.

Python's ``hash()`` is salted per process, so we hash with sha256. Because the split depends only on the key (never
on the row's position or on how many rows were selected), the SFT set and the preference pairs built from it agree on
which prompts are held out.
"""

import hashlib

SPLIT_SALT = "alignkit-split-v1"


def unit_interval(key: str, salt: str = SPLIT_SALT) -> float:
    """Map ``key`` to a uniform number in [0, 1)."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(key: str, test_fraction: float = 0.1) -> str:
    """``"test"`` for about ``test_fraction`` of keys, ``"train"`` for the rest."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    return "test" if unit_interval(key) < test_fraction else "train"
