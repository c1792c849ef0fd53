"""Watchers for the resource bounds a hostile request must respect: memory and the loop.

* `MemoryWatch` samples the resident memory of a process tree (the transformer; Triton
  and its Python-backend stubs) every 50 ms, so a test can assert how far it grew.
* `ReadinessWatch` sends a readiness GET every 100 ms and records how long each took, so
  a test can assert that the event loop never stalled while it ran.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from pathlib import Path

import httpx


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def tree(pids: Iterable[int]) -> list[int]:
    """``pids`` and all their descendants."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: list[int] = []
    pending = list(pids)
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, ()))
    return found


def group_members(pgid: int) -> list[int]:
    """The live processes in process group ``pgid``."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
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
