"""The score store seen from the event loop: scores already computed for the same bytes.

Files are keyed by SHA-1 (Commons' ``imageinfo`` ``sha1`` for a file looked up by name, the
bytes' own for inline data), model and model version, so a re-upload is never scored twice
and a new model version never reuses old scores.

The store is an optimisation, never a dependency: every call runs in threads of its own
with a timeout (lookups and writes in separate pools, so writes never delay lookups), and
an operation that fails or is slow is bypassed, counted, and left alone for
``SCORE_STORE_RETRY_S`` so that requests do not queue behind its timeouts. Writes run in
the background once Triton has answered, at most ``SCORE_STORE_MAX_PENDING_WRITES`` at once.
Each result is written with the moderation policy's decision on it (``MODERATION_POLICY``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from prometheus_client import Counter

from moderation.policy import Policy, load_policy
from store import Key, Record, ScoreStore, StoreError, open_store
from transformer.config import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

LOOKUPS = Counter(
    "transformer_score_store_lookups", "Items looked up in the score store", ["model", "result"]
)
BYPASSED = Counter(
    "transformer_score_store_bypassed",
    "Score store calls skipped or failed; the request went on without the store",
    ["operation", "reason"],
)


def inline_variant(version: str) -> str:
    """The key version of scores from bytes a client sent."""
    return f"{version};inline"


def commons_key(sha1: str, model: str, version: str) -> Key | None:
    """The key of a file Commons described, or None when its ``sha1`` is not one (a file
    mid-upload, a broken row): such a file is scored, not stored."""
    try:
        return Key(sha1.lower(), model, version)
    except ValueError:
        return None


class ScoreCache:
    def __init__(
        self,
        opener: Callable[[], ScoreStore],
        *,
        timeout_s: float,
        retry_s: float,
        max_pending_writes: int,
        threads: int = 2,
        policy: Policy | None = None,
    ) -> None:
        """``opener`` opens (and migrates) the store; it is called in a thread, again after
        ``retry_s`` if it failed. ``policy`` decides the state written with new scores."""
        self._opener = opener
        self.policy = policy
        self._store: ScoreStore | None = None
        self._opening = threading.Lock()
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.max_pending_writes = max_pending_writes
        self._pools = {
            operation: ThreadPoolExecutor(threads, thread_name_prefix=f"score-store-{operation}")
            for operation in ("lookup", "write")
        }
        self._resting_until = dict.fromkeys(self._pools, 0.0)
        self._writes: set[asyncio.Future[None]] = set()

    @classmethod
    def from_settings(cls, settings: Settings) -> ScoreCache | None:
        if not settings.score_store:
            return None
        url, timeout_s = settings.database_url, settings.score_store_timeout_s
        policy = load_policy(settings.moderation_policy)
        return cls(
            lambda: open_store(
                url, migrate=settings.score_store_migrate, statement_timeout_s=timeout_s
            ),
            timeout_s=timeout_s,
            retry_s=settings.score_store_retry_s,
            max_pending_writes=settings.score_store_max_pending_writes,
            policy=policy,
        )

    async def lookup(
        self, model: str, keys: Sequence[Key | None], labels: Sequence[str]
    ) -> list[Record | None]:
        """The stored record for each key, or None; all None while the store is unusable.
        A record without exactly ``labels`` (written by something else) is a miss."""
        wanted = [k for k in keys if k is not None]
        if not wanted:
            return [None] * len(keys)
        found = await self._call("lookup", lambda store: store.get(wanted))
        if found is None:
            return [None] * len(keys)
        usable = {k: r for k, r in found.items() if _scores_for(r, labels)}
        LOOKUPS.labels(model=model, result="hit").inc(len(usable))
        LOOKUPS.labels(model=model, result="miss").inc(len(wanted) - len(usable))
        return [usable.get(k) if k is not None else None for k in keys]

    def remember(self, records: Sequence[Record], titles: Sequence[tuple[str, str]] = ()) -> None:
        """Store new scores and the titles known files were seen under, in the background."""
        if not records and not titles:
            return
        if len(self._writes) >= self.max_pending_writes:
            BYPASSED.labels(operation="write", reason="too_many_pending").inc()
            return

        policy = self.policy

        def write(store: ScoreStore) -> None:
            if records:
                store.put(records if policy is None else [policy.stamp(r) for r in records])
            if titles:
                store.note_titles(titles)

        task = asyncio.ensure_future(self._call("write", write))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _call(self, operation: str, work: Callable[[ScoreStore], T]) -> T | None:
        loop = asyncio.get_running_loop()
        if loop.time() < self._resting_until[operation]:
            BYPASSED.labels(operation=operation, reason="resting").inc()
            return None
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._pools[operation], self._with_store, work),
                self.timeout_s,
            )
        except TimeoutError:
            reason = "timeout"
        except StoreError as exc:
            reason = "error"
            log.warning("score store %s failed: %s", operation, exc)
        except Exception:
            # A bug or bad data, not an outage; still never the request's failure.
            reason = "bug"
            log.exception("score store %s failed unexpectedly", operation)
        self._resting_until[operation] = loop.time() + self.retry_s
        BYPASSED.labels(operation=operation, reason=reason).inc()
        return None

    def _with_store(self, work: Callable[[ScoreStore], T]) -> T:
        with self._opening:
            if self._store is None:
                self._store = self._opener()
        return work(self._store)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        if self._store is not None:
            self._store.dispose()


def _scores_for(record: Record, labels: Sequence[str]) -> bool:
    scores = record.scores
    return (
        isinstance(scores, dict)
        and set(scores) == set(labels)
        and all(isinstance(v, float | int) and not isinstance(v, bool) for v in scores.values())
    )
