"""The measurements: model only, numerics, ceiling, dynamic batching, end to end."""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from loadtests.gpu_bench import ceiling
from loadtests.gpu_bench.batcher import DynamicBatcher, drive
from loadtests.gpu_bench.convert import load
from loadtests.gpu_bench.runner import Runner, time_calls
from preprocessing.specs import ModelSpec

POWERS_OF_TWO = (1, 2, 4, 8, 16, 32, 64, 128, 256)
# Scores are P(class); the decisions compared are "score of the positive label ≥ 0.5".
THRESHOLD = 0.5


@dataclass(frozen=True)
class Plan:
    """How much to measure. The full plan fits in about 4 minutes on an H100/H200."""

    precisions: dict[str, torch.dtype]
    batch_sizes: tuple[int, ...]
    warmup: int
    seconds_per_point: float
    min_iterations: int
    max_iterations: int
    concurrencies: tuple[int, ...]
    extra_max_batches: tuple[int, ...]
    batcher_seconds: float
    e2e_seconds: float
    e2e_concurrency: int
    eval_images: int | None
    budget_s: float


FULL = Plan(
    precisions={"fp32": torch.float32, "fp16": torch.float16},
    batch_sizes=POWERS_OF_TWO, warmup=3, seconds_per_point=0.3, min_iterations=10, max_iterations=300,
    concurrencies=POWERS_OF_TWO, extra_max_batches=(128,), batcher_seconds=1.0,
    e2e_seconds=5.0, e2e_concurrency=64, eval_images=None, budget_s=420.0,
)
# CPU, seconds. PyTorch's CPU FP16 depthwise convolutions take seconds per image, so the dry
# run's half precision is bfloat16: it exercises the same code path.
DRY_RUN = Plan(
    precisions={"fp32": torch.float32, "bf16": torch.bfloat16},
    batch_sizes=(1, 2), warmup=1, seconds_per_point=0.0, min_iterations=2, max_iterations=2,
    concurrencies=(1, 4), extra_max_batches=(), batcher_seconds=0.3,
    e2e_seconds=0.5, e2e_concurrency=4, eval_images=6, budget_s=120.0,
)


class Clock:
    """The run's time budget: phases skip what would not fit and say so."""

    def __init__(self, budget_s: float) -> None:
        self.started = time.perf_counter()
        self.budget_s = budget_s
        self.skipped: list[str] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def allows(self, what: str) -> bool:
        if self.elapsed() < self.budget_s:
            return True
        self.skipped.append(what)
        return False


