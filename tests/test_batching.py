"""Concurrent requests through the transformer really form Triton batches."""

from __future__ import annotations

import asyncio
import base64

import httpx

from devtools import images
from predictor.triton_server import TritonPorts

CONCURRENCY = 32


def execution_stats(triton: TritonPorts, model: str) -> tuple[int, int]:
    stats = httpx.get(f"http://127.0.0.1:{triton.http}/v2/models/{model}/stats", timeout=10).json()
    entry = stats["model_stats"][0]
    return int(entry["inference_count"]), int(entry["execution_count"])


async def fire(url: str, bodies: list[dict]) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=url, timeout=120) as http:
        return await asyncio.gather(
            *(http.post("/v1/models/nsfw-detection:predict", json=b) for b in bodies)
        )


def test_dynamic_batching_forms_batches(transformer_url: str, triton: TritonPorts) -> None:
    bodies = [
        {"instances": [{"image": base64.b64encode(images.encode(images.photo(320, 240, s), "JPEG")).decode()}]}
        for s in range(CONCURRENCY)
    ]
    inferences_before, executions_before = execution_stats(triton, "nsfw-detection")
    responses = asyncio.run(fire(transformer_url, bodies))
    inferences_after, executions_after = execution_stats(triton, "nsfw-detection")

    assert all(r.status_code == 200 for r in responses), [r.text for r in responses if r.status_code != 200]
    inferences = inferences_after - inferences_before
    executions = executions_after - executions_before
    average = inferences / executions
    print(f"\n{CONCURRENCY} concurrent single-image requests: {inferences} inferences in "
          f"{executions} executions, average Triton batch {average:.2f}")
    assert inferences == CONCURRENCY
    assert inferences > executions
