"""`transformer.tasks`: ByteBudget, the image downloads' byte budget across requests, and
in_thread, which holds it through a decode."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from transformer.tasks import ByteBudget, in_thread


def later(seconds: float) -> float:
    return asyncio.get_running_loop().time() + seconds


async def test_claims_wait_their_turn_first_come_first_served() -> None:
    seen: list[int] = []
    budget = ByteBudget(100, seen.append)
    assert await budget.acquire(60, later(1)) == 60
    second = asyncio.ensure_future(budget.acquire(60, later(5)))
    third = asyncio.ensure_future(budget.acquire(10, later(5)))
    await asyncio.sleep(0.05)
    # 10 bytes would fit, but the 60 before it came first.
    assert not second.done() and not third.done() and budget.held == 60
    budget.release(60)
    assert await second == 60 and await third == 10
    assert budget.held == 70
    budget.release(60)
    budget.release(10)
    assert budget.held == 0 and seen == [60, 0, 60, 70, 10, 0]


async def test_a_claim_past_its_deadline_gets_none_and_lets_the_next_in() -> None:
    budget = ByteBudget(100)
    await budget.acquire(90, later(1))
    late = asyncio.ensure_future(budget.acquire(50, later(0.05)))
    small = asyncio.ensure_future(budget.acquire(10, later(5)))
    assert await late is None
    assert await small == 10
    assert budget.held == 100


async def test_a_claim_larger_than_the_budget_runs_alone() -> None:
    budget = ByteBudget(100)
    await budget.acquire(30, later(1))
    huge = asyncio.ensure_future(budget.acquire(10_000, later(5)))
    await asyncio.sleep(0.05)
    assert not huge.done()
    budget.release(30)
    assert await huge == 100 and budget.held == 100


async def test_a_cancelled_wait_holds_nothing() -> None:
    budget = ByteBudget(100)
    await budget.acquire(100, later(1))
    waiting = asyncio.ensure_future(budget.acquire(50, later(5)))
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    budget.release(100)
    assert budget.held == 0
    assert await budget.acquire(100, later(1)) == 100


async def test_a_holder_and_a_waiter_cancelled_together_leave_nothing_held() -> None:
    """As ``all_or_none`` does when one item fails: the task holding bytes and the task
    waiting for them are cancelled in the same loop pass; the release then finds a waiter
    that is already gone."""
    budget = ByteBudget(100)
    granted = asyncio.Event()

    async def holder() -> None:
        await budget.acquire(100, later(5))
        granted.set()
        try:
            await asyncio.sleep(10)
        finally:
            budget.release(100)

    holding = asyncio.ensure_future(holder())
    await granted.wait()
    waiting = asyncio.ensure_future(budget.acquire(50, later(5)))
    await asyncio.sleep(0.01)
    holding.cancel()
    waiting.cancel()
    await asyncio.gather(holding, waiting, return_exceptions=True)
    assert budget.held == 0
    assert await budget.acquire(100, later(1)) == 100


async def test_a_thread_job_is_done_when_the_thread_ends_not_when_its_caller_gives_up() -> None:
    """What holds a download's bytes through its decode: a decode thread cannot be stopped,
    so the bytes stay reserved until it ends, not until the request is cancelled."""
    budget = ByteBudget(100)
    decoding = threading.Event()
    with ThreadPoolExecutor(1) as decoder:
        await budget.acquire(40, later(1))
        job = asyncio.ensure_future(in_thread(decoder, lambda: budget.release(40), decoding.wait, 5))
        await asyncio.sleep(0.05)
        job.cancel()
        await asyncio.gather(job, return_exceptions=True)
        assert budget.held == 40
        decoding.set()
        for _ in range(100):
            if budget.held == 0:
                break
            await asyncio.sleep(0.01)
    assert budget.held == 0
