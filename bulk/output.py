"""A backfill's per-title outputs, JSON Lines and CSV, appended as batches finish.

Only titles a run finished itself are written, after the job log has recorded them, so a
resumed run appends what the interrupted one had not and never repeats a row. A title scored
again with ``--retry-errors`` gets a second row: its new outcome, which supersedes the error.
"""

from __future__ import annotations

import csv
import json
import threading
from pathlib import Path
from typing import IO, Any

from bulk.service import Outcome

CSV_COLUMNS = (
    "title", "status", "model", "version", "sha1", "label", "score", "cached", "code", "message",
)  # fmt: skip


def row(outcome: Outcome, model: str) -> dict[str, Any]:
    """One output row: ``scores`` maps each label to its probability, the first being the
    model's target (``logo``, ``nsfw``)."""
    return {
        "title": outcome.title,
        "status": "done" if outcome.ok else "error",
        "model": model,
        "version": outcome.version,
        "sha1": outcome.sha1,
        "scores": outcome.scores,
        "cached": outcome.cached,
        "error": None if outcome.ok else {"code": outcome.code, "message": outcome.message},
    }


class Outputs:
    """Appends rows to a JSON Lines file and/or a CSV file (with a header when it starts
    one), flushed per batch; safe to call from several threads."""

    def __init__(self, jsonl: Path | None = None, csv_path: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._jsonl = _append(jsonl) if jsonl else None
        self._csv_file = _append(csv_path) if csv_path else None
        self._csv = csv.writer(self._csv_file) if self._csv_file else None
        if self._csv_file and self._csv and self._csv_file.tell() == 0:
            self._csv.writerow(CSV_COLUMNS)

    def write(self, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            if self._jsonl:
                self._jsonl.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
                self._jsonl.flush()
            if self._csv and self._csv_file:
                self._csv.writerows(_csv_row(r) for r in rows)
                self._csv_file.flush()

    def close(self) -> None:
        for handle in (self._jsonl, self._csv_file):
            if handle:
                handle.close()


def _append(path: Path) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "a", encoding="utf-8", newline="")


def _csv_row(r: dict[str, Any]) -> list[Any]:
    label, score = next(iter((r["scores"] or {}).items()), ("", ""))
    error = r["error"] or {}
    return [
        r["title"], r["status"], r["model"], r["version"], r["sha1"] or "", label, score,
        r["cached"], error.get("code", ""), error.get("message", ""),
    ]  # fmt: skip
