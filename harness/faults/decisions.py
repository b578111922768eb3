"""Seeded fault decisions that do not depend on timing.

Every decision is a pure function of the seed and of *what* is being decided (which connection,
which direction, which frame, which rule), never of when or in which order tasks got there, so
the same seed and the same traffic always give the same decisions, however the scheduler
interleaves connections.
"""

from __future__ import annotations

import hashlib


def uniform(seed: int, *key: object) -> float:
    """A number in [0, 1) fixed by ``seed`` and ``key``."""
    digest = hashlib.blake2b(repr((seed, *key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 18446744073709551616.0


def decide(probability: float, seed: int, *key: object) -> bool:
    return probability >= 1.0 or (probability > 0.0 and uniform(seed, *key) < probability)
