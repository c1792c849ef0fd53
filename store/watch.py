"""The upload watcher's durable state: where in the event stream it is, and the uploads
waiting to be scored (each due once Commons has had time to settle it).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update

from store.schema import WatchPending, WatchPosition, utc
from store.scores import ScoreStore, chunks, dialect_insert


class WatchState:
    def __init__(self, store: ScoreStore, source: str) -> None:
        self.store = store
        self.source = source

    @property
    def position(self) -> str | None:
        """The last saved stream position; None before the first."""
        query = select(WatchPosition.position).where(WatchPosition.source == self.source)
        with self.store.transaction(write=False) as conn:
            return conn.scalar(query)

    def enqueue(self, items: Iterable[tuple[str, datetime]], position: str | None) -> int:
        """Queue (title, due_at) pairs and save ``position`` (unless None) atomically, so a
        restart neither skips nor loses an event; returns how many titles were new.
        A title already queued keeps its due time."""
        due: dict[str, datetime] = {}
        for title, due_at in items:
            due.setdefault(title, utc(due_at))
        rows = [
            {"source": self.source, "title": title, "due_at": due_at}
            for title, due_at in sorted(due.items())
        ]
        added = 0
        with self.store.transaction() as conn:
            for chunk in chunks(rows):
                insert = dialect_insert(conn, WatchPending).values(chunk)
                inserted = insert.on_conflict_do_nothing().returning(WatchPending.title)
                added += len(conn.execute(inserted).all())
            if position is not None:
                now = datetime.now(UTC)
                insert = dialect_insert(conn, WatchPosition).values(
                    source=self.source, position=position, updated_at=now
                )
                conn.execute(
                    insert.on_conflict_do_update(
                        index_elements=[WatchPosition.source],
                        set_={"position": position, "updated_at": now},
                    )
                )
        return added

    def due(self, now: datetime, limit: int) -> list[str]:
        """Up to ``limit`` titles due at ``now``, the longest due first."""
        query = (
            select(WatchPending.title)
            .where(WatchPending.source == self.source, WatchPending.due_at <= utc(now))
            .order_by(WatchPending.due_at, WatchPending.title)
            .limit(limit)
        )
        with self.store.transaction(write=False) as conn:
            return list(conn.scalars(query))

    def claim(self, now: datetime, limit: int, lease: timedelta) -> list[str]:
        """Up to ``limit`` titles due at ``now``, the longest due first, claimed for
        ``lease``: their due time moves to ``now + lease``, so the other replicas sharing
        this queue pass them over, and they come due again if they are never removed (the
        claimant crashed, or their scoring failed upstream and is worth another try)."""
        now = utc(now)
        query = (
            select(WatchPending.title)
            .where(WatchPending.source == self.source, WatchPending.due_at <= now)
            .order_by(WatchPending.due_at, WatchPending.title)
            .limit(limit)
        )
        with self.store.transaction() as conn:
            # SQLite's write transaction already excludes other claimants; PostgreSQL's rows
            # are locked one by one, and rows another claimant holds are skipped, not awaited.
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            titles = list(conn.scalars(query))
            for chunk in chunks(titles):
                conn.execute(
                    update(WatchPending)
                    .where(WatchPending.source == self.source, WatchPending.title.in_(chunk))
                    .values(due_at=now + lease)
                )
        return titles

    def release(self, titles: Iterable[str], now: datetime) -> None:
        """Give claimed titles back, due at ``now``: their claimant could not try them."""
        with self.store.transaction() as conn:
            for chunk in chunks(sorted(set(titles))):
                conn.execute(
                    update(WatchPending)
                    .where(WatchPending.source == self.source, WatchPending.title.in_(chunk))
                    .values(due_at=utc(now))
                )

    def remove(self, titles: Iterable[str]) -> None:
        with self.store.transaction() as conn:
            for chunk in chunks(sorted(set(titles))):
                conn.execute(
                    delete(WatchPending).where(
                        WatchPending.source == self.source, WatchPending.title.in_(chunk)
                    )
                )

    def pending_count(self) -> int:
        query = select(func.count()).where(WatchPending.source == self.source)
        with self.store.transaction(write=False) as conn:
            return conn.scalar(query) or 0