def summary(latencies_ms: list[float], images: int, seconds: float) -> dict:
    return {
        "images_per_s": round(images / seconds, 1),
        "p50_ms": round(float(np.percentile(latencies_ms, 50)), 3),
        "p99_ms": round(float(np.percentile(latencies_ms, 99)), 3),
        "samples": len(latencies_ms),
    }


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def release(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()


def load_modules(model_path: Path, plan: Plan, device: torch.device) -> dict[str, torch.nn.Module]:
    cuda = device.type == "cuda"
    return {name: load(model_path, dtype, channels_last=cuda).to(device)
            for name, dtype in plan.precisions.items()}


def time_point(runner: Runner, batch: int, use_graph: bool, plan: Plan) -> dict:
    latencies = time_calls(runner.resident(batch, use_graph), runner.sync, plan.warmup, plan.seconds_per_point,
                           plan.min_iterations, plan.max_iterations)
    return summary(latencies, batch * len(latencies), sum(latencies) / 1000)


def measure_point(spec: ModelSpec, module: torch.nn.Module, precision: str, batch: int,
                  device: torch.device, plan: Plan) -> dict:
    runner = Runner(module, spec, device, (batch,), graphs=False)
    row = {"model": spec.name, "precision": precision, "batch": batch,
           "eager": time_point(runner, batch, False, plan), "cuda_graph": None}
    if runner.cuda:
        try:
            runner.capture(batch)
            row["cuda_graph"] = time_point(runner, batch, True, plan)
        except RuntimeError as exc:
            row["cuda_graph_error"] = first_line(exc)
    return row


def model_only(spec: ModelSpec, modules: dict[str, torch.nn.Module], device: torch.device,
               plan: Plan, clock: Clock, notes: list[str]) -> list[dict]:
    """Images/s and latency per batch size, input already on the device, each call synchronised."""
    rows = []
    for precision, module in modules.items():
        for batch in plan.batch_sizes:
            what = f"model-only {spec.name} {precision} batch {batch}"
            if not clock.allows(what):
                continue
            try:
                row = measure_point(spec, module, precision, batch, device, plan)
            except RuntimeError as exc:  # out of memory, say: the other sizes still count
                notes.append(f"{what} failed: {first_line(exc)}")
                continue
            finally:
                release(device)
            rows.append(row)
            print(f"[gpu-bench] {what}: eager {row['eager']['images_per_s']} img/s, "
                  f"graph {(row['cuda_graph'] or {}).get('images_per_s')} img/s", flush=True)
    return rows


def numerics(spec: ModelSpec, modules: dict[str, torch.nn.Module], model_path: Path,
             tensors: np.ndarray, names: list[str], device: torch.device) -> dict:
    """Half versus FP32 scores on the evaluation images, and FP32 versus ONNX Runtime (CPU)."""
    import onnxruntime as ort

    full, half = list(modules)
    scores = {p: Runner(m, spec, device, (len(tensors),), graphs=False)(tensors) for p, m in modules.items()}
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    reference = session.run(None, {spec.input_name: tensors})[0]
    positive = len(spec.labels) - 1
    flipped = (scores[full][:, positive] >= THRESHOLD) != (scores[half][:, positive] >= THRESHOLD)
    return {
        "model": spec.name,
        "images": len(tensors),
        "compared": f"{half} vs {full}",
        "max_abs_diff": float(np.abs(scores[half] - scores[full]).max()),
        "decisions_flipped": int(flipped.sum()),
        "flipped_images": [n for n, f in zip(names, flipped) if f],
        "threshold": THRESHOLD,
        f"max_abs_diff_{full}_vs_onnxruntime": float(np.abs(scores[full] - reference).max()),
    }


def model_ceiling(spec: ModelSpec, model_path: Path, peak: tuple[str, float] | None,
                  rows: list[dict], half: str) -> dict:
    flops = ceiling.flops_per_image(load(model_path), torch.zeros((1, *spec.input_dims), dtype=torch.uint8))
    best = max((mode["images_per_s"] for r in rows if r["precision"] == half
                for mode in (r["eager"], r["cuda_graph"]) if mode), default=None)
    out = {"model": spec.name, "gflop_per_image": round(flops / 1e9, 3), "peak": None,
           "ideal_images_per_s": None, f"best_{half}_images_per_s": best, "fraction_of_ideal": None}
    if peak:
        ideal = ceiling.ideal_images_per_s(flops, peak[1])
        out.update(peak={"gpu": peak[0], "dense_fp16_tflops": peak[1]},
                   ideal_images_per_s=round(ideal, 1),
                   fraction_of_ideal=None if best is None else round(best / ideal, 4))
    return out


def make_runners(spec: ModelSpec, module: torch.nn.Module, device: torch.device,
                 max_batch: int) -> tuple[list[Runner], str]:
    """``spec.gpu_instances`` instances with one CUDA graph per power-of-two batch size."""
    buckets = tuple(b for b in POWERS_OF_TWO if b < max_batch) + (max_batch,)
    instances = spec.gpu_instances
    try:
        return [Runner(module, spec, device, buckets, graphs=device.type == "cuda")
                for _ in range(instances)], "cuda graphs" if device.type == "cuda" else "eager"
    except RuntimeError as exc:
        release(device)
        note = f"eager (graph capture failed: {first_line(exc)})"
        return [Runner(module, spec, device, buckets, graphs=False) for _ in range(instances)], note


async def batching(spec: ModelSpec, module: torch.nn.Module, tensors: list[np.ndarray],
                   device: torch.device, plan: Plan, clock: Clock) -> list[dict]:
    rows = []
    for max_batch in sorted({spec.max_batch_size, *plan.extra_max_batches}):
        runners, mode = make_runners(spec, module, device, max_batch)
        delay_s = spec.gpu_max_queue_delay_us / 1e6
        for concurrency in plan.concurrencies:
            if not clock.allows(f"batcher {spec.name} max batch {max_batch} concurrency {concurrency}"):
                continue
            async with DynamicBatcher(runners, max_batch, delay_s) as batcher:
                await drive(batcher, tensors, concurrency, min(0.2, plan.batcher_seconds))
                batcher.batch_sizes.clear()
                images, latencies, elapsed = await drive(batcher, tensors, concurrency, plan.batcher_seconds)
                sizes = batcher.batch_sizes
            rows.append({"model": spec.name, "max_batch": max_batch, "instances": len(runners),
                         "queue_delay_us": spec.gpu_max_queue_delay_us, "mode": mode,
                         "concurrency": concurrency, **summary(latencies, images, elapsed),
                         "mean_batch": round(sum(sizes) / max(1, len(sizes)), 2)})
            print(f"[gpu-bench] batcher {spec.name} max {max_batch} c={concurrency}: "
                  f"{rows[-1]['images_per_s']} img/s, batch {rows[-1]['mean_batch']}", flush=True)
        del runners
        release(device)
    return rows


async def end_to_end(spec: ModelSpec, module: torch.nn.Module, encoded: list[bytes], prepare,
                     device: torch.device, plan: Plan) -> dict:
    """The transformer's decode and tensor code on every CPU core, feeding the batcher."""
    workers = os.cpu_count() or 1
    runners, mode = make_runners(spec, module, device, spec.max_batch_size)
    decode_s: list[float] = []

    def decode(data: bytes) -> np.ndarray:
        started = time.perf_counter()
        tensor = prepare(data)
        decode_s.append(time.perf_counter() - started)
        return tensor

    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as pool:
        async with DynamicBatcher(runners, spec.max_batch_size, spec.gpu_max_queue_delay_us / 1e6) as batcher:
            deadline = time.perf_counter() + plan.e2e_seconds

            async def client(offset: int) -> None:
                i = offset
                while time.perf_counter() < deadline:
                    t0 = time.perf_counter()
                    tensor = await loop.run_in_executor(pool, decode, encoded[i % len(encoded)])
                    await batcher.infer(tensor)
                    latencies.append((time.perf_counter() - t0) * 1000)
                    i += plan.e2e_concurrency

            started = time.perf_counter()
            await asyncio.gather(*(client(k) for k in range(plan.e2e_concurrency)))
            elapsed = time.perf_counter() - started
            sizes = batcher.batch_sizes
    del runners
    release(device)
    total_s = sum(latencies) / 1000
    return {"model": spec.name, "decode_threads": workers, "concurrency": plan.e2e_concurrency,
            "mode": mode, **summary(latencies, len(latencies), elapsed),
            "decode_share": round(sum(decode_s) / total_s, 3),
            "decode_ms_per_image": round(1000 * sum(decode_s) / max(1, len(decode_s)), 2),
            "decode_threads_busy": round(sum(decode_s) / (elapsed * workers), 3),
            "mean_batch": round(sum(sizes) / max(1, len(sizes)), 2)}
