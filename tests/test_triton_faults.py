"""Triton killed or frozen under steady load: fast 503/504 answers, then recovery on its own.

A supervised Triton (restarted like the kubelet would) and a transformer run on their own
free ports, apart from the session stack the other tests share, since these tests break
Triton on purpose. Only inline images are sent, so no Commons is needed.
"""

from __future__ import annotations

import base64
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from devtools import images
from predictor.triton_server import TritonPorts, TritonSupervisor
from stack import Stack, free_port
from stack.launcher import WITHOUT_SCORE_STORE
from tests.resources import group_members

LOGO = "/v1/models/logo-detection:predict"
CLIENTS = 4
# Every answer, error or not, comes within this: an outage must never look like a hang.
ANSWER_WITHIN_S = 5.0
# The transformer's deadline for Triton, lowered from 15 s to keep the stall test short.
TRITON_TIMEOUT_S = 5.0
RECOVERY_WITHIN_S = 30.0
STALL_S = 20.0


@dataclass(frozen=True)
class Outcome:
    sent: float
    elapsed_s: float
    status: int | None  # None: no HTTP answer at all
    retry_after: str | None


class SteadyLoad:
    """``CLIENTS`` threads each posting one logo request after another until stopped."""

    def __init__(self, url: str) -> None:
        data = images.encode(images.photo(320, 240, 21), "JPEG", quality=90)
        self.body = {"instances": [{"filename": "x.jpg", "image": base64.b64encode(data).decode()}]}
        self.url = url + LOGO
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(CLIENTS)]

    def _run(self) -> None:
        # Generous client timeout: a hang is then measured as a long elapsed time.
        with httpx.Client(timeout=60) as http:
            while not self._stop.is_set():
                sent = time.monotonic()
                try:
                    response = http.post(self.url, json=self.body)
                    status, retry_after = response.status_code, response.headers.get("retry-after")
                except httpx.HTTPError:
                    status, retry_after = None, None
                with self._lock:
                    self.outcomes.append(
                        Outcome(sent, time.monotonic() - sent, status, retry_after)
                    )

    def since(self, start: float) -> list[Outcome]:
        with self._lock:
            return [o for o in self.outcomes if o.sent >= start]

    def __enter__(self) -> SteadyLoad:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=70)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own: these tests kill and freeze its Triton."""
    env = {
        # Nothing listens there: any Commons lookup would fail, and none is made.
        "COMMONS_API_URL": f"http://127.0.0.1:{free_port()}/w/api.php",
        "TRITON_TIMEOUT_S": str(TRITON_TIMEOUT_S),
        **WITHOUT_SCORE_STORE,
    }
    with Stack(env=env, logs=tmp_path_factory.mktemp("faults")) as served:
        yield served


@pytest.fixture(scope="module")
def supervised(faulty: Stack) -> TritonSupervisor:
    assert faulty.triton is not None
    return faulty.triton


@dataclass(frozen=True)
class Transformer:
    url: str
    process: subprocess.Popen


@pytest.fixture(scope="module")
def transformer(faulty: Stack) -> Transformer:
    assert faulty.transformer is not None
    return Transformer(faulty.url, faulty.transformer)


def scored(load: SteadyLoad, since: float) -> float | None:
    """When the first request sent after ``since`` was scored, if one was."""
    done = [o.sent + o.elapsed_s for o in load.since(since) if o.status == 200]
    return min(done, default=None)


def pending_requests(ports: TritonPorts) -> float:
    """Requests Triton holds in its queues, from its Prometheus metrics."""
    url = f"http://127.0.0.1:{ports.metrics}/metrics"
    with urllib.request.urlopen(url, timeout=2) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("nv_inference_pending_request_count{")
    )


def wait_ready(url: str, seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if httpx.get(f"{url}/v1/models/logo-detection", timeout=5).status_code == 200:
            return True
        time.sleep(0.2)
    return False


def probe_readiness(url: str, seconds: float) -> list[tuple[float, bool]]:
    """(seconds taken, ready) of a readiness GET every 0.5 s for ``seconds``."""
    probes = []
    end = time.monotonic() + seconds
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < end:
            started = time.monotonic()
            ready = client.get(f"{url}/v1/models/logo-detection").status_code == 200
            probes.append((time.monotonic() - started, ready))
            time.sleep(0.5)
    return probes


def assert_fast_answers(outcomes: list[Outcome], limit_s: float) -> None:
    slow = [o for o in outcomes if o.elapsed_s > limit_s]
    assert not slow, f"{len(slow)} answers slower than {limit_s} s: {slow[:3]}"


def test_killed_triton_answers_503_then_recovers(
    supervised: TritonSupervisor, transformer: Transformer
) -> None:
    with SteadyLoad(transformer.url) as load:
        time.sleep(2)
        assert scored(load, 0.0) is not None, f"nothing scored before the kill: {load.outcomes[:3]}"
        killed = supervised.process
        killed_at = time.monotonic()
        killed.send_signal(signal.SIGKILL)
        ready_at = None
        while (recovered_at := scored(load, killed_at)) is None:
            assert time.monotonic() - killed_at < RECOVERY_WITHIN_S + 30, "no recovery at all"
            if ready_at is None and supervised.process is not killed and supervised.ready():
                ready_at = time.monotonic()
            time.sleep(0.1)
        time.sleep(2)
    recovery_s = recovered_at - killed_at
    during = [o for o in load.since(killed_at) if o.sent < recovered_at]
    print(
        f"\nscoring recovered {recovery_s:.1f} s after SIGKILL "
        f"(the new Triton was ready after {(ready_at or recovered_at) - killed_at:.1f} s); "
        f"{sum(o.status == 503 for o in during)} answers of 503 meanwhile, "
        f"{supervised.restarts} restart(s)"
    )
    assert transformer.process.poll() is None, "the transformer exited"
    assert supervised.process.pid != killed.pid and supervised.restarts >= 1
    assert not group_members(killed.pid), "the killed server's backend stubs outlived it"
    statuses = {o.status for o in load.outcomes}
    assert statuses <= {200, 503}, f"statuses seen: {statuses}"
    assert any(o.status == 503 for o in during), "the outage went unnoticed"
    assert all(
        o.retry_after is not None and int(o.retry_after) >= 1
        for o in load.outcomes
        if o.status == 503
    ), "a 503 without Retry-After"
    assert_fast_answers(load.outcomes, ANSWER_WITHIN_S)
    assert recovery_s <= RECOVERY_WITHIN_S
    assert wait_ready(transformer.url, 10), "readiness did not come back with Triton"


def test_stalled_triton_answers_504_and_leaves_no_backlog(
    supervised: TritonSupervisor, transformer: Transformer
) -> None:
    supervised.wait_ready(timeout_s=60)
    frozen = supervised.process
    with SteadyLoad(transformer.url) as load:
        time.sleep(1)
        stopped_at = time.monotonic()
        frozen.send_signal(signal.SIGSTOP)
        try:
            probes = probe_readiness(transformer.url, STALL_S)
        finally:
            frozen.send_signal(signal.SIGCONT)
        resumed_at = time.monotonic()
    stalled = [o for o in load.since(stopped_at) if o.sent + TRITON_TIMEOUT_S < resumed_at]
    print(
        f"\nduring the {STALL_S:.0f} s stall: "
        f"{sorted((o.status, round(o.elapsed_s, 1)) for o in stalled)}"
    )
    # A frozen Triton times calls out (504) until the gRPC keepalive declares it dead
    # (ping interval + ping timeout, transformer.scoring); from then on calls fail at once
    # (503 + Retry-After). Never anything else, and never a hang.
    assert 504 in {o.status for o in stalled}, [o.status for o in stalled]
    assert all(
        o.status == 504 or (o.status == 503 and o.retry_after is not None) for o in stalled
    ), [(o.status, o.retry_after) for o in stalled]
    # Readiness answers at once from its cache and turns false while Triton is frozen, so
    # Kubernetes stops routing to the pod; it never waits on the frozen Triton itself.
    assert max(took for took, _ in probes) < 0.5, probes
    assert not probes[-1][1], "readiness still true after the whole stall"
    assert_fast_answers(load.outcomes, TRITON_TIMEOUT_S + 2)

    started = time.monotonic()
    fresh = httpx.post(transformer.url + LOGO, json=load.body, timeout=60)
    fresh_s = time.monotonic() - started
    print(f"first request after SIGCONT answered in {fresh_s:.2f} s")
    assert fresh.status_code == 200, fresh.text
    assert fresh_s < 2.0

    deadline = time.monotonic() + 5
    while (pending := pending_requests(supervised.ports)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pending == 0, f"{pending} requests still queued in Triton"
    assert supervised.process.pid == frozen.pid, "a stall must not restart Triton"
    assert transformer.process.poll() is None
