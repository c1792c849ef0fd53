"""Run the ``tritonserver`` binary that ships in the ``nvidia-pytriton`` wheel.

Only the binary and its Python backend are used, as a plain subprocess on our own model
repository; PyTriton's Python API is not.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class TritonPorts:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002
    # Loopback for the embedded stack; a pod binds all interfaces.
    address: str = "127.0.0.1"


def pytriton_root() -> Path:
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("nvidia-pytriton is not installed: run `make venv`")
    return Path(next(iter(spec.submodule_search_locations)))


def binary() -> Path:
    return pytriton_root() / "tritonserver" / "bin" / "tritonserver"


def backend_directory(build_dir: Path) -> Path:
    """A backends folder whose ``python/`` holds the stub for the running interpreter.

    The wheel keeps one stub per Python version apart from the backend library;
    Triton expects all three files side by side.
    """
    root = pytriton_root() / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    sources = {
        "libtriton_python.so": root / "backends" / "python" / "libtriton_python.so",
        "triton_python_backend_utils.py": root / "backends" / "python" / "triton_python_backend_utils.py",
        "triton_python_backend_stub": root / "python_backend_stubs" / version / "triton_python_backend_stub",
    }
    target = build_dir / "triton-backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    for name, source in sources.items():
        if not source.exists():
            raise RuntimeError(f"nvidia-pytriton has no {source}; Python {version} unsupported?")
        link = target / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(source)
    return target.parent


def environment() -> dict[str, str]:
    """The wheel's bundled libraries, and this virtualenv first on PATH so the Python
    backend's stub imports onnxruntime and numpy from it."""
    env = dict(os.environ)
    libs = pytriton_root().parent / "nvidia_pytriton.libs"
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libs), env.get("LD_LIBRARY_PATH")]))
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["VIRTUAL_ENV"] = sys.prefix
    # A fixed mmap threshold sends large tensors to mmap, returned to the kernel on free,
    # instead of the heap, where they fragment (glibc raises the threshold after the first
    # free); two arenas bound per-thread slack. The transformer does the same in-process.
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "262144")
    env.setdefault("MALLOC_ARENA_MAX", "2")
    return env


def command(model_repository: Path, backends: Path, ports: TritonPorts) -> list[str]:
    return [
        str(binary()),
        f"--model-repository={model_repository}",
        f"--backend-directory={backends}",
        f"--http-address={ports.address}",
        f"--http-port={ports.http}",
        f"--grpc-address={ports.address}",
        f"--grpc-port={ports.grpc}",
        f"--metrics-address={ports.address}",
        f"--metrics-port={ports.metrics}",
        "--allow-metrics=true",
        "--allow-gpu-metrics=false",
        "--strict-readiness=true",
        "--exit-on-error=true",
        "--model-control-mode=none",
        "--log-verbose=0",
        # The transformer pings every 10 s, idle or not, to notice a dead server; by
        # default Triton takes pings more often than every 5 min as abuse and hangs up.
        "--grpc-keepalive-permit-without-calls=1",
        "--grpc-http2-min-recv-ping-interval-without-data=5000",
        # A 32-image uint8 batch is 4.8 MB; start the shared-memory arena above that.
        "--backend-config=python,shm-default-byte-size=16777216",
        "--backend-config=python,shm-growth-byte-size=16777216",
    ]


