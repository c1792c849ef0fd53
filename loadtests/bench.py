"""`make bench`: four ways to serve the same models, measured side by side in one run.

(a) ceiling     the exported ONNX alone, in this process, batched, same thread count;
(b) triton      tritonclient gRPC straight to Triton, ``--concurrency`` streams of 1 image;
(c) end to end  HTTP through the transformer with real image payloads, same concurrency;
(d) lift wing   ``loadtests/liftwing_baseline.py``: one blocking worker, temp files,
                one model call per image, same model, same concurrency.

For each: images/s, latency p50/p95/p99, CPU seconds per image (all server processes,
Triton's Python-backend stubs included), peak RSS per process, Triton's average batch.
The load generator shares the 2 cores with the servers in (b)–(d); that cost is real
for any single-machine test and is the same for all three.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import psutil
import tritonclient.grpc as grpc_client
import tritonclient.grpc.aio as grpc_aio
import tritonclient.http as http_client
import tritonclient.http.aio as http_aio
import typer
from PIL import Image

from devtools.images import encode
from loadtests import payloads
from predictor import repository
from predictor.triton_server import TritonPorts
from preprocessing.decode import decode_image
from preprocessing.specs import SPECS, ModelSpec
from preprocessing.tensor import PREPARATIONS
from stack import Stack, free_port
from stack.launcher import WITHOUT_SCORE_STORE

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = ROOT / "model_repository"


@dataclass
class Result:
    setup: str
    model: str
    images: int
    seconds: float
    latencies_ms: list[float] = field(repr=False)
    cpu_seconds: float
    peak_rss_mb: dict[str, float]
    triton_batch: float | None = None
    client_cpu_seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")

    def row(self) -> dict:
        return {
            "setup": self.setup,
            "model": self.model,
            "images_per_s": round(self.images_per_s, 1),
            "p50_ms": round(self.percentile(50), 1),
            "p95_ms": round(self.percentile(95), 1),
            "p99_ms": round(self.percentile(99), 1),
            "cpu_s_per_image": round(self.cpu_seconds / max(1, self.images), 4),
            "client_cpu_s_per_image": round(self.client_cpu_seconds / max(1, self.images), 4),
            "peak_rss_mb": self.peak_rss_mb,
            "triton_batch": None if self.triton_batch is None else round(self.triton_batch, 2),
        }


def onnx_path(name: str) -> Path:
    (path,) = sorted(REPOSITORY.glob(f"{name}/*/model.onnx"))
    return path


def variant_repository(specs: tuple[ModelSpec, ...], out: Path) -> Path:
    """A model repository with these (tuned) specs and the already exported ONNX files."""
    return repository.build_cpu(out, {s.name: onnx_path(s.name) for s in specs}, specs)


def tensors_for(model: str, images: list[tuple[str, bytes]]) -> np.ndarray:
    min_side, to_tensor = PREPARATIONS[model].min_side, PREPARATIONS[model].to_tensor
    return np.stack([to_tensor(decode_image(data, min_side=min_side)) for _, data in images])


def processes(root: psutil.Process) -> list[psutil.Process]:
    return [root, *root.children(recursive=True)]


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def peak_rss_mb(procs: list[psutil.Process]) -> dict[str, float]:
    """VmHWM: the high-water mark of each process's resident set since it started."""
    peaks: dict[str, float] = {}
    for proc in procs:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            name = proc.name()
        except (OSError, psutil.NoSuchProcess):
            continue
        kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
        key = name if name not in peaks else f"{name}-{proc.pid}"
        peaks[key] = round(kb / 1024, 1)
    return peaks


def triton_counts(ports: TritonPorts, model: str) -> tuple[int, int]:
    stats = httpx.get(f"http://127.0.0.1:{ports.http}/v2/models/{model}/stats", timeout=10).json()
    entry = stats["model_stats"][0]
    return int(entry["inference_count"]), int(entry["execution_count"])


async def run_for(duration_s: float, concurrency: int, call) -> tuple[int, list[float], float, float]:
    """Run ``call(i)`` from ``concurrency`` workers until ``duration_s`` passes; also returns
    the CPU seconds this (load-generating) process spent meanwhile."""
    latencies: list[float] = []
    count = 0
    deadline = time.perf_counter() + duration_s

    async def worker(offset: int) -> None:
        nonlocal count
        i = offset
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            images = await call(i)
            latencies.append((time.perf_counter() - started) * 1000)
            count += images
            i += concurrency

    me = psutil.Process()
    cpu_before = cpu_seconds([me])
    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    return count, latencies, time.perf_counter() - started, cpu_seconds([me]) - cpu_before


def preprocess_ms(twelve_mp_jpeg: bytes, repeats: int = 15) -> dict[str, float]:
    """Median ms from 12-MP JPEG bytes to the model tensor, per model's policy."""
    timings = {}
    for model, preparation in PREPARATIONS.items():
        min_side, to_tensor = preparation.min_side, preparation.to_tensor
        samples = []
        for _ in range(repeats):
            started = time.perf_counter()
            to_tensor(decode_image(twelve_mp_jpeg, min_side=min_side))
            samples.append((time.perf_counter() - started) * 1000)
        timings[model] = round(float(np.median(samples)), 1)
    return timings


