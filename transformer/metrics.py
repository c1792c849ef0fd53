"""Per-stage Prometheus metrics of the request path, beside KServe's own preprocess,
predict and postprocess histograms (served at ``/metrics``).

Labels are bounded sets: a model name, an outcome from a fixed vocabulary, or an HTTP
status; never a title, a URL or a host.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

COMMONS_SECONDS = Histogram(
    "transformer_commons_request_seconds",
    "One attempt at a Commons call: an API query or a file download",
    ["call", "outcome"],
    buckets=_SECONDS,
)
COMMONS_DOWNLOAD_BYTES = Histogram(
    "transformer_commons_download_bytes",
    "Bytes of each file downloaded from Commons",
    buckets=(1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7, 3e7, 1e8),
)
COMMONS_RETRIES = Counter(
    "transformer_commons_retries",
    "Commons calls retried, by the failure retried",
    ["call", "outcome"],
)
COMMONS_RETRY_WAIT = Counter(
    "transformer_commons_retry_wait_seconds",
    "Seconds waited before retrying Commons: asked by its Retry-After, or backoff",
    ["reason"],
)
DOWNLOAD_BYTES_RESERVED = Gauge(
    "transformer_download_bytes_reserved",
    "Bytes reserved for image downloads being fetched or waiting for a decode thread "
    "(MAX_INFLIGHT_DOWNLOAD_BYTES bounds it)",
)
DECODE_SECONDS = Histogram(
    "transformer_decode_seconds",
    "Bytes to tensor for one image (decode, resize, tensor), in the decode pool",
    ["model"],
    buckets=_SECONDS,
)
TRITON_SECONDS = Histogram(
    "transformer_triton_request_seconds",
    "One Triton infer call over gRPC, queue wait and compute included",
    ["model", "outcome"],
    buckets=_SECONDS,
)
TRITON_BATCH = Histogram(
    "transformer_triton_batch_size",
    "Images in one Triton infer call (Triton may merge calls further)",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
