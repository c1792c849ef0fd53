"""The base of the served models: a KServe model that scores with Triton over gRPC v2."""

from __future__ import annotations

import kserve
from kserve.inference_client import InferenceGRPCClient

from transformer.config import Settings
from transformer.scoring import triton_client


class TritonModel(kserve.Model):
    settings: Settings
    _triton: InferenceGRPCClient | None = None

    def load(self) -> bool:
        self.ready = True
        return self.ready

    @property
    def _grpc_client(self) -> InferenceGRPCClient:
        """Our channel instead of KServe's: it reconnects within a second after Triton comes
        back and never re-sends a rejected request (``transformer.scoring``)."""
        if self._triton is None:
            self._triton = triton_client(self.predictor_config.predictor_host)
        return self._triton
