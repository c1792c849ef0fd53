"""`make loadtest`: a headless Locust run, its report, and a regression gate.

Without ``--url`` it starts what `make serve` starts (Triton + transformer on the built
model repository) plus a local MediaWiki-API server (devtools/fake_commons.py) hosting the
payload images, so lookups by name work offline; with ``--url`` it loads that deployment.

Writes ``<out>/stats_*.csv`` (Locust), ``<out>/throughput.png`` and
``<out>/latency.png`` (percentiles over time), ``<out>/summary.json``, and compares the
aggregate against ``loadtests/baseline.json``: throughput may not drop, nor p95 or the
failure ratio rise, by more than the tolerance. A regression exits with status 1.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import typer

from loadtests import payloads
from stack import Stack
from stack.launcher import WITHOUT_SCORE_STORE, commons_environment

ROOT = Path(__file__).resolve().parent.parent
BASELINE = Path(__file__).with_name("baseline.json")
GATED = ("requests_per_s", "p95_ms", "failure_ratio")


def write_payloads(directory: Path) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    images = payloads.thumbs(24) + payloads.logos(24) + payloads.large(2)
    for name, data in images + payloads.clips(2):
        (directory / name).write_bytes(data)
    return [name for name, _ in images]


def aggregate(stats_csv: Path) -> dict[str, float]:
    with open(stats_csv, newline="") as handle:
        row = next(r for r in csv.DictReader(handle) if r["Name"] == "Aggregated")
    requests = int(row["Request Count"])
    return {
        "requests": requests,
        "requests_per_s": round(float(row["Requests/s"]), 2),
        "p50_ms": float(row["50%"]),
        "p95_ms": float(row["95%"]),
        "p99_ms": float(row["99%"]),
        "failure_ratio": round(int(row["Failure Count"]) / max(1, requests), 4),
    }


def plot(history_csv: Path, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(history_csv, newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["Name"] == "Aggregated"]
    start = int(rows[0]["Timestamp"])
    seconds = [int(r["Timestamp"]) - start for r in rows]

    def series(column: str) -> list[float]:
        return [float(r[column]) if r[column] not in ("", "N/A") else float("nan") for r in rows]

    written = []
    fig, left = plt.subplots(figsize=(9, 4))
    left.plot(seconds, series("Requests/s"), label="requests/s")
    left.plot(seconds, series("Failures/s"), label="failures/s")
    left.set_xlabel("seconds")
    left.set_ylabel("per second")
    right = left.twinx()
    right.plot(seconds, series("User Count"), "k--", alpha=0.4, label="users")
    right.set_ylabel("users")
    left.legend(loc="upper left")
    left.set_title("Throughput")
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    written.append(out / "throughput.png")
    plt.close(fig)

    fig, axis = plt.subplots(figsize=(9, 4))
    for column in ("50%", "95%", "99%"):
        axis.plot(seconds, series(column), label=f"p{column.rstrip('%')}")
    axis.set_xlabel("seconds")
    axis.set_ylabel("ms")
    axis.set_yscale("log")
    axis.legend()
    axis.set_title("Latency percentiles (Locust's rolling window)")
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    written.append(out / "latency.png")
    plt.close(fig)
    return written


def gate(summary: dict[str, float], baseline: dict[str, float], tolerance: float) -> list[str]:
    problems = []
    if summary["requests_per_s"] < baseline["requests_per_s"] * (1 - tolerance):
        problems.append(f"throughput {summary['requests_per_s']} < {baseline['requests_per_s']} - {tolerance:.0%}")
    if summary["p95_ms"] > baseline["p95_ms"] * (1 + tolerance):
        problems.append(f"p95 {summary['p95_ms']} ms > {baseline['p95_ms']} ms + {tolerance:.0%}")
    if summary["failure_ratio"] > baseline["failure_ratio"] + 0.01:
        problems.append(f"failure ratio {summary['failure_ratio']} > {baseline['failure_ratio']} + 0.01")
    return problems


def start_local_stack(exits: ExitStack, out: Path, names_dir: Path) -> Stack:
    """The MediaWiki stand-in serving ``names_dir``, then Triton and the transformer, all on
    free ports and closed by ``exits``."""
    from devtools.fake_commons import FakeCommons

    files = {p.name: p.read_bytes() for p in sorted(names_dir.iterdir())}
    commons = exits.enter_context(FakeCommons(files))
    env = {**commons_environment(commons.api_url), **WITHOUT_SCORE_STORE}
    return exits.enter_context(Stack(env=env, logs=out))


def main(
    url: str = typer.Option("", help="Deployment to load; empty starts a local stack."),
    users: str = typer.Option("MixedUser", help="Locust user classes, comma-separated."),
    steps: str = typer.Option("2:20,8:20,16:30", help="users:seconds per step."),
    out: Path = typer.Option(Path("build/loadtest")),
    tolerance: float = typer.Option(0.25, help="Allowed relative regression."),
    update_baseline: bool = typer.Option(False, help="Store this run as the new baseline."),
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    payload_dir = out / "payloads"
    names = write_payloads(payload_dir)
    with ExitStack() as stack:
        target = url or start_local_stack(stack, out, payload_dir).url
        env = dict(
            os.environ,
            LOADTEST_PAYLOADS=str(payload_dir),
            LOADTEST_COMMONS_NAMES="" if url else "\n".join(names),
            LOADTEST_STEPS=steps,
        )
        command = [
            sys.executable, "-m", "locust", "-f", str(Path(__file__).with_name("locustfile.py")),
            "--headless", "--host", target, "--csv", str(out / "stats"), "--csv-full-history",
            "--html", str(out / "report.html"), "--only-summary", "--loglevel", "WARNING",
            *users.split(","),
        ]
        started = time.monotonic()
        subprocess.run(command, cwd=ROOT, env=env, check=False)
        elapsed = time.monotonic() - started

    summary = {**aggregate(out / "stats_stats.csv"), "users": users, "steps": steps,
               "seconds": round(elapsed, 1), "command": " ".join(sys.argv)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    for path in plot(out / "stats_stats_history.csv", out):
        typer.echo(f"wrote {path}")
    typer.echo(json.dumps(summary, indent=2))

    if update_baseline:
        BASELINE.write_text(json.dumps({k: summary[k] for k in GATED}, indent=2) + "\n")
        typer.echo(f"baseline updated: {BASELINE}")
        return
    problems = gate(summary, json.loads(BASELINE.read_text()), tolerance)
    if problems:
        typer.echo("REGRESSION: " + "; ".join(problems), err=True)
        raise typer.Exit(1)
    typer.echo(f"no regression against {BASELINE} (tolerance {tolerance:.0%})")


if __name__ == "__main__":
    typer.run(main)
