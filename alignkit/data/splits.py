"""Deterministic held-out splits and prompt roles: a row's split is a pure function of its key, stable across runs
and machines.

Python's ``hash()`` is salted per process, so we hash with sha256. Because the split depends only on the key (never
on the row's position or on how many rows were selected), the SFT set and the preference pairs built from it agree on
which prompts are held out.

Roles keep the judge honest (DESIGN.md, "A judge never grades its own pupil"). Every key maps to one number
``u = unit_interval(key)`` in [0, 1), cut into bands::

    [0, test)                       test    the held-out split of :func:`split_of` (unchanged: same hash, same cut)
    [test, test + judge)            judge   prompts of the held-out judge's training pairs, and nothing else
    [.. , .. + proxy)               proxy   prompts of the proxy reward model (the scorer that labels training pairs)
    [.. , 1)                        policy  prompts the policy trains on (SFT, DPO, on-policy pairs)

With the defaults (0.1, 0.25, 0.2) that is 10 % test, 25 % judge, 20 % proxy and 45 % policy of all keys. One hash
for all bands means no key can ever sit in two roles, and ``role_of(k) == "test"`` exactly when
``split_of(k) == "test"``.
"""

import hashlib

SPLIT_SALT = "alignkit-split-v1"
ROLES = ("test", "judge", "proxy", "policy")
DEFAULT_FRACTIONS = {"test": 0.1, "judge": 0.25, "proxy": 0.2}  # policy: the rest


def unit_interval(key: str, salt: str = SPLIT_SALT) -> float:
    """Map ``key`` to a uniform number in [0, 1)."""
    digest = hashlib.sha256(f"{salt}:{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(key: str, test_fraction: float = 0.1) -> str:
    """``"test"`` for about ``test_fraction`` of keys, ``"train"`` for the rest."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    return "test" if unit_interval(key) < test_fraction else "train"


def role_of(
    key: str,
    test_fraction: float = DEFAULT_FRACTIONS["test"],
    judge_fraction: float = DEFAULT_FRACTIONS["judge"],
    proxy_fraction: float = DEFAULT_FRACTIONS["proxy"],
) -> str:
    """The role of ``key``: ``test``, ``judge``, ``proxy`` or ``policy`` (fractions are of *all* keys; see the module
    docstring for the bands)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if judge_fraction < 0 or proxy_fraction < 0 or test_fraction + judge_fraction + proxy_fraction >= 1.0:
        raise ValueError(
            f"judge_fraction and proxy_fraction must be >= 0 and leave room for policy prompts, got test "
            f"{test_fraction} + judge {judge_fraction} + proxy {proxy_fraction}"
        )
    u = unit_interval(key)
    for role, upper in (
        ("test", test_fraction),
        ("judge", test_fraction + judge_fraction),
        ("proxy", test_fraction + judge_fraction + proxy_fraction),
    ):
        if u < upper:
            return role
    return "policy"
