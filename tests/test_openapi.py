"""docs/openapi.yaml is valid OpenAPI 3.1, its examples match its schemas, and the live
service answers as it says.

Every example request in the spec is sent over HTTP to the real stack, and the answer is
checked against the spec's response for the status the spec gives that example (the
response example of the same name): the status, the body against the response schema
(JSON Schema 2020-12; the schemas are closed, so an added, renamed or dropped field fails
here) and the required headers. The 413/5xx answers come from a transformer of this
module's own, with settings that make them happen.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
import yaml
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from devtools import images, videos
from devtools.fake_commons import FakeCommons
from predictor.triton_server import TritonPorts
from stack import Stack
from stack.launcher import WITHOUT_SCORE_STORE, commons_environment
from transformer.errors import STATUS_BY_CODE

ROOT = Path(__file__).resolve().parent.parent
SPEC = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
SPEC_URI = "urn:openapi"
REGISTRY = Registry().with_resource(SPEC_URI, DRAFT202012.create_resource(SPEC))
LOGO = "/v1/models/logo-detection:predict"
NSFW = "/v1/models/nsfw-detection:predict"
VIDEO = "/v1/models/nsfw-video-detection:predict"
PREDICT = (LOGO, NSFW, VIDEO)
JSON = "application/json"

SVG = b"""<svg xmlns="http://www.w3.org/2000/svg" width="240" height="240" viewBox="0 0 240 240">
  <circle cx="120" cy="120" r="100" fill="#339966"/><circle cx="120" cy="120" r="50" fill="#fff"/>
