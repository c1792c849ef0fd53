"""Retry pauses shared by the clients in this package: the server's Retry-After when it
sends one, else full-jitter exponential backoff, so that clients that failed together do not
come back together."""

from __future__ import annotations

import random

from transformer.commons import retry_after

__all__ = ["pause", "retry_after"]


def pause(attempt: int, asked: float | None, *, backoff_s: float, max_s: float) -> float:
    """Seconds to wait before retry ``attempt + 1``: what the server ``asked`` plus up to
    ``backoff_s`` of jitter, else a random pause up to ``backoff_s * 2**attempt``; at most
    ``max_s``."""
    if asked is not None:
        return min(asked + random.uniform(0, backoff_s), max_s)
    return random.uniform(0, min(backoff_s * 2**attempt, max_s))
