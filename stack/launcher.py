"""`Stack`: start Triton (supervised), then the transformer, wait until both serve, stop both.

Triton is supervised: if it exits it is restarted on the same ports, as the kubelet would
restart its container, and the transformer reconnects by itself. Stopping ends the
transformer first (no new requests), then Triton and whatever its backend left behind.
Logs go to files under ``logs`` when given, else to stdout line by line with a
``[triton]`` / ``[transformer]`` prefix (``make serve``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx

from predictor.triton_server import TritonPorts, TritonSupervisor, die_with_parent
from preprocessing.specs import SERVED_MODELS

ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 20.0


class StackError(RuntimeError):
    """A server exited or did not get ready; the message ends with its log's tail."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_triton_ports() -> TritonPorts:
    return TritonPorts(http=free_port(), grpc=free_port(), metrics=free_port())


# For runs that measure or fault the scoring path itself: with the score store on, a
# repeated image would be answered from the store and never reach Triton.
WITHOUT_SCORE_STORE = {"SCORE_STORE": "false"}


def commons_environment(api_url: str) -> dict[str, str]:
    """Settings that point the transformer at a MediaWiki API whose files it serves too
    (the stand-in in ``devtools``)."""
    return {
        "COMMONS_API_URL": api_url,
        "COMMONS_UPLOAD_HOSTS": f'["{httpx.URL(api_url).netloc.decode()}"]',
    }


def transformer_command(
    http_port: int, triton: TritonPorts, *, health_check: bool = True
) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "transformer",
        f"--http_port={http_port}",
        f"--predictor_host={triton.address}:{triton.grpc}",
        "--predictor_protocol=grpc-v2",
        "--enable_grpc=false",
    ]
    if health_check:
        command.append("--enable_predictor_health_check")
    return command


