"""Watchers for the resource bounds a hostile request must respect: memory and the loop.

* `MemoryWatch` samples the resident memory of a process tree (the transformer; Triton
  and its Python-backend stubs) every 50 ms, so a test can assert how far it grew.
* `ReadinessWatch` sends a readiness GET every 100 ms and records how long each took, so
  a test can assert that the event loop never stalled while it ran.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable

import httpx
import psutil


def rss_bytes(pid: int) -> int:
    try:
        return psutil.Process(pid).memory_info().rss
    except psutil.NoSuchProcess:
        return 0


def tree(pids: Iterable[int]) -> list[int]:
    """``pids`` and all their descendants."""
    found: list[int] = []
    for pid in pids:
        try:
            found += [pid, *(child.pid for child in psutil.Process(pid).children(recursive=True))]
        except psutil.NoSuchProcess:
            continue
    return found


def group_members(pgid: int) -> list[int]:
    """The live processes in process group ``pgid``."""
    members = []
    for process in psutil.process_iter(["status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
        except ProcessLookupError:
            continue
    return members


class _Poller:
    interval_s = 0.1

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Poller:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.poll()
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def poll(self) -> None:
        raise NotImplementedError


class MemoryWatch(_Poller):
    """Peak resident memory of the trees under ``roots`` since `reset`."""

    interval_s = 0.05

    def __init__(self, roots: Iterable[int]) -> None:
        super().__init__()
        self.pids = tree(roots)
        self.baseline = self.current()
        self.peak = self.baseline
        self._lock = threading.Lock()

    def current(self) -> int:
        return sum(rss_bytes(pid) for pid in self.pids)

    def poll(self) -> None:
        now = self.current()
        with self._lock:
            self.peak = max(self.peak, now)

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


class ReadinessWatch(_Poller):
    """The longest readiness answer, in seconds, since `reset`; a failed or timed-out
    probe counts as its full wait."""

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        super().__init__()
        self._client = httpx.Client(timeout=timeout_s)
        self._url = url
        self._timeout_s = timeout_s
        self.longest = 0.0
        self.failures = 0
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.longest = 0.0
            self.failures = 0

    def poll(self) -> None:
        started = time.monotonic()
        try:
            ok = self._client.get(self._url).status_code == 200
        except httpx.HTTPError:
            ok = False
        took = time.monotonic() - started
        with self._lock:
            self.longest = max(self.longest, took)
            self.failures += not ok

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        self._client.close()
