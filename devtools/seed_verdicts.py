"""Seed a score store with real logo-detection results and verdicts, then write the quality
report on them.

The scores are the logo model's own scores on its held-out test split
(``build/logo/scores.npz``, written by ``training.logo.train``) and the verdicts are those
items' true labels (``build/logo/manifest.jsonl``): a real measurement, not invented
numbers. Verdicts are given as reviewers would give them: to the top ``--verdicts`` items of
the audit sample (every item, in SHA-1 order: a uniform random sample of the split,
whatever its score), then to the top ``--queue-verdicts`` items left in the flagged queue
(the highest scores). Test items are not Commons files, so each gets a **pseudo SHA-1**,
the SHA-1 of ``"logo test item:" + its manifest id``; ``items.jsonl`` beside the report
maps the reviewed ones back.

By default everything goes to a store of its own (``build/quality-report/seed.sqlite3``,
recreated each run), never the service's.

    python -m devtools.seed_verdicts            # then read build/quality-report/seeded/report.md
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import typer
from sqlalchemy.engine import make_url

from moderation.policy import load_policy
from moderation.quality import MIN_PER_CLASS, TARGET_PRECISION, write_report
from preprocessing.specs import LOGO
from store import Key, Record, ScoreStore, open_store
from store.review import AUDIT, MAX_PAGE, QUEUE, QueueItem, Verdict, add_verdict, review_queue

REVIEWER = "seed:logo-test-labels"
# When the test split was scored, for the stored rows: any fixed time will do.
SCORED_AT = datetime(2026, 11, 30, tzinfo=UTC)


def pseudo_sha1(item_id: str) -> str:
    return hashlib.sha1(f"logo test item:{item_id}".encode()).hexdigest()


def test_split(build: Path) -> list[dict]:
    """The test items with their score, label and kind, in the order the scores list them."""
    with np.load(build / "scores.npz") as saved:
        ids, scores = saved["test_ids"].tolist(), saved["test"].astype(float)
    manifest = {}
    with (build / "manifest.jsonl").open() as lines:
        for line in lines:
            row = json.loads(line)
            manifest[row["id"]] = row
    items = []
    for item_id, score in zip(ids, scores, strict=True):
        row = manifest[item_id]
        if row["split"] != "test":
            raise ValueError(
                f"{item_id} is in scores.npz's test split but the manifest's {row['split']}"
            )
        items.append(
            {
                "id": item_id,
                "score": float(score),
                "label": int(row["label"]),
                "kind": row["kind"],
                "sha1": pseudo_sha1(item_id),
            }
        )
    return items


def top(store: ScoreStore, count: int, *, audit: bool) -> list[QueueItem]:
    """The first ``count`` items awaiting a verdict in the audit sample or flagged queue."""
    found: list[QueueItem] = []
    while len(found) < count:
        page = review_queue(
            store, model=LOGO.name, audit=audit, offset=len(found), limit=MAX_PAGE
        ).items
        if not page:
            break
        found += page
    return found[:count]


def main(
    build: Path = typer.Option(
        Path("build/logo"), help="The logo build: scores.npz, manifest.jsonl."
    ),
    database_url: str = typer.Option(
        "", help="Store to seed; default a fresh SQLite file in --out's parent."
    ),
    out: Path = typer.Option(Path("build/quality-report/seeded"), help="Report directory."),
    verdicts: int = typer.Option(
        300, min=1, help="How many items of the audit sample get a verdict."
    ),
    queue_verdicts: int = typer.Option(
        100, min=0, help="How many items of the flagged queue get one after them."
    ),
    target_precision: float = typer.Option(TARGET_PRECISION),
    min_per_class: int = typer.Option(MIN_PER_CLASS, min=1),
) -> None:
    items = test_split(build)
    if verdicts + queue_verdicts > len(items):
        raise typer.BadParameter(
            f"the test split has only {len(items)} items", param_hint="--verdicts"
        )
    by_sha1 = {item["sha1"]: item for item in items}
    if not database_url:
        path = out.parent / "seed.sqlite3"
        for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            stale.unlink(missing_ok=True)
        database_url = f"sqlite:///{path}"
    policy = load_policy()
    version = str(LOGO.version)
    store = open_store(database_url)
    try:
        store.put(
            [
                policy.stamp(
                    Record(
                        Key(item["sha1"], LOGO.name, version),
                        {"logo": item["score"], "out_of_domain": 1.0 - item["score"]},
                        mime="image/png",
                        scored_at=SCORED_AT,
                    )
                )
                for item in items
            ]
        )
        chosen: list[dict] = []
        for sample, count in ((AUDIT, verdicts), (QUEUE, queue_verdicts)):
            for queued in top(store, count, audit=sample == AUDIT):
                item = by_sha1[queued.sha1]
                add_verdict(
                    store,
                    Verdict(
                        item["sha1"],
                        LOGO.name,
                        "confirmed" if item["label"] == 1 else "rejected",
                        REVIEWER,
                        SCORED_AT + timedelta(seconds=len(chosen)),
                        note=f"true label of logo test item {item['id']} (kind {item['kind']})",
                        sample=sample,
                    ),
                )
                chosen.append({**item, "sample": sample})
        report = write_report(
            store, policy, out, target=target_precision, min_per_class=min_per_class
        )
    finally:
        store.dispose()
    with (out / "items.jsonl").open("w") as mapping:
        for item in chosen:
            mapping.write(json.dumps(item) + "\n")
    where = make_url(database_url).render_as_string(hide_password=True)
    typer.echo(f"{len(items)} results and {len(chosen)} verdicts in {where}")
    typer.echo(f"report: {out / 'report.md'}")
    for result in report["models"]:
        for state, row in result["at_policy_thresholds"].items():
            typer.echo(
                f"{result['model']} {result['model_version']} {state} ≥ {row['threshold']:g}, "
                f"audit sample: precision {_fmt(row['precision'])}, recall "
                f"{_fmt(row['recall'])}, F1 {_fmt(row['f1'])}"
            )
        for state, row in result["among_reviewed_flagged"].items():
            typer.echo(
                f"{result['model']} {result['model_version']} {state} ≥ {row['threshold']:g}, "
                f"among reviewed flagged files (biased towards high scores): precision "
                f"{_fmt(row['precision'])} of {row['reviewed']}"
            )


def _fmt(value: float | None) -> str:
    return "undefined" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    typer.run(main)
