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
import time
import urllib.error
import urllib.request
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
        # A 32-image uint8 batch is 4.8 MB; start the shared-memory arena above that.
        "--backend-config=python,shm-default-byte-size=16777216",
        "--backend-config=python,shm-growth-byte-size=16777216",
    ]


def die_with_parent() -> None:
    # If the launcher is killed outright, the kernel stops Triton too: no orphans.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class TritonProcess:
    """A ``tritonserver`` child process with readiness polling and clean shutdown."""

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

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with code {self.process.returncode}")
            if self.ready():
                return
            time.sleep(0.25)
        raise TimeoutError(f"tritonserver not ready after {timeout_s:.0f} s")

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> TritonProcess:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
