"""Concurrency sweep: how many requests in flight one replica holds within the latency SLO.

    python -m loadtests.concurrency --users MixedUser --levels 1,2,4,8,12,16,24,32 --seconds 20

Starts the local stack as `make loadtest` does (Triton + transformer + the MediaWiki
stand-in, on ``--cpus`` CPUs), or loads a deployment (``--url``, ``--host``, ``--names`` as
for loadtests/run.py), then holds each level of closed-loop users (no think time, so users
= requests in flight) for ``--seconds``. Per level: requests/s, the latency of the requests
that carry one image (the upload client's request, which the SLO is about) and of all
requests, failures, Little's law's λ·W as a check, and, locally, from Triton's statistics
the gRPC calls in flight at the predictor, images per call and images per model execution.
``--users TritonCalibration`` sweeps Triton alone, one image per call.

The target is the highest level whose one-image p95 is within ``--slo-ms`` with no failed
request and every request's p99 under the client's 15 s wait. Writes
``<out>/concurrency.json`` and ``<out>/concurrency.md`` (the table for docs/DEPLOY.md).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Self

import httpx
import numpy as np
import typer

from loadtests import run

# Requests with one image, by Locust name: what the upload client sends.
ONE_IMAGE = {
    "logo base64",
    "logo by name",
    "nsfw base64",
    "logo-detection base64",
    "nsfw-detection base64",
    "mixed logo single",
    "mixed nsfw single",
    "mixed logo by name",
    run.CALIBRATION,
}
CLIENT_WAIT_MS = 15_000


class TritonMeter:
    """Samples Triton's cumulative statistics, summed over models, twice a second: calls
    answered and the nanoseconds they spent inside Triton (queue and compute), images, and
    model executions."""

    def __init__(self, http_url: str, period_s: float = 0.5) -> None:
        self.url = f"{http_url}/v2/models/stats"
        self.period_s = period_s
        self.samples: list[tuple[float, float, float, float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.wait(self.period_s):
                models = client.get(self.url).json()["model_stats"]
                success = [m["inference_stats"]["success"] for m in models]
                self.samples.append(
                    (
                        time.time(),
                        float(sum(int(s["count"]) for s in success)),
                        float(sum(int(s["ns"]) for s in success)),
                        float(sum(int(m["inference_count"]) for m in models)),
                        float(sum(int(m["execution_count"]) for m in models)),
                    )
                )

    def between(self, start: float, end: float) -> dict[str, float]:
        times = [s[0] for s in self.samples]

        def delta(column: int) -> float:
            values = [s[column] for s in self.samples]
            return float(np.interp(end, times, values) - np.interp(start, times, values))

        calls, ns, images, executions = (delta(c) for c in (1, 2, 3, 4))
        return {
            "calls_in_flight": round(ns / 1e9 / (end - start), 2),
            "images_per_call": round(images / calls, 2) if calls else 0.0,
            "images_per_execution": round(images / executions, 2) if executions else 0.0,
            "images_per_s": round(images / (end - start), 1),
        }


def level_row(
    users: int, seconds: float, requests: list[tuple[str, float, bool]], triton: dict[str, float]
) -> dict:
    latencies = [ms for _, ms, _ in requests]
    one_image = [ms for name, ms, _ in requests if name in ONE_IMAGE]
    rps = len(latencies) / seconds
    mean_s = float(np.mean(latencies)) / 1000
    return {
        "users": users,
        "requests": len(latencies),
        "rps": round(rps, 2),
        "one_image_p50_ms": round(float(np.percentile(one_image, 50)), 1),
        "one_image_p95_ms": round(float(np.percentile(one_image, 95)), 1),
        "all_p95_ms": round(float(np.percentile(latencies, 95)), 1),
        "all_p99_ms": round(float(np.percentile(latencies, 99)), 1),
        "mean_ms": round(mean_s * 1000, 1),
        "little_in_flight": round(rps * mean_s, 2),
        "failures": sum(not ok for _, _, ok in requests),
        **triton,
    }


def target(rows: list[dict], slo_ms: float) -> dict | None:
    """The highest level within the SLO, if the levels below it are too."""
    best = None
    for row in rows:
        if (
            row["one_image_p95_ms"] > slo_ms
            or row["failures"]
            or row["all_p99_ms"] >= CLIENT_WAIT_MS
        ):
            break
        best = row
    return best


def table(rows: list[dict], slo_ms: float) -> str:
    lines = [
        (
            "| users | req/s | one-image p50 / p95 ms | all p95 / p99 ms | λ·W | failures "
            "| Triton calls in flight | images per call | images per execution |"
        ),
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        mark = "" if r["one_image_p95_ms"] <= slo_ms else " ✗"
        triton = " | ".join(
            str(r.get(k, "–"))
            for k in ("calls_in_flight", "images_per_call", "images_per_execution")
        )
        lines.append(
            f"| {r['users']} | {r['rps']} | {r['one_image_p50_ms']:.0f} / "
            f"{r['one_image_p95_ms']:.0f}{mark} | {r['all_p95_ms']:.0f} / {r['all_p99_ms']:.0f} | "
            f"{r['little_in_flight']} | {r['failures']} | {triton} |"
        )
    return "\n".join(lines)


def main(
    url: str = typer.Option("", help="Deployment to load; empty starts a local stack."),
    host: str = typer.Option(
        "", help="Host header, e.g. logo-detection.example.org behind an ingress."
    ),
    names: Path = typer.Option(None, help="Commons file names for lookups by name, one a line."),
    users: str = typer.Option("MixedUser", help="Locust user classes, comma-separated."),
    levels: str = typer.Option("1,2,4,8,12,16,24,32", help="Users (requests in flight) per level."),
    seconds: float = typer.Option(20.0, help="Seconds per level."),
    slo_ms: float = typer.Option(1000.0, help="p95 latency target of one-image requests."),
    cpus: int = typer.Option(2, help="CPUs the stack and Locust share; 0: all."),
    out: Path = typer.Option(Path("build/concurrency")),
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    payload_dir = out / "payloads"
    hosted = run.write_payloads(payload_dir)
    counts = [int(level) for level in levels.split(",")]
    phases = run.plan_phases(
        users,
        ",".join(f"{c}:{seconds:g}" for c in counts),
        rounds=1,
        calibration_s=0,
        calibrate=False,
    )
    with ExitStack() as exits:
        if url:
            allowed = sorted(os.sched_getaffinity(0))
            listed = (names or run.DEFAULT_NAMES).read_text().splitlines()
            env = run.locust_env(url, host, payload_dir, listed)
            meter = None
        else:
            allowed = run.pin_cpus(cpus)
            stack = run.start_local_stack(exits, out, payload_dir)
            triton_url = f"http://127.0.0.1:{stack.triton_ports.http}"
            env = run.locust_env(stack.url, host, payload_dir, hosted, triton_url)
            meter = exits.enter_context(TritonMeter(triton_url))
        with run.CpuMeter(allowed) as cpu:
            windows, samples = run.run_locust(out, phases, env, users.split(","))
    phased = run.by_phase(windows, samples)
    rows = [
        level_row(phase["users"], end - start, requests, meter.between(start, end) if meter else {})
        for phase, (start, end), requests in zip(phases, windows, phased, strict=True)
        if phase["kind"] == "load"
    ]
    ours = sum(cpu.between(*w)[0] for w in windows)
    busy = sum(cpu.between(*w)[1] for w in windows)
    best = target(rows, slo_ms)
    summary = {
        "command": " ".join(sys.argv),
        "url": url or "local stack",
        "users": users,
        "cpus": len(allowed),
        "slo_ms": slo_ms,
        "other_cpu_share": round(max(0.0, 1 - ours / busy), 3) if busy else None,
        "levels": rows,
        "target": best,
    }
    (out / "concurrency.json").write_text(json.dumps(summary, indent=2))
    (out / "concurrency.md").write_text(table(rows, slo_ms) + "\n")
    typer.echo(table(rows, slo_ms))
    typer.echo(f"other processes' share of these CPUs: {summary['other_cpu_share']}")
    if best is None:
        typer.echo(f"no level keeps the one-image p95 within {slo_ms:.0f} ms")
        raise typer.Exit(1)
    triton = (
        f"; Triton calls in flight {best['calls_in_flight']}, "
        f"{best['images_per_call']} images per call"
        if meter
        else ""
    )
    typer.echo(
        f"target: {best['users']} requests in flight per replica ({best['rps']} req/s, "
        f"one-image p95 {best['one_image_p95_ms']:.0f} ms){triton}"
    )


if __name__ == "__main__":
    typer.run(main)
