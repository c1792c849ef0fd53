"""The embedded stack behind ``make serve``: Triton, then the transformer, in the foreground.

Each child's log lines are relayed with a ``[triton]`` / ``[transformer]`` prefix.
Ctrl-C or SIGTERM stops the transformer first (no new requests), then Triton. Triton is
supervised: if it exits it is restarted on the same ports, as the kubelet would restart
its container, and the transformer reconnects by itself. If the transformer exits,
Triton is stopped and the exit code is non-zero.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

from predictor.specs import SPECS
from predictor.triton_server import TritonPorts, TritonSupervisor, die_with_parent


def _relay(prefix: str, stream: IO[bytes]) -> None:
    for line in iter(stream.readline, b""):
        sys.stdout.write(f"[{prefix}] {line.decode(errors='replace')}")
        sys.stdout.flush()


def _relayed(prefix: str, process: subprocess.Popen) -> None:
    threading.Thread(target=_relay, args=(prefix, process.stdout), daemon=True).start()


def transformer_command(http_port: int, triton: TritonPorts) -> list[str]:
    return [
        sys.executable,
        "-m",
        "transformer",
        f"--http_port={http_port}",
        f"--predictor_host={triton.address}:{triton.grpc}",
        "--predictor_protocol=grpc-v2",
        "--enable_predictor_health_check",
        "--enable_grpc=false",
    ]


# What the transformer serves: each Triton model under its own name, and the video model
# that scores frames with nsfw-detection.
TRANSFORMER_MODELS: tuple[str, ...] = (*(spec.name for spec in SPECS), "nsfw-video-detection")


def transformer_ready(http_port: int, host: str = "127.0.0.1") -> bool:
    for name in TRANSFORMER_MODELS:
        url = f"http://{host}:{http_port}/v1/models/{name}"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status != 200:
                    return False
        except (urllib.error.URLError, OSError):
            return False
    return True


def transformer_environment(host: str) -> dict[str, str]:
    """The launcher's environment plus the transformer's bind address."""
    return {**os.environ, "TRANSFORMER_HOST": host}


def run(
    model_repository: Path,
    build_dir: Path,
    http_port: int,
    triton_ports: TritonPorts,
    host: str = "127.0.0.1",
) -> int:
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())

    triton = TritonSupervisor(
        model_repository,
        build_dir,
        triton_ports,
        output=subprocess.PIPE,
        on_start=lambda process: _relayed("triton", process),
        log=lambda message: print(f"[serve] {message}", file=sys.stderr, flush=True),
    )
    transformer: subprocess.Popen | None = None
    started = time.monotonic()
    try:
        triton.start()
        while not triton.ready():
            # Restarts cover crashes later on; a server that never gets ready is a broken
            # repository or binary, better reported at once.
            if stopping.is_set() or triton.restarts or triton.process.poll() is not None:
                return _exit_code(stopping, "tritonserver exited before it was ready")
            time.sleep(0.25)
        transformer = subprocess.Popen(
            transformer_command(http_port, triton_ports),
            env=transformer_environment(host),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        _relayed("transformer", transformer)
        while not transformer_ready(http_port, _reachable(host)):
            if stopping.is_set() or transformer.poll() is not None:
                return _exit_code(stopping, "the transformer exited before it was ready")
            time.sleep(0.25)
        print(
            f"[serve] ready in {time.monotonic() - started:.1f} s: "
            f"transformer http://{host}:{http_port}, Triton http :{triton_ports.http} "
            f"grpc :{triton_ports.grpc} metrics :{triton_ports.metrics}. Ctrl-C stops both.",
            flush=True,
        )
        while not stopping.wait(0.5):
            if transformer.poll() is not None:
                return _exit_code(stopping, f"the transformer exited ({transformer.returncode})")
        return 0
    finally:
        print("[serve] stopping the transformer, then Triton", flush=True)
        if transformer is not None and transformer.poll() is None:
            transformer.terminate()
            try:
                transformer.wait(timeout=20)
            except subprocess.TimeoutExpired:
                transformer.kill()
                transformer.wait()
        triton.stop()
        print("[serve] stopped", flush=True)


def _reachable(host: str) -> str:
    """An address to probe a server bound to ``host`` at: loopback for the wildcards."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _exit_code(stopping: threading.Event, reason: str) -> int:
    if stopping.is_set():
        return 0
    print(f"[serve] {reason}", file=sys.stderr, flush=True)
    return 1