def preprocess_by_width(photo: bytes, widths=(250, 330, 500, 800, 1280)) -> dict[int, dict]:
    """Median ms from a Commons-thumbnail-sized JPEG to each model's tensor, per width."""
    img = decode_image(photo)
    table = {}
    for width in widths:
        thumb = img.resize((width, round(img.height * width / img.width)), Image.Resampling.BILINEAR)
        data = encode(thumb, "JPEG", quality=85)
        table[width] = {"bytes": len(data), **preprocess_ms(data, repeats=20)}
    return table


def ceiling(spec: ModelSpec, batch: np.ndarray, duration_s: float) -> Result:
    options = ort.SessionOptions()
    options.intra_op_num_threads = spec.cpu_intra_op_threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(
        str(onnx_path(spec.name)), sess_options=options,
        providers=["CPUExecutionProvider"],
    )
    batch = np.resize(batch, (spec.max_batch_size, *batch.shape[1:]))
    session.run(None, {spec.input_name: batch})
    me = psutil.Process()
    cpu_before = cpu_seconds([me])
    latencies, images = [], 0
    started = time.perf_counter()
    while time.perf_counter() - started < duration_s:
        t0 = time.perf_counter()
        session.run(None, {spec.input_name: batch})
        latencies.append((time.perf_counter() - t0) * 1000)
        images += len(batch)
    elapsed = time.perf_counter() - started
    return Result("a ceiling (ORT in-process, batch %d)" % len(batch), spec.name, images, elapsed,
                  latencies, cpu_seconds([me]) - cpu_before, peak_rss_mb([me]))


async def triton_direct(spec, ports, batch, concurrency, duration_s, procs, protocol) -> Result:
    if protocol == "grpc":
        client, make_input = grpc_aio.InferenceServerClient(f"127.0.0.1:{ports.grpc}"), grpc_client.InferInput
    else:
        client, make_input = http_aio.InferenceServerClient(f"127.0.0.1:{ports.http}"), http_client.InferInput

    async def call(i: int) -> int:
        tensor = make_input(spec.input_name, [1, *spec.input_dims], "UINT8")
        tensor.set_data_from_numpy(batch[i % len(batch)][np.newaxis])
        await client.infer(spec.name, [tensor])
        return 1

    await run_for(2, concurrency, call)
    before, cpu_before = triton_counts(ports, spec.name), cpu_seconds(procs)
    images, latencies, elapsed, client_cpu = await run_for(duration_s, concurrency, call)
    after = triton_counts(ports, spec.name)
    await client.close()
    return Result(f"b Triton direct ({protocol}, 1 image/request)", spec.name, images, elapsed, latencies,
                  cpu_seconds(procs) - cpu_before, peak_rss_mb(procs),
                  (after[0] - before[0]) / max(1, after[1] - before[1]), client_cpu)


async def over_http(setup, url, spec, bodies, concurrency, duration_s, procs, ports=None) -> Result:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        path = f"/v1/models/{spec.name}:predict"
        headers = {"Content-Type": "application/json"}

        async def call(i: int) -> int:
            response = await http.post(path, content=bodies[i % len(bodies)], headers=headers)
            response.raise_for_status()
            return 1

        await run_for(2, concurrency, call)
        before = triton_counts(ports, spec.name) if ports else None
        cpu_before = cpu_seconds(procs)
        images, latencies, elapsed, client_cpu = await run_for(duration_s, concurrency, call)
        batch = None
        if ports:
            after = triton_counts(ports, spec.name)
            batch = (after[0] - before[0]) / max(1, after[1] - before[1])
        return Result(setup, spec.name, images, elapsed, latencies,
                      cpu_seconds(procs) - cpu_before, peak_rss_mb(procs), batch, client_cpu)


