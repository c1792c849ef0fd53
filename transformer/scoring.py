"""Tensors → scores: one Triton call per ``max_batch_size`` chunk over gRPC v2.

The chunks of one request go out concurrently; Triton's dynamic batcher then merges
them with other requests' chunks into full model batches.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from http import HTTPStatus

import grpc
import numpy as np
from kserve import InferInput, InferRequest
from kserve.inference_client import InferenceGRPCClient

from predictor.specs import ModelSpec
from transformer.errors import UpstreamError

_STATUS_BY_CODE = {
    grpc.StatusCode.UNAVAILABLE: HTTPStatus.SERVICE_UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED: HTTPStatus.GATEWAY_TIMEOUT,
    grpc.StatusCode.RESOURCE_EXHAUSTED: HTTPStatus.SERVICE_UNAVAILABLE,
}


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
    request = InferRequest(model_name=spec.name, infer_inputs=[tensor])
    try:
        response = await client.infer(request, timeout=timeout_s)
    except grpc.aio.AioRpcError as exc:
        status = _STATUS_BY_CODE.get(exc.code(), HTTPStatus.BAD_GATEWAY)
        raise UpstreamError(
            status, f"Triton model {spec.name!r} failed: {exc.code().name}: {exc.details()}"
        ) from None
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
