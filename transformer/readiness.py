"""Liveness and readiness that tell the kubelet the truth.

* **Liveness** (``GET /``) fails while any model this process should serve is missing or
  not loaded: such a pod cannot heal by itself, so it must be restarted. KServe's own
  answer is a constant ``alive``.
* **Readiness** (``GET /v1/models/<name>``): with ``--enable_predictor_health_check`` KServe
  asks Triton about a model called ``<name>``. ``nsfw-video-detection`` has no Triton model
  of its own: it scores frames with ``nsfw-detection``, so it is ready exactly when that
  model is. A model declares this with a ``triton_model`` attribute naming another model.
  Triton's answer is cached for ``REFRESH_S`` and refreshed in the background, one check
  at a time and bounded by ``CHECK_TIMEOUT_S``: a probe never waits on a busy or stalled
  Triton (a stopped one turns the answer false within a few seconds), and probes do not
  multiply into Triton calls.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from dataclasses import dataclass
from http import HTTPStatus

from kserve.inference_client import InferenceGRPCClient
from kserve.protocol.dataplane import DataPlane

from transformer.http_errors import JSONResponse
from transformer.scoring import triton_client

log = logging.getLogger(__name__)

REFRESH_S = 1.0
CHECK_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class _Known:
    ready: bool
    at: float


class LiveResponse(JSONResponse):
    """KServe serves ``live()``'s answer as it is on ``GET /`` (so a 503 must be a response),
    while its ``/v2/health/live`` and gRPC ``ServerLive`` read ``answer["status"]``."""

    def __init__(self, content: dict[str, str], status_code: int = HTTPStatus.OK) -> None:
        super().__init__(content, status_code=status_code)
        self._content = content

    def __getitem__(self, key: str) -> str:
        return self._content[key]


class TritonModelReadiness(DataPlane):
    def __init__(self, *args: object, expected: Collection[str] = (), **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.expected = tuple(expected)
        self._known: dict[str, _Known] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    @property
    def grpc_client(self) -> InferenceGRPCClient:
        """The checks go over a channel like the models' own, which reconnects within a
        second of Triton's return; KServe's backs off for up to two minutes."""
        if self._inference_grpc_client is None:
            self._inference_grpc_client = triton_client(self.predictor_config.predictor_host)
        return self._inference_grpc_client

    async def live(self) -> LiveResponse:  # type: ignore[override]
        missing = [
            name
            for name in self.expected
            if (model := self.model_registry.get_model(name)) is None or not model.ready
        ]
        if missing:
            return LiveResponse(
                {"status": "not alive", "error": f"models not loaded: {', '.join(missing)}"},
                status_code=HTTPStatus.SERVICE_UNAVAILABLE,
            )
        return LiveResponse({"status": "alive"})

    async def model_ready(
        self, model_name: str, disable_predictor_health_check: bool = False
    ) -> bool:
        checks_triton = (
            not disable_predictor_health_check
            and self.predictor_config is not None
            and self.predictor_config.predictor_health_check
        )
        if not await super().model_ready(model_name, disable_predictor_health_check=True):
            return False
        if not checks_triton:
            return True
        model = self.model_registry.get_model(model_name)
        return await self._triton_ready(getattr(model, "triton_model", model_name))

    async def _triton_ready(self, name: str) -> bool:
        known = self._known.get(name)
        if known is None:
            await self._refresh(name)
        elif asyncio.get_running_loop().time() - known.at > REFRESH_S:
            if name not in self._refreshing:
                task = asyncio.ensure_future(self._refresh(name))
                self._refreshing[name] = task
                task.add_done_callback(lambda _: self._refreshing.pop(name, None))
        return self._known[name].ready

    async def _refresh(self, name: str) -> None:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                ready = await super().model_ready(name, disable_predictor_health_check=False)
        except TimeoutError:
            log.warning("Triton did not say within %g s whether %s is ready", CHECK_TIMEOUT_S, name)
            ready = False
        self._known[name] = _Known(ready, asyncio.get_running_loop().time())