class Stack:
    """Triton and the transformer as child processes. Use as a context manager, or
    `serve` in the foreground."""

    def __init__(
        self,
        *,
        model_repository: Path = ROOT / "model_repository",
        build_dir: Path = ROOT / "build",
        triton_ports: TritonPorts | None = None,
        start_triton: bool = True,
        http_port: int | None = None,
        host: str = "127.0.0.1",
        env: Mapping[str, str] | None = None,
        transformer_args: Sequence[str] = (),
        models: Sequence[str] = SERVED_MODELS,
        health_check: bool = True,
        logs: Path | None = None,
        ready_timeout_s: float = 180.0,
    ) -> None:
        """``start_triton=False`` puts a transformer in front of the Triton already at
        ``triton_ports``; ``models`` are the transformer models to wait for."""
        self.triton_ports = triton_ports or free_triton_ports()
        self.http_port = http_port or free_port()
        self.host = host
        self.env = dict(env or {})
        self.transformer_args = list(transformer_args)
        self.models = tuple(models)
        self.health_check = health_check
        self.logs = logs
        self.ready_timeout_s = ready_timeout_s
        self._files: list[IO[bytes]] = []
        self.triton: TritonSupervisor | None = None
        if start_triton:
            self.triton = TritonSupervisor(
                model_repository,
                build_dir,
                self.triton_ports,
                output=self._output("triton"),
                on_start=lambda process: self._relay("triton", process),
                log=lambda message: print(f"[stack] {message}", file=sys.stderr, flush=True),
            )
        self.transformer: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://{_reachable(self.host)}:{self.http_port}"

    def log_path(self, name: str) -> Path | None:
        return self.logs / f"{name}.log" if self.logs is not None else None

    def pids(self) -> list[int]:
        """The transformer's and Triton's process ids (Triton's backend stubs are its
        children)."""
        running = [self.transformer, self.triton.process if self.triton else None]
        return [p.pid for p in running if p is not None]

    def start(self) -> Stack:
        if self.logs is not None:
            self.logs.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.ready_timeout_s
        if self.triton is not None:
            self.triton.start()
            while not self.triton.ready():
                # Later crashes are restarted; one before the first ready is a broken
                # repository or binary, better reported at once.
                if self.triton.restarts or self.triton.process.poll() is not None:
                    raise StackError("tritonserver exited before it was ready" + self._tail("triton"))
                if time.monotonic() > deadline:
                    raise StackError("tritonserver not ready in time" + self._tail("triton"))
                time.sleep(0.25)
        self.transformer = subprocess.Popen(
            transformer_command(self.http_port, self.triton_ports, health_check=self.health_check)
            + self.transformer_args,
            cwd=ROOT,
            env={**os.environ, "TRANSFORMER_HOST": self.host, **self.env},
            stdout=self._output("transformer"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        self._relay("transformer", self.transformer)
        while not self.transformer_ready():
            if self.transformer.poll() is not None:
                raise StackError(
                    f"the transformer exited ({self.transformer.returncode})"
                    + self._tail("transformer")
                )
            if time.monotonic() > deadline:
                raise StackError("the transformer is not ready in time" + self._tail("transformer"))
            time.sleep(0.25)
        return self

    def transformer_ready(self) -> bool:
        for name in self.models:
            try:
                with urllib.request.urlopen(f"{self.url}/v1/models/{name}", timeout=2) as answer:
                    if answer.status != 200:
                        return False
            except (urllib.error.URLError, OSError):
                return False
        return True

    def stop(self) -> None:
        if self.transformer is not None and self.transformer.poll() is None:
            self.transformer.terminate()
            try:
                self.transformer.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.transformer.kill()
                self.transformer.wait()
        if self.triton is not None:
            self.triton.stop()
        for file in self._files:
            file.close()
        self._files.clear()

    def serve(self, stopping: threading.Event) -> int:
        """``make serve``: start, announce, run until ``stopping`` is set or the
        transformer exits; the exit status."""
        started = time.monotonic()
        try:
            try:
                self.start()
            except StackError as exc:
                return 0 if stopping.is_set() else _fail(str(exc))
            ports = self.triton_ports
            print(
                f"[serve] ready in {time.monotonic() - started:.1f} s: transformer "
                f"http://{self.host}:{self.http_port}, Triton http :{ports.http} "
                f"grpc :{ports.grpc} metrics :{ports.metrics}. Ctrl-C stops both.",
                flush=True,
            )
            while not stopping.wait(0.5):
                assert self.transformer is not None
                if self.transformer.poll() is not None:
                    return _fail(f"the transformer exited ({self.transformer.returncode})")
            return 0
        finally:
            print("[serve] stopping the transformer, then Triton", flush=True)
            self.stop()
            print("[serve] stopped", flush=True)

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _output(self, name: str) -> IO[bytes] | int:
        path = self.log_path(name)
        if path is None:
            return subprocess.PIPE
        path.parent.mkdir(parents=True, exist_ok=True)
        file = path.open("ab")
        self._files.append(file)
        return file

    def _relay(self, prefix: str, process: subprocess.Popen) -> None:
        if process.stdout is not None:
            threading.Thread(
                target=_relay_lines, args=(prefix, process.stdout), daemon=True
            ).start()

    def _tail(self, name: str) -> str:
        path = self.log_path(name)
        if path is None or not path.exists():
            return ""
        return f"; log tail:\n{path.read_text(errors='replace')[-3000:]}"


def _relay_lines(prefix: str, stream: IO[bytes]) -> None:
    for line in iter(stream.readline, b""):
        sys.stdout.write(f"[{prefix}] {line.decode(errors='replace')}")
        sys.stdout.flush()


def _reachable(host: str) -> str:
    """An address to reach a server bound to ``host`` at: loopback for the wildcards."""
    if host in ("0.0.0.0", "::", ""):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _fail(reason: str) -> int:
    print(f"[serve] {reason}", file=sys.stderr, flush=True)
    return 1