def wait_http(url: str, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise TimeoutError(url)


def render_table(results: list[Result]) -> str:
    lines = [
        "| setup | model | images/s | p50 ms | p95 ms | p99 ms | CPU s/image | client CPU s/image | Triton batch | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        row = r.row()
        rss = ", ".join(f"{k} {v:.0f}" for k, v in row["peak_rss_mb"].items())
        batch = "" if row["triton_batch"] is None else f"{row['triton_batch']:.2f}"
        lines.append(
            f"| {row['setup']} | {row['model']} | {row['images_per_s']} | {row['p50_ms']} | "
            f"{row['p95_ms']} | {row['p99_ms']} | {row['cpu_s_per_image']} | "
            f"{row['client_cpu_s_per_image']} | {batch} | {rss} |"
        )
    return "\n".join(lines)


def ratios(results: list[Result]) -> dict[str, dict[str, float]]:
    out = {}
    for spec in SPECS:
        by = {r.setup[0]: r for r in results if r.model == spec.name}
        if {"a", "c", "d"} <= by.keys():
            out[spec.name] = {
                "c_over_a": round(by["c"].images_per_s / by["a"].images_per_s, 3),
                "c_over_d": round(by["c"].images_per_s / by["d"].images_per_s, 2),
            }
    return out


def main(
    concurrency: int = typer.Option(16),
    duration: float = typer.Option(20.0, help="Seconds measured per setup and model."),
    payload: str = typer.Option("thumb", help=f"Image kind: one of {payloads.KINDS}."),
    out: Path = typer.Option(Path("build/bench/results.json")),
    setups: str = typer.Option("abcd", help="Which of the setups a-d to run."),
    triton_protocol: str = typer.Option("grpc", help="Protocol(s) of setup (b): grpc, http or grpc,http."),
    queue_delay_us: int = typer.Option(None, help="Override max_queue_delay_microseconds."),
    instances: int = typer.Option(None, help="Override the CPU instance count per model."),
    threads: int = typer.Option(None, help="Override ORT intra-op threads per instance."),
    decode_threads: int = typer.Option(None, help="Override the transformer's DECODE_THREADS."),
    workers: int = typer.Option(1, help="Transformer worker processes (KServe --workers)."),
) -> None:
    overrides = {
        key: value
        for key, value in (
            ("max_queue_delay_us", queue_delay_us),
            ("cpu_instances", instances),
            ("cpu_intra_op_threads", threads),
        )
        if value is not None
    }
    specs = tuple(replace(s, **overrides) for s in SPECS)
    out.parent.mkdir(parents=True, exist_ok=True)
    served = variant_repository(specs, out.parent / "model_repository") if overrides else REPOSITORY
    images = payloads.by_kind(payload, 24 if payload != "large" else 4)
    bodies = [
        json.dumps({"instances": [{"filename": n, "image": base64.b64encode(d).decode()}]}).encode()
        for n, d in images
    ]
    twelve_mp = payloads.large(4)[-1][1]
    preprocessing = preprocess_ms(twelve_mp)
    print("12-MP JPEG → tensor, median ms:", preprocessing, flush=True)
    by_width = preprocess_by_width(payloads.large(1)[0][1])
    print("thumbnail JPEG → tensor by width, median ms:", by_width, flush=True)
    results: list[Result] = []
    for spec in specs if "a" in setups else ():
        results.append(ceiling(spec, tensors_for(spec.name, images), duration))
        print(render_table(results[-1:]).splitlines()[-1], flush=True)

    baseline_port = free_port()
    env = dict(WITHOUT_SCORE_STORE)
    if decode_threads is not None:
        env["DECODE_THREADS"] = str(decode_threads)
    stack = Stack(
        model_repository=served,
        env=env,
        transformer_args=[f"--workers={workers}"],
        models=[spec.name for spec in SPECS],
        logs=out.parent,
    )
    with stack:
        assert stack.triton is not None and stack.transformer is not None
        ports = stack.triton_ports
        baseline = subprocess.Popen(
            [sys.executable, "-m", "loadtests.liftwing_baseline", f"--port={baseline_port}",
             f"--model-repository={served}"], cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )
        try:
            url = stack.url
            baseline_url = f"http://127.0.0.1:{baseline_port}"
            wait_http(baseline_url + "/", baseline)
            triton_procs = processes(psutil.Process(stack.triton.process.pid))
            stack_procs = triton_procs + processes(psutil.Process(stack.transformer.pid))
            for spec in specs:
                batch = tensors_for(spec.name, images)
                steps = [
                    *(
                        ("b", lambda p=p: triton_direct(spec, ports, batch, concurrency,
                                                        duration, triton_procs, p))
                        for p in triton_protocol.split(",")
                    ),
                    ("c", lambda: over_http("c end to end (transformer + Triton)", url, spec,
                                            bodies, concurrency, duration, stack_procs, ports)),
                    ("d", lambda: over_http("d Lift Wing-style baseline", baseline_url, spec,
                                            bodies, concurrency, duration,
                                            [psutil.Process(baseline.pid)])),
                ]
                for key, step in steps:
                    if key in setups:
                        results.append(asyncio.run(step()))
                        print(render_table(results[-1:]).splitlines()[-1], flush=True)
        finally:
            baseline.terminate()
            baseline.wait(timeout=20)

    summary = {
        "command": " ".join(sys.argv),
        "concurrency": concurrency,
        "duration_s": duration,
        "payload": payload,
        "cpus": os.cpu_count(),
        "overrides": {**overrides, "decode_threads": decode_threads, "workers": workers},
        "preprocess_12mp_jpeg_ms": preprocessing,
        "preprocess_by_thumbnail_width_ms": by_width,
        "results": [r.row() for r in results],
        "ratios": ratios(results),
    }
    out.write_text(json.dumps(summary, indent=2))
    print()
    print(render_table(results))
    print()
    print("ratios:", json.dumps(summary["ratios"]))
    print(f"wrote {out}")


if __name__ == "__main__":
    typer.run(main)
