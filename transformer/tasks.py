"""Concurrency helpers for a request's items."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import TypeVar

T = TypeVar("T")


async def all_or_none(awaitables: Iterable[Awaitable[T]]) -> list[T]:
    """The results in order; when one fails, the others are cancelled and that failure is
    raised as itself. (``asyncio.gather`` lets the others run on; a ``TaskGroup`` wraps the
    failure in an ``ExceptionGroup``, which no HTTP error handler matches.)"""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    finally:
        for task in tasks:
            task.cancel()


async def known(value: T) -> T:
    """``value`` as an awaitable, beside items that still have work to do."""
    return value
