"""`make soak`: a long run at a steady fraction of capacity, watching for errors and leaks.

Without ``--url`` it starts the stack `make loadtest` starts (Triton + transformer + the
MediaWiki stand-in serving the payload images). Then, with Locust in a subprocess:

1. capacity (skipped when ``--rate`` is given): closed-loop ``CapacityUser``s stepped up
   (``--ramp``); the capacity is the best step's rate of successful requests over its last
   ``MEASURE_S`` seconds;
2. soak: open-loop ``SoakUser``s sending ``--load`` × capacity requests per second for
   ``--duration`` seconds, half inline base64 and half by Commons name, while the RSS of
   every stack process (tritonserver, its Python-backend stubs, the transformer) is
   sampled every ``SAMPLE_S`` seconds.

Writes ``<out>/summary.json``, ``<out>/rss.png`` (RSS and latency over time) and Locust's
CSVs and report, and exits 1 on any failed request or item, an achieved rate under
``MIN_RATE_RATIO`` of the target, or RSS growing faster than ``--max-slope`` MB/h (least
squares, after the first ``--warmup`` of the run).
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import psutil
import typer

from loadtests.run import aggregate, start_local_stack, write_payloads

ROOT = Path(__file__).resolve().parent.parent
USERS = Path(__file__).with_name("soak_users.py")
SAMPLE_S = 5.0
MEASURE_S = 10
MIN_RATE_RATIO = 0.95

Sample = dict[str, float]  # "t" (seconds into the soak), "total" and one entry per process, MB


def run_locust(user: str, steps: str, prefix: Path, target: str, env: dict[str, str],
               report: Path | None = None) -> subprocess.Popen:
    command = [
        sys.executable, "-m", "locust", "-f", str(USERS), "--headless", "--host", target,
        "--csv", str(prefix), "--csv-full-history", "--only-summary", "--loglevel", "WARNING",
        *(["--html", str(report)] if report else []), user,
    ]
    return subprocess.Popen(command, cwd=ROOT, env={**env, "LOADTEST_STEPS": steps})


def history(prefix: Path) -> list[dict[str, str]]:
    with open(f"{prefix}_stats_history.csv", newline="") as handle:
        return [r for r in csv.DictReader(handle) if r["Name"] == "Aggregated"]


def successes(row: dict[str, str]) -> int:
    return int(row["Total Request Count"]) - int(row["Total Failure Count"])


def step_rates(rows: list[dict[str, str]]) -> dict[int, float]:
    """Successful requests per second over the last ``MEASURE_S`` seconds at each user
    count: an overloaded stack answers 503 quickly, which is no capacity."""
    rates = {}
    for users in sorted({int(r["User Count"]) for r in rows} - {0}):
        step = [r for r in rows if int(r["User Count"]) == users]
        end = int(step[-1]["Timestamp"])
        tail = [r for r in step if int(r["Timestamp"]) >= end - MEASURE_S]
        seconds = end - int(tail[0]["Timestamp"])
        if seconds > 0:
            done = successes(tail[-1]) - successes(tail[0])
            rates[users] = round(done / seconds, 2)
    return rates


def label(process: psutil.Process) -> str:
    """``tritonserver``, ``transformer`` or ``stub <model>``, with the pid."""
    try:
        argv = process.cmdline()
    except psutil.Error:
        argv = []
    if argv and argv[0].endswith("triton_python_backend_stub"):
        model = next((Path(a).parent.parent.name for a in argv if a.endswith("model.py")), "?")
        return f"stub {model} ({process.pid})"
    name = "transformer" if "transformer" in argv[1:3] else process.name()
    return f"{name} ({process.pid})"


def sample_rss(roots: list[psutil.Process], started: float) -> Sample:
    # Walk the tree each time: Triton restarts a stub that died under a new pid.
    sample: Sample = {"t": round(time.time() - started, 1), "total": 0.0}
    for root in roots:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            continue
        for process in tree:
            try:
                mb = process.memory_info().rss / 2**20
            except psutil.NoSuchProcess:
                continue  # exited since its tree was listed
            sample[label(process)] = round(mb, 1)
            sample["total"] += mb
    sample["total"] = round(sample["total"], 1)
    return sample


def rss_fit(samples: list[Sample], since_s: float) -> tuple[float, float] | None:
    """Least-squares line through the total RSS after ``since_s``: (MB/h, MB at t = 0)."""
    points = [(s["t"] / 3600, s["total"]) for s in samples if s["t"] >= since_s]
    if len(points) < 3:
        return None
    hours, mb = np.array(points).T
    slope, intercept = np.polyfit(hours, mb, 1)
    return float(slope), float(intercept)


def failures(prefix: Path) -> dict[str, int]:
    """Failure message → occurrences, from Locust's failures CSV."""
    counts: dict[str, int] = {}
    with open(f"{prefix}_failures.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            key = f"{row['Name']}: {row['Error']}"
            counts[key] = counts.get(key, 0) + int(row["Occurrences"])
    return counts


def plot(samples: list[Sample], rows: list[dict[str, str]], started: float, target_rate: float,
         warmup_s: float, fit: tuple[float, float] | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (memory, latency) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    if samples:
        seconds = [s["t"] for s in samples]
        for key in sorted({k for s in samples for k in s} - {"t", "total"}):
            memory.plot(seconds, [s.get(key, np.nan) for s in samples], lw=0.8, label=key)
        memory.plot(seconds, [s["total"] for s in samples], "k", lw=2, label="total")
        memory.axvline(warmup_s, color="grey", ls=":", label="end of warm-up")
    title = "RSS"
    if fit:
        ends = np.array([warmup_s, seconds[-1]])
        memory.plot(ends, fit[1] + fit[0] * ends / 3600, "r--", label="fit")
        title = f"RSS (after warm-up {fit[0]:+.1f} MB/h)"
    memory.set(ylabel="MB", title=title)
    memory.legend(fontsize=7, loc="center left", bbox_to_anchor=(1, 0.5))

    def series(column: str) -> list[float]:
        return [float(r[column]) if r[column] not in ("", "N/A") else np.nan for r in rows]

    seconds = [int(r["Timestamp"]) - started for r in rows]
    for column in ("50%", "95%", "99%"):
        latency.plot(seconds, series(column), label=f"p{column.rstrip('%')}")
    latency.set(xlabel="seconds", ylabel="ms", yscale="log",
                title="Latency (Locust's rolling window) and request rate")
    rate = latency.twinx()
    rate.plot(seconds, series("Requests/s"), "k", lw=0.8, alpha=0.5, label="requests/s")
    rate.axhline(target_rate, color="k", ls="--", alpha=0.5, label="target")
    rate.set(ylabel="requests/s", ylim=(0, target_rate * 1.5))
    lines = latency.get_legend_handles_labels()
    more = rate.get_legend_handles_labels()
    latency.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7,
                   loc="center left", bbox_to_anchor=(1.08, 0.5))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def judge(summary: dict, max_slope: float) -> list[str]:
    problems = []
    if summary["errors"]:
        problems.append(f"{summary['errors']} failed requests or items")
    if summary["achieved_rate"] < summary["target_rate"] * MIN_RATE_RATIO:
        problems.append(f"achieved {summary['achieved_rate']} requests/s < "
                        f"{MIN_RATE_RATIO:.0%} of the target {summary['target_rate']}")
    slope = summary["rss_slope_mb_per_h"]
    if slope is not None and slope > max_slope:
        problems.append(f"RSS grows {slope} MB/h > {max_slope} MB/h")
    return problems


def main(
    url: str = typer.Option("", help="Deployment to load (no RSS then); empty starts a local stack."),
    duration: int = typer.Option(600, help="Soak seconds."),
    rate: float = typer.Option(0.0, help="Requests/s to hold; 0 measures capacity first."),
    load: float = typer.Option(0.8, help="Fraction of the measured capacity to hold."),
    ramp: str = typer.Option("4:20,8:20,16:25", help="Capacity steps, users:seconds, rising."),
    pacing: float = typer.Option(4.0, help="Seconds between one user's requests (users = rate × this)."),
    warmup: float = typer.Option(0.1, help="Share of the soak left out of the RSS slope."),
    max_slope: float = typer.Option(50.0, help="Largest acceptable RSS growth, MB/h."),
    out: Path = typer.Option(Path("build/soak")),
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    payload_dir = out / "payloads"
    names = write_payloads(payload_dir)
    env = dict(os.environ, LOADTEST_PAYLOADS=str(payload_dir),
               LOADTEST_COMMONS_NAMES="" if url else "\n".join(names))
    capacity: dict[int, float] = {}
    samples: list[Sample] = []
    with ExitStack() as stack:
        local = None if url else start_local_stack(stack, out, payload_dir)
        target = url or local.url
        roots = [psutil.Process(pid) for pid in local.pids()] if local else []
        if not rate:
            run_locust("CapacityUser", ramp, out / "capacity", target, env).wait()
            capacity = step_rates(history(out / "capacity"))
            if not capacity:
                raise RuntimeError(f"the capacity ramp completed no requests: see {out}/capacity_*")
            rate = round(load * max(capacity.values()), 2)
            typer.echo(f"capacity by users {capacity}; holding {rate} requests/s")
        users = max(1, math.ceil(rate * pacing))
        env["SOAK_INTERVAL"] = str(users / rate)
        started = time.time()
        locust = run_locust("SoakUser", f"{users}:{duration}", out / "soak", target, env,
                            report=out / "report.html")
        while locust.poll() is None:
            if roots:
                samples.append(sample_rss(roots, started))
            try:
                locust.wait(timeout=SAMPLE_S)
            except subprocess.TimeoutExpired:
                pass

    errors = failures(out / "soak")
    stats = aggregate(out / "soak_stats.csv")
    warmup_s = warmup * duration
    fit = rss_fit(samples, warmup_s)
    totals = [s["total"] for s in samples]
    summary = {
        "target": url or "local stack",
        "capacity_by_users": capacity,
        "target_rate": rate,
        "users": users,
        "duration_s": duration,
        "requests": stats["requests"],
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "achieved_rate": stats["requests_per_s"],
        "achieved_ratio": round(stats["requests_per_s"] / rate, 3),
        **{k: stats[k] for k in ("p50_ms", "p95_ms", "p99_ms")},
        "rss_mb": {"start": totals[0], "end": totals[-1], "max": max(totals)} if totals else None,
        "rss_slope_mb_per_h": round(fit[0], 1) if fit else None,
        "rss_slope_after_s": warmup_s,
        "max_slope_mb_per_h": max_slope,
        "rss_samples": samples,
        "command": " ".join(sys.argv),
    }
    problems = judge(summary, max_slope)
    summary["problems"] = problems
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    plot(samples, history(out / "soak"), started, rate, warmup_s, fit, out / "rss.png")
    typer.echo(json.dumps({k: v for k, v in summary.items() if k != "rss_samples"}, indent=2))
    typer.echo(f"wrote {out / 'summary.json'} and {out / 'rss.png'}")
    if problems:
        typer.echo("SOAK FAILED: " + "; ".join(problems), err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
