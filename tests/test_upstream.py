"""Commons and Triton failures become 502/503/504 and never mask the client's good items."""

from __future__ import annotations

import base64
import os
import subprocess

import httpx
import pytest

from predictor.triton_server import TritonPorts
from predictor.stack import transformer_command
from tests import images
from tests.conftest import ROOT, free_port, wait_transformer

LOGO = "/v1/models/logo-detection:predict"
ATTEMPTS = 3  # COMMONS_RETRIES=2 → three tries per call


def inline() -> dict:
    data = images.encode(images.photo(200, 150, 11), "JPEG")
    return {"filename": "inline.jpg", "image": base64.b64encode(data).decode()}


def test_commons_outage_fails_only_the_lookups(client: httpx.Client, fake_commons) -> None:
    fake_commons.fail_api(times=ATTEMPTS, status=503)
    response = client.post(LOGO, json={"instances": [inline(), {"filename": "Kanion Co.png"}]})
    assert response.status_code == 200, response.text
    scored, failed = response.json()["predictions"]
    assert "prediction" in scored
    assert failed["error"]["code"] == "commons_unavailable"
    assert "Commons" in failed["error"]["message"]


@pytest.mark.parametrize(("status", "expected"), [(503, 503), (500, 502), (429, 503)])
def test_commons_outage_for_every_item_is_5xx(
    client: httpx.Client, fake_commons, status: int, expected: int
) -> None:
    fake_commons.fail_api(times=ATTEMPTS, status=status)
    response = client.post(LOGO, json={"instances": [{"filename": "Kanion Co.png"}]})
    assert response.status_code == expected, response.text
    assert "Commons" in response.json()["error"]


def test_commons_timeout_is_504(client: httpx.Client, fake_commons) -> None:
    fake_commons.api_delay = 6.0  # over COMMONS_API_TIMEOUT_S=5
    try:
        response = client.post(LOGO, json={"instances": [{"filename": "Tiny icon.png"}]})
    finally:
        fake_commons.api_delay = 0.0
    assert response.status_code == 504, response.text


def test_triton_down_is_503(fake_commons, tmp_path) -> None:
    dead = TritonPorts(http=free_port(), grpc=free_port(), metrics=free_port())
    port = free_port()
    env = dict(os.environ, COMMONS_API_URL=fake_commons.api_url)
    log = tmp_path / "transformer.log"
    command = [c for c in transformer_command(port, dead) if c != "--enable_predictor_health_check"]
    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_transformer(url, process, log)
            response = httpx.post(url + LOGO, json={"instances": [inline()]}, timeout=60)
        finally:
            process.terminate()
            process.wait(timeout=20)
    assert response.status_code == 503, response.text
    assert "Triton" in response.json()["error"]
