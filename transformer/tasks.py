"""Concurrency helpers for a request's items."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import Executor
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


async def in_thread(
    executor: Executor, done: Callable[[], None], fn: Callable[..., T], *args: object
) -> T:
    """``fn(*args)`` in ``executor``; ``done`` once the thread has finished with it, even when
    the awaiting task was cancelled first: a running thread cannot be stopped."""
    loop = asyncio.get_running_loop()
    job = executor.submit(fn, *args)
    job.add_done_callback(lambda _: loop.call_soon_threadsafe(done))
    return await asyncio.wrap_future(job)


async def known(value: T) -> T:
    """``value`` as an awaitable, beside items that still have work to do."""
    return value


class ByteBudget:
    """Bytes held at once across requests, handed out first come, first served; touched only
    on the event loop. A claim larger than the whole budget is cut to it, so it runs alone
    rather than never. ``observe`` is told the bytes held after every change."""

    def __init__(self, capacity: int, observe: Callable[[int], None] = lambda held: None) -> None:
        self.capacity = capacity
        self.held = 0
        self._observe = observe
        self._waiting: deque[tuple[int, asyncio.Future[None]]] = deque()

    async def acquire(self, size: int, deadline: float) -> int | None:
        """Reserve ``size`` bytes, waiting until ``deadline`` (a ``loop.time()``) at most; the
        bytes reserved, to `release`, or None when the deadline came first."""
        size = min(size, self.capacity)
        if not self._waiting and self.held + size <= self.capacity:
            self._take(size)
            return size
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[None] = loop.create_future()
        entry = (size, turn)
        self._waiting.append(entry)
        try:
            # asyncio.wait, unlike a timeout around ``await turn``, never cancels ``turn``: a
            # grant and this task's cancellation may then come in the same loop pass safely.
            await asyncio.wait((turn,), timeout=max(0.0, deadline - loop.time()))
        except asyncio.CancelledError:
            self._forgo(entry)
            raise
        if turn.done():
            return size
        self._forgo(entry)
        return None

    def _forgo(self, entry: tuple[int, asyncio.Future[None]]) -> None:
        """Give up a place in line, or the bytes when they were granted meanwhile."""
        size, turn = entry
        if turn.done():
            self.release(size)
        else:
            self._waiting.remove(entry)
            self._grant()  # the next in line may fit now

    def release(self, size: int) -> None:
        self.held -= size
        self._observe(self.held)
        self._grant()

    def _take(self, size: int) -> None:
        self.held += size
        self._observe(self.held)

    def _grant(self) -> None:
        while self._waiting and self.held + self._waiting[0][0] <= self.capacity:
            size, turn = self._waiting.popleft()
            self._take(size)
            turn.set_result(None)
