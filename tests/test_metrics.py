"""The per-stage metrics at the transformer's ``/metrics``, after real traffic through the
session's stack: Commons calls and retries, downloads, decoding, Triton calls."""

from __future__ import annotations

import base64

import httpx
from prometheus_client.parser import text_string_to_metric_families

from devtools import images
from devtools.fake_commons import FakeCommons


def samples(client: httpx.Client) -> dict[tuple[str, frozenset], float]:
    text = client.get("/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def test_every_stage_is_measured_with_bounded_labels(
    client: httpx.Client, fake_commons: FakeCommons
) -> None:
    fake_commons.add_file("Metrics test.jpg", images.encode(images.photo(500, 400, 31), "JPEG"))
    before = samples(client)
    fake_commons.fail_api(times=1, status=503, retry_after=0.1)
    answer = client.post(
        "/v1/models/logo-detection:predict",
        json={"instances": [{"filename": "Metrics test.jpg"}]},
    )
    assert answer.status_code == 200, answer.text
    inline = base64.b64encode(images.encode(images.photo(300, 200, 32), "PNG")).decode()
    answer = client.post(
        "/v1/models/nsfw-detection:predict",
        json={"instances": [{"image": inline}, {"image": inline}, {"image": "bm90IGFuIGltYWdl"}]},
    )
    assert answer.status_code == 200, answer.text
    after = samples(client)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    api, download = {"call": "api"}, {"call": "download"}
    assert grew("transformer_commons_request_seconds_count", **api, outcome="ok") >= 1
    assert grew("transformer_commons_request_seconds_count", **api, outcome="http_503") == 1
    assert grew("transformer_commons_retries_total", **api, outcome="http_503") == 1
    assert grew("transformer_commons_retry_wait_seconds_total", reason="retry_after") >= 0.1
    assert grew("transformer_commons_request_seconds_count", **download, outcome="ok") >= 1
    assert grew("transformer_commons_download_bytes_count") >= 1
    assert grew("transformer_commons_download_bytes_sum") > 1000
    assert grew("transformer_decode_seconds_count", model="logo-detection") >= 1
    assert grew("transformer_decode_seconds_count", model="nsfw-detection") == 3
    assert grew("transformer_triton_request_seconds_count", model="nsfw-detection", outcome="ok") >= 1
    assert grew("transformer_triton_batch_size_sum", model="nsfw-detection") == 2
    assert grew("transformer_item_errors_total", model="nsfw-detection", code="unsupported_image") == 1

    # Bounded labels: no title, file name or host ever becomes a label value.
    values = {v for _, labels in after for _, v in labels}
    assert not any("Metrics test" in v or "127.0.0.1" in v for v in values)