def die_with_parent() -> None:
    # If the launcher is killed outright, the kernel stops Triton too: no orphans.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class TritonProcess:
    """A ``tritonserver`` child process: start, readiness, clean shutdown (`TritonSupervisor` drives it)."""

    def __init__(
        self,
        model_repository: Path,
        build_dir: Path,
        ports: TritonPorts = TritonPorts(),
        output: IO[bytes] | int | None = None,
    ) -> None:
        """``output``: where Triton's log goes (a file, ``subprocess.PIPE``, or inherited)."""
        self.model_repository = model_repository.resolve()
        self.build_dir = build_dir.resolve()
        self.ports = ports
        self.output = output
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        argv = command(self.model_repository, backend_directory(self.build_dir), self.ports)
        self.process = subprocess.Popen(
            argv,
            env=environment(),
            stdout=self.output,
            stderr=subprocess.STDOUT if self.output is not None else None,
            # Own session: a terminal's Ctrl-C reaches only the launcher, which stops
            # the transformer before Triton.
            start_new_session=True,
            preexec_fn=die_with_parent,
        )

    def ready(self) -> bool:
        url = f"http://127.0.0.1:{self.ports.http}/v2/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.reap()

    def reap(self) -> None:
        """Kill what the server left behind in its process group: a Python-backend stub
        outlives a killed server (measured: for good), holding its model and shared memory."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

def describe_exit(returncode: int) -> str:
    if returncode >= 0:
        return f"exit code {returncode}"
    try:
        return f"killed by {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def _log(message: str) -> None:
    print(f"[triton-supervisor] {message}", file=sys.stderr, flush=True)


class TritonSupervisor:
    """Keeps a ``tritonserver`` running on fixed ports, restarting it whenever it exits.

    This is what the kubelet does for the pod's Triton container: clients keep their
    address and reconnect on their own. Restarts back off from ``initial_backoff_s``,
    doubling up to ``max_backoff_s``, so a server that crashes at start-up does not spin;
    a run that lasted ``stable_after_s`` resets the backoff. A dead server's Python-backend
    stubs are killed before the next one starts (``TritonProcess.reap``).
    """

    def __init__(
        self,
        model_repository: Path,
        build_dir: Path,
        ports: TritonPorts = TritonPorts(),
        output: IO[bytes] | int | None = None,
        on_start: Callable[[subprocess.Popen], None] = lambda _: None,
        log: Callable[[str], None] = _log,
        initial_backoff_s: float = 1.0,
        max_backoff_s: float = 10.0,
        stable_after_s: float = 60.0,
    ) -> None:
        """``on_start`` sees every new process, e.g. to relay its piped output."""
        self.triton = TritonProcess(model_repository, build_dir, ports, output)
        self.on_start = on_start
        self.log = log
        self.initial_backoff_s = initial_backoff_s
        self.max_backoff_s = max_backoff_s
        self.stable_after_s = stable_after_s
        self.restarts = 0
        self._stopping = threading.Event()
        self._monitor = threading.Thread(
            target=self._supervise, name="triton-supervisor", daemon=True
        )

    @property
    def ports(self) -> TritonPorts:
        return self.triton.ports

    @property
    def process(self) -> subprocess.Popen:
        """The current ``tritonserver`` process; a new one after each restart."""
        assert self.triton.process is not None, "start() first"
        return self.triton.process

    def start(self) -> None:
        self._launch()
        self._monitor.start()

    def ready(self) -> bool:
        return self.triton.ready()

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Ready within ``timeout_s``, across restarts (unlike ``TritonProcess.wait_ready``)."""
        deadline = time.monotonic() + timeout_s
        while not self.ready():
            if time.monotonic() > deadline:
                raise TimeoutError(f"tritonserver not ready after {timeout_s:.0f} s")
            time.sleep(0.25)

    def stop(self) -> None:
        self._stopping.set()
        if self._monitor.is_alive():
            self._monitor.join()
        self.triton.stop()

    def _launch(self) -> None:
        self.triton.start()
        self.on_start(self.process)

    def _supervise(self) -> None:
        backoff_s = self.initial_backoff_s
        while True:
            started = time.monotonic()
            while self.process.poll() is None:
                if self._stopping.wait(0.2):
                    return
            if self._stopping.is_set():
                return
            if time.monotonic() - started >= self.stable_after_s:
                backoff_s = self.initial_backoff_s
            self.triton.reap()
            self.log(
                f"tritonserver {describe_exit(self.process.returncode)}; "
                f"restarting in {backoff_s:g} s"
            )
            if self._stopping.wait(backoff_s):
                return
            backoff_s = min(2 * backoff_s, self.max_backoff_s)
            self.restarts += 1
            # Launched from this thread, the server gets PDEATHSIG when the thread ends,
            # which happens only in stop(): still no orphan if the launcher is killed.
            self._launch()

    def __enter__(self) -> TritonSupervisor:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
