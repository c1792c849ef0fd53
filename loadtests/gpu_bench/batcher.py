"""An in-process stand-in for Triton's dynamic batcher, for machines without Triton.

Same policy as Triton's ``dynamic_batching`` without preferred sizes: an idle instance takes
the oldest waiting request, adds whatever else is queued up to ``max_batch``, waits at most
``max_delay_s`` after that first request's arrival for more, then runs the batch as one call.
Each instance is its own executor thread (``Runner``), so ``len(runners)`` plays Triton's
``instance_group`` count. What it leaves out: gRPC, protobuf (de)serialisation and the
Python backend's shared-memory hop, which Triton adds on top.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from loadtests.gpu_bench.runner import Runner


@dataclass
class _Request:
    image: np.ndarray
    arrived: float
    future: asyncio.Future = field(repr=False)


class DynamicBatcher:
    def __init__(self, runners: list[Runner], max_batch: int, max_delay_s: float) -> None:
        self.runners = runners
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.batch_sizes: list[int] = []
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._pool = ThreadPoolExecutor(len(runners), thread_name_prefix="instance")
        self._tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> DynamicBatcher:
        self._tasks = [asyncio.create_task(self._instance(r)) for r in self.runners]
        return self

    async def __aexit__(self, *_: object) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._pool.shutdown()

    async def infer(self, image: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        request = _Request(image, loop.time(), loop.create_future())
        self._queue.put_nowait(request)
        return await request.future

    async def _take(self) -> list[_Request]:
        loop = asyncio.get_running_loop()
        batch = [await self._queue.get()]
        deadline = batch[0].arrived + self.max_delay_s
        while len(batch) < self.max_batch:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _instance(self, runner: Runner) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._take()
            images = np.stack([r.image for r in batch])
            try:
                scores = await loop.run_in_executor(self._pool, runner, images)
            except Exception as exc:  # noqa: BLE001 - every waiting client gets the failure
                for request in batch:
                    request.future.set_exception(exc)
                continue
            self.batch_sizes.append(len(batch))
            for request, row in zip(batch, scores):
                request.future.set_result(row)


async def drive(batcher: DynamicBatcher, images: list[np.ndarray], concurrency: int,
                seconds: float) -> tuple[int, list[float], float]:
    """``concurrency`` closed-loop clients, one image per request, for ``seconds``:
    returns (images, latencies ms, elapsed s)."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client(offset: int) -> None:
        i = offset
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await batcher.infer(images[i % len(images)])
            latencies.append((time.perf_counter() - started) * 1000)
            i += concurrency

    started = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(concurrency)))
    return len(latencies), latencies, time.perf_counter() - started
