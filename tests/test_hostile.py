"""Hostile input, case by case, over HTTP against the real stack.

Each case sends what an attacker or a broken client would and asserts three things: the
documented status, the item error code (when there are items), and the resource bounds:
the stack's resident memory never grows more than `MAX_GROWTH` over its level before the
suite, and a readiness GET sent every 100 ms while the case runs always answers within
`MAX_STALL_S`. A final case sends the memory-heaviest inputs 16 at once.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx
import orjson
import pytest

from devtools import images, videos
from stack import Stack
from tests.conftest import ROOT
from tests.resources import MemoryWatch, ReadinessWatch

MAX_GROWTH = 1024**3
MAX_STALL_S = 0.5
LOGO = "logo-detection"
NSFW = "nsfw-detection"
VIDEO = "nsfw-video-detection"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def one(media: bytes | str, key: str = "image", **extra: object) -> dict:
    value = media if isinstance(media, str) else b64(media)
    return {"instances": [{key: value, **extra}]}


def named(*names: str) -> dict:
    return {"instances": [{"filename": name} for name in names]}


def small_jpeg() -> bytes:
    return images.encode(images.photo(120, 90, 3), "JPEG")


@dataclass(frozen=True)
class Case:
    """``body`` builds the request lazily (some are tens of MB); a dict is sent as JSON.
    ``codes``: each prediction's error code in order, None for a scored item."""

    id: str
    model: str
    body: Callable[[], dict | bytes]
    status: int
    codes: tuple[str | None, ...] = ()
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"
    path: str | None = None