</svg>"""
# The files the spec's examples name, for the MediaWiki stand-in to host.
EXAMPLE_FILES = {
    "Wikimedia-logo.svg": SVG,
    "Example.jpg": images.encode(images.photo(640, 480, 31), "JPEG", quality=90),
    "Example.webm": videos.encode(videos.PHOTO_THEN_SKIN, codec=videos.VP8),
}


# --- the spec, as data --------------------------------------------------------------------


def _at(tokens: tuple[str, ...]) -> object:
    node: object = SPEC
    for token in tokens:
        node = node[token]  # type: ignore[index]
    return node


def _followed(tokens: tuple[str, ...]) -> tuple[str, ...]:
    """``tokens``, or where the ``$ref`` found there points."""
    node = _at(tokens)
    if isinstance(node, dict) and "$ref" in node:
        ref = node["$ref"]
        assert ref.startswith("#/"), ref
        return tuple(t.replace("~1", "/").replace("~0", "~") for t in ref[2:].split("/"))
    return tokens


def _validator(tokens: tuple[str, ...]) -> Draft202012Validator:
    pointer = "/".join(quote(t.replace("~", "~0").replace("/", "~1"), safe="") for t in tokens)
    return Draft202012Validator(
        {"$id": "urn:check", "$ref": f"{SPEC_URI}#/{pointer}"}, registry=REGISTRY
    )


def _problems(tokens: tuple[str, ...], instance: object) -> list[str]:
    problems = []
    for error in _validator(tokens).iter_errors(instance):
        where = "/".join(map(str, error.absolute_path)) or "(body)"
        # A oneOf's own message quotes the whole item; its branches' say what is wrong.
        why = "; ".join(sorted({e.message for e in error.context})) or error.message
        problems.append(f"{where}: {why}")
    return problems


def _response(path: str, method: str, status: int) -> tuple[str, ...]:
    responses = ("paths", path, method, "responses")
    assert str(status) in _at(responses), f"{method.upper()} {path}: {status} is not in the spec"
    return _followed((*responses, str(status)))


def _examples(tokens: tuple[str, ...]) -> dict:
    """The JSON examples of the request body or response at ``tokens``."""
    return _at(tokens).get("content", {}).get(JSON, {}).get("examples", {})


def _request_examples() -> list[tuple[str, str]]:
    return [
        (path, name)
        for path, item in SPEC["paths"].items()
        if "post" in item
        for name in _examples(("paths", path, "post", "requestBody"))
    ]


def _documented_status(path: str, name: str) -> int:
    """The status whose response example is named like request example ``name``."""
    statuses = [
        int(status)
        for status in _at(("paths", path, "post", "responses"))
        if name in _examples(_response(path, "post", int(status)))
    ]
    assert len(statuses) == 1, f"{path}: request example {name!r} has responses {statuses}"
    return statuses[0]


def assert_documented(response: httpx.Response, path: str, method: str = "post") -> None:
    """``response`` is what the spec says ``method path`` answers with its status."""
    tokens = _response(path, method, response.status_code)
    declared = _at(tokens)
    problems = _problems((*tokens, "content", JSON, "schema"), response.json())
    assert not problems, f"{method.upper()} {path} → {response.status_code}: {problems}"
    for name in declared.get("headers", {}):
        header = _at(_followed((*tokens, "headers", name)))
        if header.get("required"):
            assert name in response.headers, f"{response.status_code} lacks header {name}"
            value = response.headers[name]
            schema_tokens = (*_followed((*tokens, "headers", name)), "schema")
            assert not _problems(schema_tokens, value), f"{name}: {value!r}"


def assert_error_body(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    assert not _problems(("components", "schemas", "Error"), response.json()), response.text


# --- the document itself ------------------------------------------------------------------


def test_the_spec_is_valid_openapi_3_1() -> None:
    assert SPEC["openapi"].startswith("3.1.")
    validate(SPEC)


def test_it_documents_the_three_predict_endpoints_and_the_probes() -> None:
    assert set(PREDICT) | {"/", "/v1/models/{model}", "/v2/health/ready"} == set(SPEC["paths"])
    served = SPEC["components"]["parameters"]["Model"]["schema"]["enum"]
    assert served == [p.split("/")[-1].removesuffix(":predict") for p in PREDICT]


def test_every_example_matches_its_schema() -> None:
    checked = 0
    for path, name in _request_examples():
        # Examples answered with 2xx are valid requests; the 400 ones need not be.
        body = ("paths", path, "post", "requestBody", "content", JSON)
        if _documented_status(path, name) < 400:
            value = _at((*body, "examples", name, "value"))
            assert not _problems((*body, "schema"), value), (path, name)
            checked += 1
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            for status in operation["responses"]:
                tokens = _response(path, method, int(status))
                for name, example in _examples(tokens).items():
                    problems = _problems((*tokens, "content", JSON, "schema"), example["value"])
                    assert not problems, f"{path} {status} example {name}: {problems}"
                    checked += 1
    assert checked > 30


def test_item_error_codes_are_the_status_tables() -> None:
    codes = SPEC["components"]["schemas"]["ItemError"]["properties"]["code"]["enum"]
    assert sorted(codes) == sorted(STATUS_BY_CODE)


def test_every_predict_status_the_service_uses_is_declared() -> None:
    for path in PREDICT:
        assert set(_at(("paths", path, "post", "responses"))) == {
            "200", "400", "408", "413", "500", "502", "503", "504",
        }  # fmt: skip


# --- live answers of the session's stack --------------------------------------------------


@pytest.fixture(scope="module")
def hosted(fake_commons: FakeCommons) -> FakeCommons:
    for name, data in EXAMPLE_FILES.items():
        fake_commons.add_file(name, data)
    return fake_commons


@pytest.mark.parametrize(("path", "name"), _request_examples())
def test_every_example_request_is_answered_as_documented(
    client: httpx.Client, hosted: FakeCommons, path: str, name: str
) -> None:
    example = _at(("paths", path, "post", "requestBody", "content", JSON, "examples", name))
    response = client.post(path, json=example["value"])
    assert response.status_code == _documented_status(path, name), response.text
    assert_documented(response, path)


def test_every_predict_endpoint_has_examples_of_its_answers() -> None:
    for path in PREDICT:
        statuses = {_documented_status(path, name) for p, name in _request_examples() if p == path}
        assert {200, 400} <= statuses, path


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", None])
def test_the_body_is_json_whatever_its_content_type(
    client: httpx.Client, content_type: str | None
) -> None:
    """No 415: clients that forget the header are served."""
    example = _at(("paths", NSFW, "post", "requestBody", "content", JSON, "examples", "debug"))
    content = httpx.Request("POST", "/", json=example["value"]).content
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post(NSFW, content=content, headers=headers)
    assert response.status_code == 200, response.text
    assert_documented(response, NSFW)


@pytest.mark.parametrize(
    ("path", "template", "status"),
    [
        ("/", "/", 200),
        ("/v1/models/logo-detection", "/v1/models/{model}", 200),
        ("/v1/models/nsfw-detection", "/v1/models/{model}", 200),
        ("/v1/models/nsfw-video-detection", "/v1/models/{model}", 200),
        ("/v1/models/nope", "/v1/models/{model}", 404),
        ("/v2/health/ready", "/v2/health/ready", 200),
    ],
)
def test_probes_answer_as_documented(
    transformer_url: str, path: str, template: str, status: int
) -> None:
    response = httpx.get(transformer_url + path, timeout=30)
    assert response.status_code == status, response.text
    assert_documented(response, template, "get")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/v1/models/nope:predict", 404),
        ("POST", "/v2/repository/models/logo-detection/load", 404),
        ("POST", "/v2/models/logo-detection/infer", 404),
        ("GET", LOGO, 405),
        ("POST", "/v1/models/logo-detection", 405),
        ("POST", "/v1/models/logo-detection:explain", 501),
    ],
)
def test_other_routes_answer_the_documented_error(
    client: httpx.Client, method: str, path: str, status: int
) -> None:
    response = client.request(method, path, json={"instances": [{"filename": "Example.jpg"}]})
    assert_error_body(response, status)


# --- 413 and 5xx, from a transformer made to fail -----------------------------------------

MAX_BODY_BYTES = 8192
DEADLINE_S = 2.0
BODY_TIMEOUT_S = 1.0


@pytest.fixture(scope="module")
def stand_in() -> Iterator[FakeCommons]:
    with FakeCommons(EXAMPLE_FILES) as fake:
        yield fake


@pytest.fixture(scope="module")
def failing(
    triton: TritonPorts, stand_in: FakeCommons, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Every Triton call times out, Commons is asked once per call, and one predict request
    at a time is admitted."""
    settings = {
        "TRITON_TIMEOUT_S": "0.001",
        "COMMONS_RETRIES": "0",
        "REQUEST_DEADLINE_S": str(DEADLINE_S),
        "MAX_INFLIGHT_REQUESTS": "1",
        "MAX_QUEUED_REQUESTS": "0",
        "MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    }
    with Stack(
        triton_ports=triton,
        start_triton=False,
        env={**commons_environment(stand_in.api_url), **WITHOUT_SCORE_STORE, **settings},
        logs=tmp_path_factory.mktemp("failing"),
    ) as served:
        yield served.url


@pytest.fixture
def commons(stand_in: FakeCommons) -> Iterator[FakeCommons]:
    stand_in.reset()
    yield stand_in
    stand_in.reset()


BY_NAME = {"instances": [{"filename": "Example.jpg"}]}


def test_a_body_over_the_limit_is_413(failing: str) -> None:
    response = httpx.post(failing + LOGO, content=b"x" * (MAX_BODY_BYTES + 1), timeout=30)
    assert response.status_code == 413, response.text
    assert_documented(response, LOGO)


def test_a_body_that_stops_arriving_is_408(failing: str) -> None:
    """A client that declares 100 bytes and sends one: answered when the body's time is up."""
    url = httpx.URL(failing)
    with socket.create_connection((url.host, url.port), timeout=30) as client:
        client.sendall(f"POST {LOGO} HTTP/1.1\r\nHost: {url.host}\r\nContent-Type: application/json\r\n"
                       "Content-Length: 100\r\n\r\n{".encode())
        started = time.monotonic()
        raw = b""
        while b"\r\n\r\n" not in raw:
            chunk = client.recv(65536)
            assert chunk, f"the connection closed without an answer: {raw!r}"
            raw += chunk
        elapsed = time.monotonic() - started
        head, body = raw.split(b"\r\n\r\n", 1)
        status_line, *header_lines = head.decode().split("\r\n")
        headers = dict(line.split(": ", 1) for line in header_lines)
        while len(body) < int(headers["content-length"]):
            chunk = client.recv(65536)
            assert chunk, f"the connection closed mid-answer: {raw + body!r}"
            body += chunk
    assert BODY_TIMEOUT_S <= elapsed < BODY_TIMEOUT_S + 10
    response = httpx.Response(int(status_line.split()[1]), headers=headers, content=body)
    assert response.status_code == 408, raw
    assert response.json()["error"] == "the request body did not arrive within 1 s (1 bytes came)"
    assert_documented(response, LOGO)


@pytest.mark.parametrize(("commons_status", "status"), [(500, 502), (429, 503), (503, 503)])
def test_commons_failing_every_item_is_documented(
    failing: str, commons: FakeCommons, commons_status: int, status: int
) -> None:
    commons.fail_api(times=1, status=commons_status)
    response = httpx.post(failing + LOGO, json=BY_NAME, timeout=30)
    assert response.status_code == status, response.text
    assert response.json()["predictions"][0]["error"]["code"] == "commons_unavailable"
    assert_documented(response, LOGO)


def test_the_request_deadline_passing_is_504(failing: str, commons: FakeCommons) -> None:
    commons.api_delay = DEADLINE_S + 2
    body = {"instances": [{"filename": "Example.webm"}]}
    response = httpx.post(failing + VIDEO, json=body, timeout=30)
    assert response.status_code == 504, response.text
    assert response.json()["predictions"][0]["error"]["code"] == "deadline_exceeded"
    assert_documented(response, VIDEO)


def test_overload_is_503_with_retry_after(failing: str, commons: FakeCommons) -> None:
    """One request waiting on a slow Commons fills the one slot: the next is refused."""
    commons.api_delay = DEADLINE_S + 2
    before = len(commons.api_requests)
    slow = threading.Thread(
        target=lambda: httpx.post(failing + LOGO, json=BY_NAME, timeout=30), daemon=True
    )
    slow.start()
    waited = time.monotonic() + DEADLINE_S
    while len(commons.api_requests) == before and time.monotonic() < waited:
        time.sleep(0.02)
    assert len(commons.api_requests) > before, "the slow request never reached Commons"
    response = httpx.post(failing + NSFW, json=BY_NAME, timeout=30)
    slow.join()
    assert response.status_code == 503, response.text
    assert "overloaded" in response.json()["error"]
    assert_documented(response, NSFW)


# Small enough for MAX_BODY_BYTES.
FRAMES = [(images.photo(16, 16, 5), 500), (images.photo(16, 16, 6), 500)]
INLINE = {
    LOGO: {"image": base64.b64encode(images.encode(images.photo(32, 32, 3), "PNG")).decode()},
    NSFW: {"image": base64.b64encode(images.encode(images.photo(32, 32, 4), "PNG")).decode()},
    VIDEO: {"video": base64.b64encode(videos.animated(FRAMES, "GIF")).decode()},
}


@pytest.mark.parametrize("path", PREDICT)
def test_triton_timing_out_is_504(failing: str, path: str) -> None:
    response = httpx.post(failing + path, json={"instances": [INLINE[path]]}, timeout=30)
    assert response.status_code == 504, response.text
    assert "DEADLINE_EXCEEDED" in response.json()["error"]
    assert_documented(response, path)
