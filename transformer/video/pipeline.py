"""One video's bytes → NSFW scores of its sampled frames, in time order → a `VideoReport`.

The scan (decode, scene detection, ``tensor.nsfw_tensor``: exactly the single-image
preprocessing) runs in a worker thread and hands each sampled frame's tensor to the event
loop as soon as it exists. Frames go to the scorer in chunks while decoding goes on, so
inference overlaps decoding, and concurrent chunks (of this and other requests) meet in
Triton's dynamic batcher. Chunks grow 4, 8, 16, … up to ``max_chunk``: the first scores
come back early, which is what early exit needs, and later chunks batch well. With early
exit, the first chunk holding a frame at or above the threshold stops the scan; the report
ends at the earliest such frame.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from preprocessing.tensor import nsfw_tensor
from transformer.video.limits import VideoLimits
from transformer.video.report import FrameScore, VideoReport, summarise
from transformer.video.sampling import Sample, Scan, scan_video

# uint8 NHWC tensors → P(nsfw) per frame.
Scorer = Callable[[np.ndarray], Awaitable[np.ndarray]]

FIRST_CHUNK = 4
DEFAULT_THRESHOLD = 0.8


@dataclass(frozen=True)
class ScoringOptions:
    threshold: float = DEFAULT_THRESHOLD
    early_exit: bool = False


@dataclass(frozen=True)
class ScoredVideo:
    report: VideoReport
    scan: Scan


async def score_video(
    data: bytes,
    *,
    limits: VideoLimits,
    options: ScoringOptions,
    scorer: Scorer,
    executor: Executor,
    max_chunk: int,
    progress: Callable[[float, float], None] | None = None,
) -> ScoredVideo:
    """Scan and score ``data``. Raises `VideoError` for a video that cannot be scored, and
    whatever ``scorer`` raises."""
    loop = asyncio.get_running_loop()
    samples: asyncio.Queue[Sample[np.ndarray] | None] = asyncio.Queue()
    stop = threading.Event()

    def emit(sample: Sample[np.ndarray] | None) -> None:
        loop.call_soon_threadsafe(samples.put_nowait, sample)

    def scan() -> Scan:
        # scan_video maps whatever the bytes can cause to a VideoError; anything else is a
        # bug of ours and propagates (a 500).
        try:
            return scan_video(data, limits, nsfw_tensor, emit, stop=stop, progress=progress)
        finally:
            emit(None)

    def settled(future: asyncio.Future[np.ndarray]) -> None:
        # A failed chunk fails the video: decoding on would be wasted.
        if future.cancelled() or future.exception() is not None:
            stop.set()
        elif options.early_exit and (future.result() >= options.threshold).any():
            stop.set()

    def submit(batch: list[Sample[np.ndarray]]) -> asyncio.Future[np.ndarray]:
        future = asyncio.ensure_future(scorer(np.stack([s.value for s in batch])))
        future.add_done_callback(settled)
        return future

    scanning = loop.run_in_executor(executor, scan)
    chunks: list[tuple[list[Sample[np.ndarray]], asyncio.Future[np.ndarray]]] = []
    try:
        batch: list[Sample[np.ndarray]] = []
        size = min(FIRST_CHUNK, max_chunk)
        while (sample := await samples.get()) is not None:
            if stop.is_set():
                continue  # early exit: later frames are not scored
            batch.append(sample)
            if len(batch) == size:
                chunks.append((batch, submit(batch)))
                batch, size = [], min(2 * size, max_chunk)
        if batch and not stop.is_set():
            chunks.append((batch, submit(batch)))
        result = await scanning
        frames = await _in_order(chunks, options)
    finally:
        # On any way out (an error, the client gone) the thread stops at its next frame and
        # chunks still in flight are dropped; nobody awaits them any more.
        stop.set()
        for _, future in chunks:
            future.cancel()
            future.add_done_callback(_retrieve)
        scanning.add_done_callback(_retrieve)
    early = options.early_exit and frames[-1].score >= options.threshold
    report = summarise(frames, result.duration_s, options.threshold, early_exit=early)
    return ScoredVideo(report, result)


async def _in_order(
    chunks: list[tuple[list[Sample[np.ndarray]], asyncio.Future[np.ndarray]]],
    options: ScoringOptions,
) -> list[FrameScore]:
    """The scored frames in time order; with early exit, up to the first flagged one."""
    frames: list[FrameScore] = []
    for batch, future in chunks:
        for sample, score in zip(batch, await future, strict=True):
            frames.append(FrameScore(sample.time_s, sample.scene_cut, float(score)))
            if options.early_exit and score >= options.threshold:
                return frames
    return frames


def _retrieve(future: asyncio.Future) -> None:
    """Mark an abandoned future's exception as seen, so asyncio does not log it."""
    if not future.cancelled():
        future.exception()