def _cases() -> list[Case]:
    jpeg = small_jpeg
    cases = [
        # --- request shape ---------------------------------------------------------------
        Case("not-json", LOGO, lambda: b"this is not json", 400),
        Case("json-array", LOGO, lambda: b"[1, 2, 3]", 400),
        Case("no-instances", LOGO, lambda: {"inputs": []}, 400),
        Case("instances-not-list", LOGO, lambda: {"instances": {"image": "x"}}, 400),
        Case("instances-empty", LOGO, lambda: {"instances": []}, 400),
        Case("instances-51", LOGO, lambda: named(*(f"F{i}.png" for i in range(51))), 400),
        Case("instance-is-string", LOGO, lambda: {"instances": ["Kanion Co.png"]}, 400, ("invalid_instance",)),
        Case("filename-number", LOGO, lambda: {"instances": [{"filename": 7}]}, 400, ("invalid_instance",)),
        Case("target-object", LOGO, lambda: {"instances": [{"image": b64(jpeg()), "target": {}}]}, 400, ("invalid_instance",)),
        Case("nothing-to-score", LOGO, lambda: {"instances": [{"target": "logo"}]}, 400, ("invalid_instance",)),
        Case("empty-objects-40mb", LOGO, lambda: b'{"instances":[' + b"{}," * 13_000_000 + b"{}]}", 400),
        Case("nested-arrays", LOGO, lambda: b'{"instances":' + b"[" * 200_000 + b"]" * 200_000 + b"}", 400),
        Case("many-keys", LOGO, lambda: orjson.dumps({"instances": [{f"k{i}": i for i in range(100_000)}]}), 400),
        Case("whitespace-40mb", LOGO, lambda: b" " * 40_000_000 + orjson.dumps(one(jpeg())), 200, (None,)),
        Case("huge-number", LOGO, lambda: b'{"instances":[{"image":' + b"9" * 1_000_000 + b"}]}", 400),
        Case("invalid-utf8", LOGO, lambda: b'{"instances":[{"filename":"\xff\xfe.png"}]}', 400),
        Case("body-over-limit", LOGO, lambda: b"x" * (48 * 1024 * 1024 + 1), 413),
        Case("no-content-type", LOGO, lambda: orjson.dumps(one(jpeg())), 200, (None,), headers={"content-type": ""}),
        Case("text-plain", LOGO, lambda: orjson.dumps(one(jpeg())), 200, (None,), headers={"content-type": "text/plain"}),
        Case("cloudevent-headers", LOGO, lambda: orjson.dumps(one(jpeg())), 200, (None,), headers={"ce-specversion": "1.0", "ce-id": "1", "ce-source": "x", "ce-type": "y"}),
        Case("one-bad-one-good", LOGO, lambda: {"instances": [{"image": "***"}, {"image": b64(jpeg())}]}, 200, ("invalid_base64", None)),
        # --- control plane and routes ----------------------------------------------------
        Case("unload", NSFW, lambda: b"", 404, path="/v2/repository/models/nsfw-detection/unload"),
        Case("load", NSFW, lambda: b"{}", 404, path="/v2/repository/models/nsfw-detection/load"),
        Case("repository-index", NSFW, lambda: b"{}", 404, path="/v2/repository/index"),
        Case("explain-v1", LOGO, lambda: named("Kanion Co.png"), 501, path="/v1/models/logo-detection:explain"),
        Case("explain-v2", LOGO, lambda: b"{}", 501, path="/v2/models/logo-detection/explain"),
        Case("v2-infer", LOGO, lambda: b"{}", 404, path="/v2/models/logo-detection/infer"),
        Case("unknown-model", LOGO, lambda: named("Kanion Co.png"), 404, path="/v1/models/../../etc:predict"),
        Case("predict-by-get", LOGO, lambda: b"", 405, method="GET", path="/v1/models/logo-detection:predict"),
        Case("docs", LOGO, lambda: b"", 404, method="GET", path="/docs"),
        # --- base64 ----------------------------------------------------------------------
        Case("b64-bad-chars", LOGO, lambda: one("!!!!"), 400, ("invalid_base64",)),
        Case("b64-bad-padding", LOGO, lambda: one(b64(jpeg())[:-1]), 400, ("invalid_base64",)),
        Case("b64-non-ascii", LOGO, lambda: one("ÿÿÿÿ" + b64(jpeg())), 400, ("invalid_base64",)),
        Case("b64-number", LOGO, lambda: {"instances": [{"image": 12345}]}, 400, ("invalid_base64",)),
        Case("b64-empty", LOGO, lambda: one(""), 400, ("empty_image",)),
        Case("b64-space-between-every-char", NSFW, lambda: one(" ".join(b64(images.encode(images.photo(1600, 1200, 4), "PNG")))), 200, (None,)),
        Case("b64-mime-lines", LOGO, lambda: one(base64.encodebytes(jpeg()).decode()), 200, (None,)),
        Case("b64-data-url", LOGO, lambda: one("data:image/jpeg;base64," + b64(jpeg())), 200, (None,)),
        Case("b64-over-image-limit", LOGO, lambda: one("A" * (34 * 1024 * 1024)), 400, ("image_too_large",)),
        # --- image formats and bombs -----------------------------------------------------
        Case("png-16bit-7000", NSFW, lambda: one(images.sixteen_bit_png(7000)), 400, ("image_too_large",)),
        Case("png-16bit-rgba-5000", NSFW, lambda: one(images.giant_png(5000, 5000, bit_depth=16, colour_type=6)), 200, (None,)),
        Case("png-palette-7000", LOGO, lambda: one(images.palette_png(7000)), 400, ("image_too_large",)),
        Case("png-header-50k", LOGO, lambda: one(images.decompression_bomb(50_000)), 400, ("image_too_large",)),
        Case("png-zero-width", LOGO, lambda: one(images.giant_png(0, 10, bit_depth=8, colour_type=2)), 400, ("unsupported_image",)),
        Case("png-one-pixel", LOGO, lambda: one(images.giant_png(1, 1, bit_depth=8, colour_type=2)), 200, (None,)),
        Case("png-1x40000", LOGO, lambda: one(images.giant_png(1, 40_000, bit_depth=8, colour_type=2)), 200, (None,)),
        Case("tiff-float-7000", NSFW, lambda: one(images.float_tiff(7000)), 400, ("image_too_large",)),
        Case("tiff-cmyk-7000", NSFW, lambda: one(images.cmyk_tiff(7000)), 400, ("image_too_large",)),
        Case("tiff-int32-7000", NSFW, lambda: one(images.int32_tiff(7000)), 400, ("image_too_large",)),
        Case("jpeg-progressive-header-7000", NSFW, lambda: one(images.progressive_jpeg_header()), 400, ("image_too_large",)),
        Case("tiff-giant-second-page", LOGO, lambda: one(images.later_frame_giant_tiff()), 200, (None,)),
        Case("jpeg-truncated", NSFW, lambda: one(images.encode(images.photo(300, 200, 5), "JPEG")[:3000]), 400, ("corrupt_image",)),
        Case("gif-growing-frame", LOGO, lambda: one(videos.growing_canvas_gif()), 200, (None,)),
        Case("html-bytes", LOGO, lambda: one(b"<!DOCTYPE html><html></html>"), 400, ("unsupported_image",)),
        Case("svg-bytes", LOGO, lambda: one(b'<svg xmlns="http://www.w3.org/2000/svg"/>'), 400, ("unsupported_image",)),
        Case("pdf-bytes", LOGO, lambda: one(b"%PDF-1.4\n%\xe2\xe3\n"), 400, ("unsupported_image",)),
        Case("random-bytes", LOGO, lambda: one(bytes(range(256)) * 40), 400, ("unsupported_image",)),
        # --- file names ------------------------------------------------------------------
        Case("name-dotdot", LOGO, lambda: named("../../etc/passwd"), 400, ("invalid_title",)),
        Case("name-file-dotdot", LOGO, lambda: named("File:../x.png"), 400, ("invalid_title",)),
        Case("name-url", LOGO, lambda: named("https://evil.example/x.png"), 400, ("file_not_found",)),
        Case("name-protocol-relative", LOGO, lambda: named("//evil.example/x.png"), 400, ("file_not_found",)),
        Case("name-special-namespace", LOGO, lambda: named("Special:Random"), 400, ("file_not_found",)),
        Case("name-interwiki", LOGO, lambda: named("en:File:Kanion Co.png"), 400, ("file_not_found",)),
        Case("name-prefix-only", LOGO, lambda: named("File:"), 400, ("invalid_title",)),
        Case("name-pipe", LOGO, lambda: named("A|Kanion Co.png"), 400, ("invalid_title",)),
        Case("name-nul", LOGO, lambda: named("Kanion\x00Co.png"), 400, ("invalid_title",)),
        Case("name-newline", LOGO, lambda: named("Kanion\nCo.png"), 400, ("invalid_title",)),
        Case("name-percent-encoded", LOGO, lambda: named("%2e%2e%2fpasswd"), 400, ("invalid_title",)),
        Case("name-fragment", LOGO, lambda: named("Kanion Co.png#x"), 400, ("invalid_title",)),
        Case("name-256-bytes", LOGO, lambda: named("é" * 128 + ".png"), 400, ("invalid_title",)),
        Case("name-5mb", LOGO, lambda: named("a" * 5_000_000), 400, ("invalid_title",)),
        Case("name-5mb-non-ascii", LOGO, lambda: named("é" * 2_500_000), 400, ("invalid_title",)),
        # 30 M code points that NFC composes in pairs: normalising them all takes most of a second.
        Case("name-45mb-decomposed", LOGO, lambda: named("e\u0301" * 15_000_000), 400, ("invalid_title",)),
        Case("name-10mb-of-underscores", LOGO, lambda: named("File:" + "_" * 10_000_000 + "Kanion_Co.png"),
             400, ("invalid_title",)),
        Case("name-50-same", LOGO, lambda: named(*["Kanion_Co.png"] * 50), 200, (None,) * 50),
        Case("name-html-on-commons", LOGO, lambda: named("Not really an image.jpg"), 502, ("fetch_failed",)),
        Case("name-video-for-image-model", LOGO, lambda: named("Skin clip.webm"), 400, ("not_an_image",)),
        # --- videos and per-video options ------------------------------------------------
        Case("video-random-bytes", VIDEO, lambda: one(bytes(range(256)) * 40, "video"), 400, ("unsupported_video",)),
        Case("video-empty", VIDEO, lambda: one("", "video"), 400, ("empty_video",)),
        Case("video-still-png", VIDEO, lambda: one(images.giant_png(64, 64, bit_depth=8, colour_type=2), "video"), 400, ("not_a_video",)),
        Case("video-truncated", VIDEO, lambda: one(videos.encode(videos.PHOTO_THEN_SKIN, codec=videos.VP8)[:4000], "video"), 400, ("truncated_video",)),
        Case("video-gif-growing-frame", VIDEO, lambda: one(videos.growing_canvas_gif(), "video"), 400, ("video_too_large",)),
        Case("video-webm-growing-keyframe", VIDEO, lambda: one(videos.growing_frames_webm(big=2048, seconds=0.2), "video"), 400, ("video_too_large",)),
        Case("video-gif-3000-frames", VIDEO, lambda: one(videos.many_frames_gif(3000), "video"), 200, (None,)),
        Case("video-threshold-zero", VIDEO, lambda: one(videos.many_frames_gif(3), "video", threshold=0), 400, ("invalid_instance",)),
        Case("video-threshold-string", VIDEO, lambda: one(videos.many_frames_gif(3), "video", threshold="0.5"), 400, ("invalid_instance",)),
        Case("video-early-exit-string", VIDEO, lambda: one(videos.many_frames_gif(3), "video", early_exit="yes"), 400, ("invalid_instance",)),
        Case("video-request-threshold-2", VIDEO, lambda: {"threshold": 2, **one(videos.many_frames_gif(3), "video")}, 400),
        Case("video-name-not-video", VIDEO, lambda: named("Portrait photo.jpg"), 400, ("not_a_video",)),
    ]
    return cases


