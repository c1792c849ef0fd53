"""A backfill's durable progress: the titles its enumeration found, in order, and what
became of each, so a restarted backfill resumes where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, bindparam, func, insert, select, update

from store.schema import BackfillItem, BackfillJob
from store.scores import ScoreStore, chunks, dialect_insert

PENDING, DONE, ERROR = "pending", "done", "error"


class JobLog:
    def __init__(self, store: ScoreStore, job: str) -> None:
        self.store = store
        self.job = job

    def start(self, spec: dict[str, Any]) -> bool:
        """Create the job; False when it exists with an equal spec (a resume).

        Raises ValueError when it exists with another spec: the saved enumeration belongs
        to that one.
        """
        spec = json.loads(json.dumps(spec))
        now = datetime.now(UTC)
        row = {
            "job": self.job,
            "spec": spec,
            "cursor": None,
            "enumerated": False,
            "next_seq": 0,
            "created_at": now,
        }
        with self.store.transaction() as conn:
            insert = dialect_insert(conn, BackfillJob).values(row).on_conflict_do_nothing()
            if conn.execute(insert.returning(BackfillJob.job)).first() is not None:
                return True
            saved = conn.scalar(select(BackfillJob.spec).where(BackfillJob.job == self.job))
        if saved != spec:
            raise ValueError(f"job {self.job!r} exists with spec {saved!r}, not {spec!r}")
        return False

    @property
    def cursor(self) -> dict[str, Any] | None:
        """Where the enumeration continues: what the last saved page handed on."""
        with self.store.transaction(write=False) as conn:
            return conn.scalar(select(BackfillJob.cursor).where(BackfillJob.job == self.job))

    @property
    def enumerated(self) -> bool:
        with self.store.transaction(write=False) as conn:
            done = conn.scalar(select(BackfillJob.enumerated).where(BackfillJob.job == self.job))
        return bool(done)

    def save_page(self, titles: list[str], cursor: dict[str, Any] | None, *, done: bool) -> int:
        """Add one enumerated page and the cursor after it, atomically; returns how many
        titles were new. Titles already in the job keep their place."""
        with self.store.transaction() as conn:
            # The row lock (SQLite's BEGIN IMMEDIATE, likewise) hands out seqs to one
            # writer at a time.
            next_seq = conn.scalar(
                select(BackfillJob.next_seq).where(BackfillJob.job == self.job).with_for_update()
            )
            if next_seq is None:
                raise ValueError(f"job {self.job!r} was never started")
            new = self._new_titles(conn, list(dict.fromkeys(titles)))
            now = datetime.now(UTC)
            rows = [
                {"job": self.job, "title": title, "seq": seq, "state": PENDING, "updated_at": now}
                for seq, title in enumerate(new, start=next_seq)
            ]
            for chunk in chunks(rows):
                conn.execute(insert(BackfillItem).values(chunk))
            conn.execute(
                update(BackfillJob)
                .where(BackfillJob.job == self.job)
                .values(cursor=cursor, enumerated=done, next_seq=next_seq + len(new))
            )
        return len(new)

    def _new_titles(self, conn: Connection, titles: list[str]) -> list[str]:
        known: set[str] = set()
        for chunk in chunks(titles):
            known.update(
                conn.scalars(
                    select(BackfillItem.title).where(
                        BackfillItem.job == self.job, BackfillItem.title.in_(chunk)
                    )
                )
            )
        return [title for title in titles if title not in known]

    def pending(self, limit: int, *, after_seq: int = -1) -> list[tuple[int, str]]:
        """Up to ``limit`` pending (seq, title), in enumeration order, after ``after_seq``."""
        query = (
            select(BackfillItem.seq, BackfillItem.title)
            .where(
                BackfillItem.job == self.job,
                BackfillItem.state == PENDING,
                BackfillItem.seq > after_seq,
            )
            .order_by(BackfillItem.seq)
            .limit(limit)
        )
        with self.store.transaction(write=False) as conn:
            return [(seq, title) for seq, title in conn.execute(query)]

    def finish(
        self, done: Iterable[tuple[str, str | None]], errors: Iterable[tuple[str, str, str]]
    ) -> None:
        """Record outcomes in one transaction: (title, sha1) scored, (title, code, message)
        failed."""
        now = datetime.now(UTC)
        done_rows = [{"t": title, "s": sha1, "c": None, "m": None} for title, sha1 in done]
        error_rows = [{"t": title, "s": None, "c": c, "m": m} for title, c, m in errors]
        with self.store.transaction() as conn:
            for state, rows in ((DONE, done_rows), (ERROR, error_rows)):
                if rows:
                    conn.execute(
                        update(BackfillItem)
                        .where(BackfillItem.job == self.job, BackfillItem.title == bindparam("t"))
                        .values(
                            state=state,
                            sha1=bindparam("s"),
                            code=bindparam("c"),
                            message=bindparam("m"),
                            updated_at=now,
                        ),
                        rows,
                    )

    def counts(self) -> dict[str, int]:
        query = (
            select(BackfillItem.state, func.count())
            .where(BackfillItem.job == self.job)
            .group_by(BackfillItem.state)
        )
        with self.store.transaction(write=False) as conn:
            counted = {state: n for state, n in conn.execute(query)}
        return {state: counted.get(state, 0) for state in (PENDING, DONE, ERROR)}

    def errors(self) -> list[tuple[str, str, str]]:
        """(title, code, message) of the failed items, in enumeration order."""
        query = (
            select(BackfillItem.title, BackfillItem.code, BackfillItem.message)
            .where(BackfillItem.job == self.job, BackfillItem.state == ERROR)
            .order_by(BackfillItem.seq)
        )
        with self.store.transaction(write=False) as conn:
            return [(title, code, message) for title, code, message in conn.execute(query)]

    def retry(self, codes: Iterable[str] | None = None) -> int:
        """Make failed items (those with ``codes``, or all) pending again; returns how many."""
        query = update(BackfillItem).where(
            BackfillItem.job == self.job, BackfillItem.state == ERROR
        )
        if codes is not None:
            query = query.where(BackfillItem.code.in_(list(codes)))
        with self.store.transaction() as conn:
            result = conn.execute(
                query.values(state=PENDING, code=None, message=None, updated_at=datetime.now(UTC))
            )
        return result.rowcount
