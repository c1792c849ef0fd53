"""`make bench`, score store part: by-name requests answered from the store against the same
requests scored from scratch, side by side on one stack, for each image model.

Starts Triton, a transformer with the store on (a fresh SQLite file) and the MediaWiki
stand-in hosting distinct 1024×768 JPEGs. Then, per model, one request at a time:

1. ``--samples`` single-title requests for files never seen (misses: lookup, download,
   decode, Triton, store write), then the same titles again (hits: lookup, store read);
2. one request of 50 new titles, then the same 50 again, counting the MediaWiki API calls
   and file downloads the second one causes.

Writes ``<out>`` (JSON) and exits 1 unless, for every model, the cached 50-title request is
at least ``--min-ratio`` times faster than the same request scored from scratch, made
exactly one API call and no download. The single-title ratio is reported beside it: there
a hit and a miss share a fixed cost (HTTP, KServe, the Commons lookup) of a few ms.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import httpx
import typer

from devtools import images
from devtools.fake_commons import FakeCommons
from preprocessing.specs import SPECS
from stack import Stack
from stack.launcher import commons_environment

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 5
BATCH = 50


def post(client: httpx.Client, model: str, titles: list[str]) -> tuple[float, list[dict]]:
    start = time.perf_counter()
    answer = client.post(
        f"/v1/models/{model}:predict", json={"instances": [{"filename": t} for t in titles]}
    )
    elapsed = (time.perf_counter() - start) * 1000
    answer.raise_for_status()
    predictions = answer.json()["predictions"]
    failed = [p for p in predictions if "error" in p]
    if failed:
        raise RuntimeError(f"item errors: {failed[:2]}")
    return elapsed, predictions


def settle(client: httpx.Client, model: str, titles: list[str], timeout_s: float = 10.0) -> None:
    """Store writes follow the response: ask until every title comes back cached."""
    deadline = time.monotonic() + timeout_s
    while not all(p["cached"] for p in post(client, model, titles)[1]):
        if time.monotonic() > deadline:
            raise RuntimeError("scores did not reach the store")
        time.sleep(0.2)


def measure(client: httpx.Client, commons: FakeCommons, model: str, titles: list[str],
            samples: int) -> dict:
    warmup, singles, batch = titles[:WARMUP], titles[WARMUP:WARMUP + samples], titles[-BATCH:]
    for title in warmup:
        post(client, model, [title])
    misses = [post(client, model, [title])[0] for title in singles]
    settle(client, model, singles)
    hits = []
    for title in singles:
        elapsed, (prediction,) = post(client, model, [title])
        if not prediction["cached"]:
            raise RuntimeError(f"{title} was not answered from the store")
        hits.append(elapsed)

    batch_miss, _ = post(client, model, batch)
    settle(client, model, batch)
    api, downloads = len(commons.api_requests), len(commons.file_requests)
    batch_hit, predictions = post(client, model, batch)
    miss_ms, hit_ms = statistics.median(misses), statistics.median(hits)
    return {
        "miss_median_ms": round(miss_ms, 2),
        "hit_median_ms": round(hit_ms, 2),
        "miss_p90_ms": round(statistics.quantiles(misses, n=10)[-1], 2),
        "hit_p90_ms": round(statistics.quantiles(hits, n=10)[-1], 2),
        "miss_over_hit": round(miss_ms / hit_ms, 2),
        "batch_of_50": {
            "miss_ms": round(batch_miss, 1),
            "hit_ms": round(batch_hit, 1),
            "miss_over_hit": round(batch_miss / batch_hit, 1),
            "cached_items": sum(p["cached"] for p in predictions),
            "api_calls": len(commons.api_requests) - api,
            "downloads": len(commons.file_requests) - downloads,
        },
    }


def main(
    samples: int = typer.Option(30, help="Single-title misses and hits to time, per model."),
    min_ratio: float = typer.Option(10.0, help="Least acceptable miss/hit latency ratio."),
    out: Path = typer.Option(Path("build/bench/store.json")),
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    database = out.parent / "store.sqlite3"
    database.unlink(missing_ok=True)
    count = WARMUP + samples + BATCH
    files = {
        f"Bench store {i}.jpg": images.encode(images.photo(1024, 768, 5000 + i), "JPEG", quality=90)
        for i in range(count)
    }
    titles = list(files)
    with FakeCommons(files) as commons, Stack(
        env={**commons_environment(commons.api_url), "DATABASE_URL": f"sqlite:///{database}"},
        logs=out.parent,
    ) as stack, httpx.Client(base_url=stack.url, timeout=120) as client:
        # The same files for each model: the store keys them apart by model.
        models = {spec.name: measure(client, commons, spec.name, titles, samples) for spec in SPECS}

    summary = {
        "command": " ".join(sys.argv),
        "image": "1024x768 JPEG by name",
        "samples": samples,
        "models": models,
    }
    problems = []
    for model, figures in models.items():
        batch = figures["batch_of_50"]
        if batch["miss_over_hit"] < min_ratio:
            problems.append(f"{model}: 50 cached titles are only {batch['miss_over_hit']}x faster")
        if batch["api_calls"] != 1 or batch["downloads"] or batch["cached_items"] != BATCH:
            problems.append(f"{model}: the cached 50-title request: {batch}")
    summary["problems"] = problems
    out.write_text(json.dumps(summary, indent=2))
    typer.echo(json.dumps(summary, indent=2))
    if problems:
        typer.echo("STORE BENCH FAILED: " + "; ".join(problems), err=True)
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