CASES = _cases()


# Where the suite writes what it saw: per case, the memory growth and the longest stall.
REPORT = ROOT / "build" / "test-reports" / "hostile.json"
_seen: dict[str, dict[str, float]] = {}


@pytest.fixture(scope="module")
def watches(stack: Stack) -> Iterator[tuple[MemoryWatch, ReadinessWatch]]:
    memory = MemoryWatch(stack.pids())
    with memory, ReadinessWatch(f"{stack.url}/v1/models/{NSFW}") as readiness:
        yield memory, readiness
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_bytes(orjson.dumps(_seen, option=orjson.OPT_INDENT_2))


def send(client: httpx.Client, case: Case) -> httpx.Response:
    path = case.path or f"/v1/models/{case.model}:predict"
    body = case.body()
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"content-type": "application/json", **case.headers}
    headers = {k: v for k, v in headers.items() if v}
    return client.request(case.method, path, content=content, headers=headers)


def check_bounds(memory: MemoryWatch, readiness: ReadinessWatch, case_id: str) -> None:
    _seen[case_id] = {
        "memory_growth_mib": round(memory.growth / 2**20, 1),
        "longest_readiness_s": round(readiness.longest, 3),
    }
    assert memory.growth <= MAX_GROWTH, f"memory grew {memory.growth / 2**20:.0f} MiB"
    assert readiness.failures == 0, "a readiness probe failed"
    assert readiness.longest <= MAX_STALL_S, f"readiness took {readiness.longest:.2f} s"


