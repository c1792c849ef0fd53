"""Readiness for models that score with a Triton model of another name.

With ``--enable_predictor_health_check`` KServe answers ``GET /v1/models/<name>`` by asking
Triton about a model called ``<name>``. ``nsfw-video-detection`` has no Triton model of its
own: it scores frames with ``nsfw-detection``, so it is ready exactly when that model is.
A model declares this with a ``triton_model`` attribute naming another served model.
"""

from __future__ import annotations

from kserve.protocol.dataplane import DataPlane


class TritonModelReadiness(DataPlane):
    async def model_ready(
        self, model_name: str, disable_predictor_health_check: bool = False
    ) -> bool:
        model = self.model_registry.get_model(model_name)
        backing = getattr(model, "triton_model", model_name)
        if backing == model_name:
            return await super().model_ready(model_name, disable_predictor_health_check)
        if not await self.model_registry.is_model_ready(model_name):
            return False
        return await super().model_ready(backing, disable_predictor_health_check)
