"""``python -m transformer [kserve flags]``: serve logo-detection and nsfw-detection.

KServe's own flags apply, notably ``--predictor_host 127.0.0.1:8001
--predictor_protocol grpc-v2 --enable_predictor_health_check``; everything else comes
from the environment (``transformer.config``).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import kserve
from kserve.model_server import app

from transformer.sources import commons_client
from transformer.config import load_settings
from transformer.http_errors import install_handlers
from transformer.limits import BodySizeLimit
from transformer.model import LOGO_PIPELINE, NSFW_PIPELINE, ImageModel


def main() -> None:
    settings = load_settings()
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    install_handlers(app)
    commons = commons_client(settings)
    executor = ThreadPoolExecutor(settings.decode_threads, thread_name_prefix="decode")
    models = [ImageModel(p, settings, commons, executor) for p in (LOGO_PIPELINE, NSFW_PIPELINE)]
    for model in models:
        model.load()
    kserve.ModelServer().start(models)


if __name__ == "__main__":
    main()
