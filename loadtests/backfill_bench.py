"""``python -m loadtests.backfill_bench``: how close `commons-backfill` comes to the scoring
service's capacity, and whether an interrupted backfill resumes without loss or duplicates.

On the real local stack (Triton and the transformer, its score store off so that every
title is scored, behind the MediaWiki stand-in hosting distinct generated images):

(a) capacity: a closed loop of ``--concurrency`` POSTs of 50 titles by name, for
    ``--seconds``, over titles the backfill never asks for; measured before and again after
    (b), since on a shared machine the capacity drifts;
(b) backfill: ``commons-backfill`` of a category of ``--titles`` files at the same
    concurrency, interrupted with SIGINT at ``--interrupt-at`` of the way, then resumed by
    the same command.

Reports titles/s of each and their ratio (the backfill's over both runs' wall time, process
starts included, against the mean of the two capacity measurements), lost titles (never
done) and duplicates (titles done twice, JSON Lines rows repeated). Writes
``<out>/summary.json``; exits 1 when a title is lost or duplicated or the ratio is under
``--min-ratio``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from contextlib import ExitStack
from itertools import cycle
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import typer

from bulk.backfill import Source, job_name
from devtools.fake_commons import FakeCommons
from stack import Stack
from stack.launcher import WITHOUT_SCORE_STORE, commons_environment
from store import JobLog, open_store

ROOT = Path(__file__).resolve().parent.parent
CATEGORY = "Backfill bench"
BATCH = 50
DRIVER_TITLES = 6_000


async def capacity(
    url: str, model: str, titles: list[str], concurrency: int, seconds: float
) -> dict[str, Any]:
    """Titles/s of a closed loop: ``concurrency`` workers, each POSTing the next 50 titles as
    soon as its last answer came, until ``seconds`` have passed."""
    batches = cycle([titles[i : i + BATCH] for i in range(0, len(titles), BATCH)])
    counts: Counter[str] = Counter()
    endpoint = f"{url}/v1/models/{model}:predict"
    async with httpx.AsyncClient(timeout=120) as client:

        async def post() -> None:
            body = {"instances": [{"filename": title} for title in next(batches)]}
            response = await client.post(endpoint, json=body)
            counts["requests"] += 1
            predictions = response.json().get("predictions", []) if response.is_success else []
            counts["scored"] += sum("error" not in p for p in predictions)
            counts["failed"] += BATCH - sum("error" not in p for p in predictions)

        await asyncio.gather(*(post() for _ in range(concurrency)))  # warm-up, not counted
        counts.clear()
        started = time.monotonic()

        async def worker() -> None:
            while time.monotonic() - started < seconds:
                await post()

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    return {
        **counts,
        "seconds": round(elapsed, 1),
        "titles_per_s": round(counts["scored"] / elapsed, 1),
    }


def backfill_command(
    stack: Stack, commons: FakeCommons, out: Path, model: str, concurrency: int, run: int
) -> list[str]:
    return [
        sys.executable, "-m", "bulk.backfill", "--category", CATEGORY, "--model", model,
        "--service", stack.url, "--commons-api", commons.api_url,
        "--database-url", f"sqlite:///{out / 'backfill.sqlite3'}",
        "--concurrency", str(concurrency), "--jsonl", str(out / "backfill.jsonl"),
        "--summary-json", str(out / f"backfill-run{run}.json"),
    ]  # fmt: skip


def run_backfill(
    command: list[str], log: Path, interrupt_after: int | None, jsonl: Path
) -> tuple[int, float]:
    """Run one backfill; with ``interrupt_after``, SIGINT it once its output holds that many
    rows. Its exit status and wall time."""
    started = time.monotonic()
    with open(log, "a") as output:
        process = subprocess.Popen(command, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
        if interrupt_after is not None:
            while process.poll() is None and _lines(jsonl) < interrupt_after:
                time.sleep(0.1)
            process.send_signal(signal.SIGINT)
        process.wait()
    return process.returncode, time.monotonic() - started


def _lines(path: Path) -> int:
    try:
        with open(path, "rb") as handle:
            return sum(1 for _ in handle)
    except FileNotFoundError:
        return 0


def check(out: Path, titles: list[str], model: str) -> dict[str, int]:
    """Lost and duplicated titles, from the job log and the JSON Lines output."""
    rows = Counter(json.loads(line)["title"] for line in (out / "backfill.jsonl").open())
    store = open_store(f"sqlite:///{out / 'backfill.sqlite3'}")
    try:
        counts = JobLog(store, job_name(Source(category=CATEGORY), model, (0, 1))).counts()
        with store.transaction(write=False) as conn:
            done = {
                title
                for (title,) in conn.exec_driver_sql(
                    "SELECT title FROM backfill_items WHERE state = 'done'"
                )
            }
            stored = conn.exec_driver_sql(
                "SELECT count(*) FROM scores WHERE model = ?", (model,)
            ).scalar_one()
    finally:
        store.dispose()
    expected = set(titles)
    return {
        "done": counts["done"],
        "errors": counts["error"],
        "pending": counts["pending"],
        "lost": len(expected - done),
        "lost_from_output": len(expected - set(rows)),
        "duplicates": sum(n - 1 for n in rows.values()),
        "unexpected": len(set(rows) - expected),
        "scores_stored": stored,
    }


def main(
    concurrency: int = typer.Option(4, min=1, help="Requests in flight, for both."),
    titles: int = typer.Option(10_000, min=BATCH, help="Files the backfill scores."),
    seconds: float = typer.Option(30.0, help="Length of each capacity measurement."),
    interrupt_at: float = typer.Option(0.4, help="Fraction done when SIGINT is sent."),
    model: str = typer.Option("logo-detection"),
    min_ratio: float = typer.Option(0.9, help="Least backfill/capacity ratio that passes."),
    out: Path = typer.Option(Path("build/backfill-bench")),
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in ("backfill.jsonl", "backfill.sqlite3", "backfill.log"):
        (out / name).unlink(missing_ok=True)
    with ExitStack() as exits:
        commons = exits.enter_context(FakeCommons({}))
        started = time.monotonic()
        bench_titles = commons.add_many(titles, prefix="Backfill", categories=[CATEGORY])
        # Two halves, one per capacity measurement, each more than one takes.
        driver_titles = commons.add_many(DRIVER_TITLES, prefix="Capacity")
        registered = titles + DRIVER_TITLES
        typer.echo(f"registered {registered} files in {time.monotonic() - started:.1f} s")
        env = {**commons_environment(commons.api_url), **WITHOUT_SCORE_STORE}
        stack = exits.enter_context(Stack(env=env, logs=out / "stack"))
        typer.echo(f"stack ready at {stack.url}; capacity for {seconds:g} s")
        half = len(driver_titles) // 2
        before = asyncio.run(capacity(stack.url, model, driver_titles[:half], concurrency, seconds))
        typer.echo(f"capacity before: {json.dumps(before)}")

        runs = []
        for run, interrupt in enumerate((round(titles * interrupt_at), None), start=1):
            command = backfill_command(stack, commons, out, model, concurrency, run)
            status, wall = run_backfill(
                command, out / "backfill.log", interrupt, out / "backfill.jsonl"
            )
            summary = json.loads((out / f"backfill-run{run}.json").read_text())
            runs.append({"status": status, "wall_s": round(wall, 1), "summary": summary})
            typer.echo(f"backfill run {run}: exit {status}, {wall:.1f} s, done {summary['done']}")
        after = asyncio.run(capacity(stack.url, model, driver_titles[half:], concurrency, seconds))
        typer.echo(f"capacity after: {json.dumps(after)}")
        fetched = Counter(r.path for r in commons.file_requests)
        # A title scored twice by the service is a file downloaded twice from the stand-in.
        refetched = sum(fetched[urlsplit(commons.original_url(t)).path] > 1 for t in bench_titles)

    result = check(out, bench_titles, model)
    wall = sum(r["wall_s"] for r in runs)
    rate = round(result["done"] / wall, 1)
    report = {
        "command": " ".join(sys.argv),
        "cpus": os.cpu_count(),
        "concurrency": concurrency,
        "capacity": {
            "before": before,
            "after": after,
            "titles_per_s": round((before["titles_per_s"] + after["titles_per_s"]) / 2, 1),
        },
        "backfill": {
            "titles": titles,
            "wall_s": round(wall, 1),
            "titles_per_s": rate,
            "runs": runs,
        },
        "ratio": round(rate * 2 / (before["titles_per_s"] + after["titles_per_s"]), 3),
        **result,
        "backfill_files_fetched_twice": refetched,
    }
    (out / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    typer.echo(json.dumps({k: v for k, v in report.items() if k != "backfill"}, indent=2))
    problems = [
        *(["lost titles"] if result["lost"] or result["lost_from_output"] else []),
        *(["duplicates"] if result["duplicates"] else []),
        *([f"ratio {report['ratio']} < {min_ratio}"] if report["ratio"] < min_ratio else []),
        *([f"run {i} exited {r['status']}"] for i, r in enumerate(runs, 1)
          if r["status"] != (130 if i == 1 else 0)),
    ]  # fmt: skip
    if problems:
        typer.echo("FAILED: " + "; ".join(problems), err=True)
        raise typer.Exit(1)
    typer.echo(f"wrote {out / 'summary.json'}")


if __name__ == "__main__":
    typer.run(main)
