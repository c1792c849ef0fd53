"""Tensors → scores: one Triton call per ``max_batch_size`` chunk over gRPC v2.

The chunks of one request go out concurrently; Triton's dynamic batcher then merges
them with other requests' chunks into full model batches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from http import HTTPStatus

import grpc
import numpy as np
from kserve import InferInput, InferRequest
from kserve.inference_client import InferenceGRPCClient

from preprocessing.specs import ModelSpec
from transformer import request_log
from transformer.errors import UpstreamError
from transformer.metrics import TRITON_BATCH, TRITON_SECONDS

log = logging.getLogger(__name__)

# Channel settings for the one long-lived channel to Triton.
_CHANNEL_ARGS: tuple[tuple[str, int], ...] = (
    # KServe's default policy re-sends UNAVAILABLE; a full queue answers UNAVAILABLE too, and
    # re-sending it only adds load where there is too much. The caller gets a 503 at once.
    ("grpc.enable_retries", 0),
    # Pings find a dead peer (a killed pod, a dropped NAT entry) in seconds rather than
    # at the next request's deadline. Triton must be started to accept pings this often
    # (predictor.triton_server.command does), or it hangs up on the second idle ping.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # After Triton restarts, reconnect within a second instead of gRPC's default backoff
    # (1 s growing to 120 s), which would keep the transformer failing after Triton is back.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    # A batch of 32 images is 4.8 MB, above gRPC's 4 MB default.
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
)

# How soon a client may retry after a 503: Triton restarts, or its queue drains, in seconds.
RETRY_AFTER_S = 1.0

# Triton 2.51 answers both kinds of overload with UNAVAILABLE, measured:
#   queue full:     "[request id: <id_unknown>] Exceeds maximum queue size", immediately;
#   queue timeout:  "Request timeout expired", once the request has waited the queue
#                   policy's timeout, even while every instance is busy.
# A stopped or unreachable Triton is UNAVAILABLE too, so all three are a retryable 503.
_STATUS_BY_CODE = {
    grpc.StatusCode.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: HTTPStatus.GATEWAY_TIMEOUT,
    grpc.StatusCode.RESOURCE_EXHAUSTED: HTTPStatus.SERVICE_UNAVAILABLE,
}


def triton_client(host: str) -> InferenceGRPCClient:
    """The gRPC client for Triton at ``host`` (``address:port``).

    gRPC's asyncio channel binds to the event loop running when it is built, so build it
    from within the server's loop (lazily, on first use).
    """
    return InferenceGRPCClient(host, channel_args=list(_CHANNEL_ARGS))


@dataclass(frozen=True)
class Scores:
    """``values``: ``[N, len(labels)]``; ``model_version``: the version(s) Triton used."""

    values: np.ndarray
    model_version: str


async def score(
    client: InferenceGRPCClient, spec: ModelSpec, batch: np.ndarray, timeout_s: float
) -> Scores:
    """Score ``batch`` (uint8 NHWC) with ``spec``'s Triton model."""
    chunks = [
        batch[start : start + spec.max_batch_size]
        for start in range(0, len(batch), spec.max_batch_size)
    ]
    results = await asyncio.gather(*(_infer(client, spec, c, timeout_s) for c in chunks))
    versions = sorted({version for _, version in results})
    return Scores(np.concatenate([values for values, _ in results]), ",".join(versions))


async def _infer(
    client: InferenceGRPCClient, spec: ModelSpec, chunk: np.ndarray, timeout_s: float
) -> tuple[np.ndarray, str]:
    tensor = InferInput(spec.input_name, list(chunk.shape), "UINT8")
    tensor.set_data_from_numpy(np.ascontiguousarray(chunk), binary_data=True)
    request = InferRequest(
        model_name=spec.name, infer_inputs=[tensor], request_id=request_log.request_id()
    )
    TRITON_BATCH.labels(model=spec.name).observe(len(chunk))
    started, outcome = time.perf_counter(), "ok"
    try:
        response = await client.infer(request, timeout=timeout_s)
    except grpc.aio.AioRpcError as exc:
        outcome = exc.code().name.lower()
        status = _STATUS_BY_CODE.get(exc.code(), HTTPStatus.BAD_GATEWAY)
        log.warning("Triton %s: %s: %s", spec.name, exc.code().name, exc.details())
        raise UpstreamError(
            status,
            f"Triton model {spec.name!r} failed: {exc.code().name}: {exc.details()}",
            retry_after=RETRY_AFTER_S if status == HTTPStatus.SERVICE_UNAVAILABLE else None,
        ) from None
    finally:
        elapsed = time.perf_counter() - started
        TRITON_SECONDS.labels(model=spec.name, outcome=outcome).observe(elapsed)
        request_log.add_stage("triton", elapsed)
    output = next((o for o in response.outputs if o.name == spec.output_name), None)
    if output is None:
        raise UpstreamError(
            HTTPStatus.BAD_GATEWAY, f"Triton model {spec.name!r} returned no {spec.output_name!r}"
        )
    scores = output.as_numpy()
    if scores.shape != (len(chunk), *spec.output_dims):
        raise UpstreamError(
            HTTPStatus.BAD_GATEWAY,
            f"Triton model {spec.name!r} returned shape {scores.shape} for a batch of {len(chunk)}",
        )
    return scores, str(response.model_version or "")
