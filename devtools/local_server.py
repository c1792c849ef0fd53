"""The scaffolding every local stand-in server shares: a threading HTTP server on
127.0.0.1 (a free port unless told one), serving from a daemon thread while the stand-in is
used as a context manager, and the record of each request it received. Handlers reach the
stand-in as ``self.server.fake``."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


@dataclass(frozen=True)
class LoggedRequest:
    """One request a stand-in received; ``params`` merges the query string and a form body."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]  # lower-case names
    at: float  # time.monotonic() on arrival

    @property
    def host(self) -> str:
        return self.headers.get("host", "")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: Any

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a timeout, a dropped stream) leaves a broken pipe: not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class LocalServer:
    def __init__(self, handler: type[BaseHTTPRequestHandler], port: int = 0) -> None:
        self._server = Server(("127.0.0.1", port), handler)
        self._server.fake = self
        # A short poll keeps `shutdown` (every test's teardown) from waiting the default 0.5 s.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"