def test_there_are_at_least_sixty_cases() -> None:
    assert len(CASES) >= 60
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_hostile_case(
    client: httpx.Client, watches: tuple[MemoryWatch, ReadinessWatch], case: Case
) -> None:
    memory, readiness = watches
    readiness.reset()
    response = send(client, case)
    assert response.status_code == case.status, response.text[:500]
    if response.status_code >= 500:
        assert "Traceback" not in response.text
    if case.codes:
        predictions = response.json()["predictions"]
        codes = tuple(p["error"]["code"] if "error" in p else None for p in predictions)
        assert codes == case.codes, response.text[:500]
    else:
        assert "error" in response.json()
    check_bounds(memory, readiness, case.id)


HEAVY = (
    "png-16bit-7000",
    "tiff-float-7000",
    "png-palette-7000",
    "png-16bit-rgba-5000",
    "b64-space-between-every-char",
    "video-gif-3000-frames",
)


@pytest.mark.parametrize("case_id", HEAVY)
def test_sixteen_at_once(
    transformer_url: str, watches: tuple[MemoryWatch, ReadinessWatch], case_id: str
) -> None:
    """The heaviest inputs 16 at once: each is answered as alone, refused with 503 +
    Retry-After by admission control, or (videos queued for the one video worker)
    answered with ``deadline_exceeded``; memory and readiness stay within bounds."""
    memory, readiness = watches
    case = next(c for c in CASES if c.id == case_id)
    body = case.body()
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    readiness.reset()

    def post(_: int) -> httpx.Response:
        with httpx.Client(base_url=transformer_url, timeout=120) as client:
            return client.post(
                f"/v1/models/{case.model}:predict",
                content=content,
                headers={"content-type": "application/json"},
            )

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(post, range(16)))
    for response in responses:
        if response.status_code == 503:
            assert response.headers["retry-after"]
        elif response.status_code == 504:
            codes = {p["error"]["code"] for p in response.json()["predictions"]}
            assert codes == {"deadline_exceeded"}, response.text[:300]
        else:
            assert response.status_code == case.status, response.text[:300]
    check_bounds(memory, readiness, f"16x-{case_id}")


def test_liveness_and_readiness_after_the_hostile_cases(client: httpx.Client) -> None:
    assert client.get("/").status_code == 200
    for name in (LOGO, NSFW, VIDEO):
        assert client.get(f"/v1/models/{name}").json() == {"name": name, "ready": True}


def test_no_traceback_was_logged_for_the_hostile_cases(stack: Stack) -> None:
    """Client mistakes are answered, not logged as server errors."""
    path = stack.log_path("transformer")
    assert path is not None
    log = path.read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 500 :][:3000]


def test_request_ids_are_echoed_when_sane(client: httpx.Client) -> None:
    response = client.get("/v1/models/logo-detection", headers={"x-request-id": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    weird = client.get("/", headers={"x-request-id": "bad id; with spaces"})
    assert weird.headers["x-request-id"] != "bad id; with spaces"
