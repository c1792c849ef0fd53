"""One model instance on one device: uint8 NHWC images in, float32 scores out.

On CUDA an instance owns a stream, a pinned staging buffer and, with ``graphs``, one CUDA
graph per batch size in ``buckets``: a batch is padded up to the next bucket and replayed,
which removes the per-kernel launch cost that dominates small batches. Two instances on one
GPU (Triton's ``gpu_instances``) overlap one batch's copies with the other's kernels.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable

import numpy as np
import torch

from preprocessing.specs import ModelSpec

WARMUP_ITERATIONS = 3


class Runner:
    def __init__(self, module: torch.nn.Module, spec: ModelSpec, device: torch.device,
                 buckets: tuple[int, ...], graphs: bool) -> None:
        self.module = module
        self.buckets = tuple(sorted(buckets))
        self.cuda = device.type == "cuda"
        self.input_dims = spec.input_dims
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        shape = (self.buckets[-1], *spec.input_dims)
        if not self.cuda:
            return
        self.stream = torch.cuda.Stream(device)
        self.static_input = torch.zeros(shape, dtype=torch.uint8, device=device)
        self.pinned = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
        if graphs:
            for size in self.buckets:
                self.capture(size)

    @torch.no_grad()
    def capture(self, size: int) -> None:
        batch = self.static_input[:size]
        # Capture needs kernels already chosen (cuDNN autotuning) and memory already pooled.
        with torch.cuda.stream(self.stream):
            for _ in range(WARMUP_ITERATIONS):
                self.module(batch)
        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream):
            output = self.module(batch)
        self._graphs[size] = (graph, output)

    def bucket(self, n: int) -> int:
        return self.buckets[bisect.bisect_left(self.buckets, n)]

    @torch.no_grad()
    def resident(self, size: int, use_graph: bool) -> Callable[[], object]:
        """The model alone on a batch already on the device (no copies): model-only timing."""
        if not self.cuda:
            batch = torch.zeros((size, *self.input_dims), dtype=torch.uint8)
            return lambda: self.module(batch)
        if use_graph:
            graph, _ = self._graphs[size]

            def replay() -> None:
                with torch.cuda.stream(self.stream):
                    graph.replay()

            return replay
        batch = self.static_input[:size]

        def eager() -> None:
            with torch.cuda.stream(self.stream):
                self.module(batch)

        return eager

    def sync(self) -> None:
        if self.cuda:
            self.stream.synchronize()

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Host images → host scores, copies included (what a serving instance does)."""
        n = len(images)
        if not self.cuda:
            return self.module(torch.from_numpy(images)).numpy()
        size = self.bucket(n) if self._graphs else n
        self.pinned[:n].copy_(torch.from_numpy(images))
        with torch.cuda.stream(self.stream):
            self.static_input[:n].copy_(self.pinned[:n], non_blocking=True)
            if self._graphs:
                graph, output = self._graphs[size]
                graph.replay()
            else:
                output = self.module(self.static_input[:n])
            scores = output[:n].to("cpu", non_blocking=True)
        self.stream.synchronize()
        return scores.numpy()


def time_calls(call: Callable[[], object], sync: Callable[[], None], warmup: int, seconds: float,
               min_iterations: int, max_iterations: int) -> list[float]:
    """Per-call latencies in ms, each call synchronised, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        call()
    sync()
    latencies: list[float] = []
    started = time.perf_counter()
    while len(latencies) < max_iterations and (
        len(latencies) < min_iterations or time.perf_counter() - started < seconds
    ):
        t0 = time.perf_counter()
        call()
        sync()
        latencies.append((time.perf_counter() - t0) * 1000)
    return latencies
