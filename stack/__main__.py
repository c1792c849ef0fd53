"""``python -m stack``: Triton and the transformer in the foreground until Ctrl-C
(``make serve``)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from predictor.triton_server import TritonPorts
from stack.launcher import Stack


def serve(
    model_repository: Path = typer.Option(Path("model_repository")),
    build_dir: Path = typer.Option(Path("build")),
    http_port: int = typer.Option(8080, help="Transformer HTTP port (KServe default)."),
    host: str = typer.Option(
        "127.0.0.1", help="Transformer bind address; 0.0.0.0 serves other machines."
    ),
    triton_http_port: int = 8000,
    triton_grpc_port: int = 8001,
    triton_metrics_port: int = 8002,
) -> None:
    """Run Triton (supervised) and the transformer until Ctrl-C or SIGTERM."""
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    stack = Stack(
        model_repository=model_repository,
        build_dir=build_dir,
        triton_ports=TritonPorts(triton_http_port, triton_grpc_port, triton_metrics_port),
        http_port=http_port,
        host=host,
    )
    raise typer.Exit(stack.serve(stopping))


if __name__ == "__main__":
    typer.run(serve)
