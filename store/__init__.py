"""The score store: model scores keyed by file SHA-1, plus the durable state of the
backfill and the upload watcher, on SQLite (embedded) or PostgreSQL.

The bottom layer: it imports nothing from the rest of the repository.
"""

from store.jobs import JobLog
from store.scores import Key, Record, ScoreStore, StoreError, open_store
from store.watch import WatchState

__all__ = ["JobLog", "Key", "Record", "ScoreStore", "StoreError", "WatchState", "open_store"]
