"""The KServe models: request → fetch → decode → tensor → Triton → scores → response.

KServe calls ``preprocess`` (parse, fetch, decode: everything up to the tensor),
``predict`` (Triton) and ``postprocess`` (the gogologo response), and times each stage
in its own Prometheus histograms.

One deadline, set when the request arrives, bounds its lookups, downloads and retries;
items that miss it get ``deadline_exceeded`` and the others are still scored. Each Triton
call has its own ``TRITON_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from preprocessing.decode import DecodeError, decode_image
from preprocessing.errors import CodedError
from preprocessing.specs import ModelSpec
from preprocessing.tensor import PREPARATIONS, Preparation
from transformer.commons import CommonsClient
from transformer.config import Settings
from transformer.request import Instance, parse_request_in
from transformer.responses import MODEL_VERSION_HEADER, error_prediction, respond
from transformer.scoring import score
from transformer.sources import fetch_all
from transformer.tasks import all_or_none
from transformer.triton_model import TritonModel


@dataclass
class Batch:
    """One request in flight: its instances and, per instance, a tensor, scores or an error."""

    instances: list[Instance]
    results: list[np.ndarray | CodedError] = field(default_factory=list)


def prepare(data: bytes, preparation: Preparation, settings: Settings) -> np.ndarray | CodedError:
    """Decode and preprocess one image; runs in the thread pool, never on the event loop."""
    try:
        image = decode_image(
            data,
            max_pixels=settings.max_image_pixels,
            max_decode_bytes=settings.max_decode_bytes,
            min_side=preparation.min_side,
        )
    except DecodeError as exc:
        return exc
    return preparation.to_tensor(image)


class ImageModel(TritonModel):
    def __init__(
        self,
        spec: ModelSpec,
        settings: Settings,
        commons: CommonsClient,
        executor: Executor,
        parser: Executor,
    ) -> None:
        """``executor`` decodes images; ``parser`` parses request bodies."""
        super().__init__(spec.name, return_response_headers=True)
        self.spec = spec
        self.preparation = PREPARATIONS[spec.name]
        self.settings = settings
        self.commons = commons
        self.executor = executor
        self.parser = parser

    async def preprocess(self, payload: dict | bytes, headers: dict | None = None) -> Batch:
        deadline = asyncio.get_running_loop().time() + self.settings.request_deadline_s
        instances = await parse_request_in(
            self.parser,
            payload,
            max_instances=self.settings.max_instances,
            max_bytes=self.settings.max_image_bytes,
        )
        sources = await fetch_all(instances, self.commons, deadline=deadline)
        results = await all_or_none(self._prepare(source) for source in sources)
        return Batch(instances, results)

    async def _prepare(self, source: bytes | CodedError) -> np.ndarray | CodedError:
        if isinstance(source, CodedError):
            return source
        return await asyncio.get_running_loop().run_in_executor(
            self.executor, prepare, source, self.preparation, self.settings
        )

    async def predict(
        self, batch: Batch, headers: dict | None = None, response_headers: dict | None = None
    ) -> Batch:
        ready = [i for i, r in enumerate(batch.results) if isinstance(r, np.ndarray)]
        if not ready:
            return batch
        stacked = np.stack([batch.results[i] for i in ready])
        scores = await score(
            self._grpc_client, self.spec, stacked, self.settings.triton_timeout_s
        )
        for i, row in zip(ready, scores.values):
            batch.results[i] = row
        if response_headers is not None and scores.model_version:
            response_headers[MODEL_VERSION_HEADER] = scores.model_version
        return batch

    async def postprocess(
        self, batch: Batch, headers: dict | None = None, response_headers: dict | None = None
    ) -> dict:
        predictions = [self._prediction(i, r) for i, r in zip(batch.instances, batch.results)]
        return respond(self.name, predictions, batch.results)

    def _prediction(self, instance: Instance, result: np.ndarray | CodedError) -> dict:
        if isinstance(result, CodedError):
            return error_prediction(instance.filename, result)
        return {
            "filename": instance.filename,
            "target": instance.target or self.spec.target,
            "prediction": float(result[1]),
            "out_of_domain": float(result[0]),
        }
