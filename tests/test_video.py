"""nsfw-video-detection over HTTP on the real Triton and the fake Commons, plus
the pure parts: the sampling policy and the report's segments.

Single-image scores come from ``nsfw-detection`` on PNGs (lossless) of the very frames a
video is made of, so "the video's score is the max of its frames' scores" is checked
against the service's own image path. Where the video's frames are bit-exact (a lossless
codec, animations of exact frames, or frames taken from the decoder itself) the scores
must agree to `EXACT`: the same pixels make the same tensor.
"""

from __future__ import annotations

import base64
import io
import json
import math
import random
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import httpx
import pytest
from PIL import Image, ImageSequence

from devtools import images, videos
from transformer.video import cli as video_cli
from transformer.video.errors import VideoError
from transformer.video.limits import VideoLimits
from transformer.video.pipeline import ScoringOptions
from transformer.video.report import FrameScore, segments
from transformer.video.sampling import sampling_interval, scan_video

VIDEO = "/v1/models/nsfw-video-detection:predict"
NSFW = "/v1/models/nsfw-detection:predict"
SIZE = (320, 240)
PHOTO = images.photo(*SIZE, 22)  # open_nsfw ≈ 0.001
MID = videos.skin(*SIZE, 13)  # ≈ 0.25
HIGH = videos.skin(*SIZE, 4)  # ≈ 0.43
MAX_FRAMES = 300  # the MAX_VIDEO_FRAMES default the test transformer runs with
# Same pixels, same tensor: only Triton's batching may move the last float bits.
EXACT = 1e-4
ROOT = Path(__file__).resolve().parent.parent


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def image_scores(client: httpx.Client, frames: list[Image.Image]) -> list[float]:
    instances = [{"image": b64(images.encode(frame, "PNG"))} for frame in frames]
    response = client.post(NSFW, json={"instances": instances})
    assert response.status_code == 200, response.text
    return [p["prediction"] for p in response.json()["predictions"]]


def score_video(client: httpx.Client, data: bytes, **options: object) -> dict:
    response = client.post(VIDEO, json={"instances": [{"video": b64(data), **options}]})
    assert response.status_code == 200, response.text
    (prediction,) = response.json()["predictions"]
    return prediction


def video_error(client: httpx.Client, data: bytes) -> dict:
    response = client.post(VIDEO, json={"instances": [{"filename": "x.webm", "video": b64(data)}]})
    assert response.status_code == 400, response.text
    body = response.json()
    error = body["predictions"][0]["error"]
    assert body["error"] == error["message"]
    return error


def assert_covers_duration(prediction: dict) -> None:
    spans = prediction["segments"]
    assert spans[0]["start_s"] == 0.0
    assert spans[-1]["end_s"] == prediction["duration_s"]
    assert all(a["end_s"] == b["start_s"] for a, b in pairwise(spans))
    assert all(s["start_s"] < s["end_s"] for s in spans)


@pytest.fixture(scope="module")
def scores(transformer_url: str) -> dict[str, float]:
    with httpx.Client(base_url=transformer_url, timeout=60) as client:
        photo, mid, high = image_scores(client, [PHOTO, MID, HIGH])
    # The fixtures must differ clearly for thresholds between them to mean something.
    assert photo < 0.05 < mid - 0.1 < high - 0.2
    return {"photo": photo, "mid": mid, "high": high}


def test_readiness(client: httpx.Client) -> None:
    response = client.get("/v1/models/nsfw-video-detection")
    assert response.status_code == 200
    assert response.json() == {"name": "nsfw-video-detection", "ready": True}


def test_prediction_is_the_max_of_the_frame_scores(
    client: httpx.Client, scores: dict[str, float]
) -> None:
    data = videos.encode([(PHOTO, 3), (MID, 3), (HIGH, 2), (PHOTO, 3)], codec=videos.LOSSLESS)
    threshold = (scores["mid"] + scores["high"]) / 2
    prediction = score_video(client, data, threshold=threshold, target="nsfw")

    assert prediction["prediction"] == pytest.approx(max(scores.values()), abs=EXACT)
    assert prediction["out_of_domain"] == pytest.approx(1 - prediction["prediction"])
    assert prediction["target"] == "nsfw"
    assert prediction["duration_s"] == 11.0
    # 11 s: one frame a second, and the cuts at 3, 6 and 8 s fall on those frames.
    assert prediction["frames_scored"] == 11
    assert prediction["nsfw_fraction"] == pytest.approx(2 / 11)
    assert prediction["first_flagged_s"] == 6.0
    assert prediction["early_exit"] is False
    assert_covers_duration(prediction)
    spans = [(s["start_s"], s["end_s"]) for s in prediction["segments"]]
    assert spans == [(0.0, 3.0), (3.0, 6.0), (6.0, 8.0), (8.0, 11.0)]
    expected = [scores["photo"], scores["mid"], scores["high"], scores["photo"]]
    for segment, score in zip(prediction["segments"], expected, strict=True):
        assert segment["score"] == pytest.approx(score, abs=EXACT)


def test_lossy_video_scores_are_those_of_its_decoded_frames(client: httpx.Client) -> None:
    data = videos.encode([(PHOTO, 3), (MID, 3), (HIGH, 2), (PHOTO, 3)], codec=videos.H264)
    prediction = score_video(client, data)
    # The frames used: one a second (the cuts fall on them), as the service decodes them.
    # H.264 loses detail, but the reference frames come out of the same FFmpeg decoder and
    # RGB conversion the service uses, so their pixels, and scores, are the service's.
    used = image_scores(client, videos.frames_at(data, [float(t) for t in range(11)]))
    assert prediction["frames_scored"] == len(used)
    assert prediction["prediction"] == pytest.approx(max(used), abs=EXACT)
    for segment in prediction["segments"]:
        inside = used[round(segment["start_s"]) : round(segment["end_s"])]
        assert segment["score"] == pytest.approx(max(inside), abs=EXACT)


def test_lossless_codec_keeps_every_pixel() -> None:
    """What the EXACT comparisons above rest on: LOSSLESS frames decode to the very images
    the video was made of."""
    data = videos.encode([(PHOTO, 1), (MID, 1), (HIGH, 1)], codec=videos.LOSSLESS)
    decoded = videos.frames_at(data, [0.5, 1.5, 2.5])
    for frame, source in zip(decoded, [PHOTO, MID, HIGH], strict=True):
        assert frame.tobytes() == source.tobytes()


def test_inserted_one_second_scene_is_found(client: httpx.Client, scores: dict[str, float]) -> None:
    fps, duration = 5, 141.0
    interval = sampling_interval(duration, MAX_FRAMES)
    # Put the insert strictly between two regular samples, on a frame boundary.
    grid = math.ceil(70 / interval) * interval
    start = math.ceil((grid + 0.01) * fps) / fps
    assert start + 1 < grid + interval, "the regular samples alone would see the insert"
    scenes = [(PHOTO, start), (HIGH, 1.0), (PHOTO, duration - start - 1)]
    data = videos.encode(scenes, fps=fps, codec=videos.LOSSLESS)
    threshold = (scores["photo"] + scores["high"]) / 2
    prediction = score_video(client, data, threshold=threshold)

    assert prediction["duration_s"] == duration
    assert prediction["first_flagged_s"] == pytest.approx(start)
    assert prediction["prediction"] == pytest.approx(scores["high"], abs=EXACT)
    assert prediction["frames_scored"] == math.ceil(duration / interval) + 2
    assert_covers_duration(prediction)
    flagged = [s for s in prediction["segments"] if s["score"] >= threshold]
    assert [(s["start_s"], s["end_s"]) for s in flagged] == [
        (pytest.approx(start), pytest.approx(start + 1))
    ]


def test_early_exit_stops_at_the_first_flagged_frame(
    client: httpx.Client, scores: dict[str, float]
) -> None:
    data = videos.encode([(PHOTO, 2), (HIGH, 2), (PHOTO, 36)])
    threshold = (scores["photo"] + scores["high"]) / 2
    full = score_video(client, data, threshold=threshold)
    early = score_video(client, data, threshold=threshold, early_exit=True)

    assert full["frames_scored"] == 40
    assert full["early_exit"] is False
    assert full["nsfw_fraction"] == pytest.approx(2 / 40)
    assert early["frames_scored"] == 3  # 0 s, 1 s and the flagged 2 s
    assert early["early_exit"] is True
    assert early["nsfw_fraction"] == pytest.approx(1 / 3)
    for prediction in (full, early):
        assert prediction["first_flagged_s"] == 2.0
        assert prediction["prediction"] >= threshold
        assert_covers_duration(prediction)
    assert early["segments"][-1] == {"start_s": 2.0, "end_s": 40.0, "score": early["prediction"]}


@pytest.mark.parametrize("codec", [videos.H264, videos.VP8, videos.OGG_VP8, videos.LOSSLESS])
def test_every_container_and_codec_scores_alike(
    client: httpx.Client, scores: dict[str, float], codec: tuple
) -> None:
    threshold = (scores["photo"] + scores["high"]) / 2
    prediction = score_video(
        client, videos.encode(videos.PHOTO_THEN_SKIN, codec=codec), threshold=threshold
    )
    assert (prediction["duration_s"], prediction["frames_scored"]) == (4.0, 10)
    assert prediction["first_flagged_s"] == 2.0
    assert prediction["nsfw_fraction"] == pytest.approx(0.5)


def test_request_level_options_apply_to_every_instance(
    client: httpx.Client, scores: dict[str, float]
) -> None:
    data = b64(videos.encode([(PHOTO, 2), (HIGH, 2), (PHOTO, 6)]))
    threshold = (scores["photo"] + scores["high"]) / 2
    body = {
        "instances": [{"video": data}, {"video": data, "early_exit": False}],
        "threshold": threshold,
        "early_exit": True,
    }
    response = client.post(VIDEO, json=body)
    assert response.status_code == 200, response.text
    first, second = response.json()["predictions"]
    assert (first["early_exit"], first["frames_scored"]) == (True, 3)
    assert (second["early_exit"], second["frames_scored"]) == (False, 10)


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP"])
def test_animated_images_are_videos(client: httpx.Client, fmt: str) -> None:
    frames = [(PHOTO, 1000), (HIGH, 1000), (PHOTO, 1000)]
    if fmt == "GIF":
        frames = [(image.quantize(64).convert("RGB"), ms) for image, ms in frames]
    data = videos.animated(frames, fmt)
    prediction = score_video(client, data)
    # The frames as Pillow decodes them (GIF palettes, lossy WebP), as still images.
    decoded = [f.convert("RGB") for f in ImageSequence.Iterator(Image.open(io.BytesIO(data)))]
    assert prediction["duration_s"] == 3.0
    assert prediction["frames_scored"] == 3  # samples every 0.3 s, but only 3 frames exist
    assert prediction["prediction"] == pytest.approx(max(image_scores(client, decoded)), abs=EXACT)
    assert_covers_duration(prediction)


def test_display_rotation_is_applied(client: httpx.Client) -> None:
    upright = images.photo(240, 320, 23)
    stored = upright.rotate(90, expand=True)
    video = videos.displayed_clockwise(videos.encode([(stored, 1.0)], codec=videos.LOSSLESS))
    prediction = score_video(client, video)
    expected, unturned = image_scores(client, [upright, stored])
    assert abs(expected - unturned) > 1e-3, "the fixture must tell the orientations apart"
    assert prediction["prediction"] == pytest.approx(expected, abs=1e-4)


def test_commons_lookup_fetches_original_videos(
    client: httpx.Client, fake_commons, scores: dict[str, float]
) -> None:
    names = [
        "Skin clip.webm",
        "File:Skin_clip.mp4",
        "skin loop.gif",
        "Portrait photo.jpg",
        "Kanion Co.png",
    ]
    threshold = (scores["photo"] + scores["high"]) / 2
    body = {"instances": [{"filename": n} for n in names], "threshold": threshold}
    response = client.post(VIDEO, json=body)
    assert response.status_code == 200, response.text
    webm, mp4, gif, jpeg, png = response.json()["predictions"]
    for prediction, name in ((webm, names[0]), (mp4, names[1]), (gif, names[2])):
        assert prediction["filename"] == name
        assert prediction["duration_s"] == 4.0
        assert prediction["first_flagged_s"] == 2.0
    assert jpeg["error"]["code"] == "not_a_video"
    assert "BITMAP (image/jpeg), not a video" in jpeg["error"]["message"]
    assert png["error"]["code"] == "not_a_video"
    assert "still PNG" in png["error"]["message"]
    fetched = {r.path for r in fake_commons.file_requests}
    assert {"/original/Skin_clip.webm", "/original/Skin_clip.mp4"} <= fetched


def test_commons_stand_in_reports_what_mediawiki_knows_of_videos(fake_commons) -> None:
    """The transformer does not use a video's listed dimensions (it checks the frames it
    decodes), so the stand-in's answer itself is checked: real sizes, VIDEO, the MIME."""
    body = {
        "action": "query",
        "prop": "imageinfo",
        "iiprop": "size|mime|mediatype",
        "titles": "File:Skin clip.webm|File:Skin clip.mp4",
        "format": "json",
        "formatversion": "2",
    }
    pages = httpx.post(fake_commons.api_url, data=body).json()["query"]["pages"]
    listed = {p["title"]: p["imageinfo"][0] for p in pages}
    for title, mime in (("File:Skin clip.webm", "video/webm"), ("File:Skin clip.mp4", "video/mp4")):
        info = listed[title]
        assert (info["mediatype"], info["mime"]) == ("VIDEO", mime)
        assert (info["width"], info["height"]) == videos.PHOTO_THEN_SKIN[0][0].size


def _truncated(data: bytes) -> bytes:
    return data[: len(data) * 6 // 10]


CLIP = [(PHOTO, 2), (HIGH, 2)]
BROKEN = {
    "empty": (lambda: b"", "empty_video", "decodes to 0 bytes"),
    "random bytes": (lambda: b"\x00\x01garbage" * 400, "unsupported_video", "not a WebM"),
    "MP4 header, garbage body": (
        lambda: videos.encode(CLIP)[:32] + b"\x00garbage" * 400,
        "corrupt_video",
        "MP4/QuickTime container cannot be read",
    ),
    "MP4 cut before its index": (
        lambda: _truncated(videos.encode(CLIP)),
        "corrupt_video",
        "corrupt or truncated",
    ),
    "fragmented MP4 cut short": (
        lambda: _truncated(
            videos.encode(CLIP, container_options={"movflags": "frag_keyframe+empty_moov"})
        ),
        "truncated_video",
        "of its declared 4.0 s",
    ),
    "WebM cut short": (
        lambda: _truncated(videos.encode(CLIP, codec=videos.VP8)),
        "truncated_video",
        "truncated",
    ),
    "GIF cut short": (
        lambda: _truncated(videos.animated([(PHOTO, 500), (HIGH, 500)], "GIF")),
        "truncated_video",
        "GIF file ends early",
    ),
    "still image": (lambda: images.encode(PHOTO, "PNG"), "not_a_video", "still PNG"),
    "still JPEG": (lambda: images.encode(PHOTO, "JPEG"), "not_a_video", "still JPEG"),
    "still TIFF": (lambda: images.encode(PHOTO, "TIFF"), "not_a_video", "still TIFF"),
    "still BMP": (lambda: images.encode(PHOTO, "BMP"), "not_a_video", "still BMP"),
    "audio only": (lambda: videos.with_audio([], 2.0), "not_a_video", "no video stream"),
    "video stream without frames": (
        lambda: videos.with_audio([(PHOTO, 0.0)], 1.0),
        "no_frames",
        "no frames",
    ),
    "decompression bomb": (lambda: _bomb(), "video_too_large", "decompression bomb"),
}


def _bomb() -> bytes:
    """An animated GIF whose header claims 65535x65535 pixels."""
    gif = bytearray(videos.animated([(PHOTO, 100), (HIGH, 100)], "GIF"))
    gif[6:10] = b"\xff\xff\xff\xff"  # the logical screen's width and height
    return bytes(gif)


@pytest.mark.parametrize("case", list(BROKEN))
def test_corrupt_truncated_and_unsupported_input_is_a_clear_error(
    client: httpx.Client, case: str
) -> None:
    make, code, words = BROKEN[case]
    error = video_error(client, make())
    assert error["code"] == code
    assert words in error["message"]


def test_bad_items_do_not_spoil_good_ones(client: httpx.Client) -> None:
    good = b64(videos.encode(CLIP))
    instances = [{"video": good}, {"video": b64(b"not a video at all")}, {"video": ""}]
    response = client.post(VIDEO, json={"instances": instances})
    assert response.status_code == 200, response.text
    scored, garbage, empty = response.json()["predictions"]
    assert scored["frames_scored"] == 10
    assert garbage["error"]["code"] == "unsupported_video"
    assert empty["error"]["code"] == "empty_video"


def test_invalid_options(client: httpx.Client) -> None:
    data = b64(videos.encode(CLIP))
    response = client.post(VIDEO, json={"instances": [{"video": data, "threshold": 1.5}]})
    assert response.status_code == 400
    assert response.json()["predictions"][0]["error"] == {
        "code": "invalid_instance",
        "message": "instances[0]: threshold must be a number in (0, 1]",
    }
    response = client.post(VIDEO, json={"instances": [{"video": data}], "early_exit": "yes"})
    assert response.status_code == 400
    assert "early_exit must be true or false" in response.text


def test_audio_outlasting_the_video_is_no_truncation(client: httpx.Client) -> None:
    # Matroska's container duration is the longest stream's: here the audio's 10 s.
    prediction = score_video(client, videos.with_audio(CLIP, 10.0))
    assert (prediction["duration_s"], prediction["frames_scored"]) == (4.0, 10)


def test_resolution_limit(client: httpx.Client) -> None:
    error = video_error(client, videos.encode([(Image.new("RGB", (2000, 1200)), 0.1)]))
    assert error["code"] == "video_too_large"
    assert "2000x1200" in error["message"]


def test_cli_scores_like_the_service(client: httpx.Client, tmp_path: Path) -> None:
    data = videos.encode([(PHOTO, 2), (MID, 2), (HIGH, 2)], codec=videos.VP8)
    path = tmp_path / "clip.webm"
    path.write_bytes(data)
    run = subprocess.run(
        [sys.executable, "-m", "transformer.video.cli", str(path), "--threshold", "0.3"],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    local = json.loads(run.stdout)
    served = score_video(client, data, threshold=0.3)
    assert local["filename"] == "clip.webm"
    assert local["frames_scored"] == served["frames_scored"]
    assert local["prediction"] == pytest.approx(served["prediction"], abs=1e-4)
    assert [s["start_s"] for s in local["segments"]] == [s["start_s"] for s in served["segments"]]

    path.write_bytes(data[:100])
    run = subprocess.run(
        [sys.executable, "-m", "transformer.video.cli", str(path)],
        cwd=ROOT,
        capture_output=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert json.loads(run.stdout)["error"]["code"] == "corrupt_video"


# --- the pure parts --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "interval"),
    [(3.0, 0.3), (10.0, 1.0), (30.0, 1.0), (60.0, 1.0), (330.0, 3.0), (600.0, 5.0), (700.0, 5.0)],
)
def test_sampling_interval_follows_the_documented_policy(duration: float, interval: float) -> None:
    assert sampling_interval(duration, MAX_FRAMES) == pytest.approx(interval)


def test_sampling_caps_the_regular_frames() -> None:
    def regular(duration: float) -> int:
        return math.ceil(duration / sampling_interval(duration, MAX_FRAMES) - 1e-9)

    assert [regular(d) for d in (750.0, 3600.0, 36000.0)] == [MAX_FRAMES // 2] * 3
    counts = [regular(d) for d in range(1, 2000, 7)]
    assert counts == sorted(counts), "longer videos never get fewer frames"


def test_segments_split_at_cuts_and_threshold_crossings() -> None:
    frames = [
        FrameScore(0.0, False, 0.1),
        FrameScore(1.0, False, 0.2),
        FrameScore(2.0, False, 0.9),  # crosses 0.5: a new segment
        FrameScore(3.0, False, 0.95),
        FrameScore(4.0, True, 0.97),  # a cut: a new segment
        FrameScore(5.0, False, 0.3),
        FrameScore(5.0, True, 0.4),  # same time as its predecessor: joins it
    ]
    assert [(s.start_s, s.end_s, s.score) for s in segments(frames, 6.5, 0.5)] == [
        (0.0, 2.0, 0.2),
        (2.0, 4.0, 0.95),
        (4.0, 5.0, 0.97),
        (5.0, 6.5, 0.4),
    ]


# --- the scan alone ----------------------------------------------------------------------

LIMITS = VideoLimits(max_duration_s=600.0, max_pixels=2_000_000, max_frames=MAX_FRAMES)


def scan(data: bytes, limits: VideoLimits = LIMITS) -> None:
    scan_video(data, limits, lambda image: None, lambda sample: None)


@pytest.mark.parametrize("codec", [videos.H264, videos.VP8])
def test_video_too_long(codec: tuple) -> None:
    data = videos.encode([(PHOTO, 3.0)], codec=codec)
    with pytest.raises(VideoError, match="lasts 3.0 s") as caught:
        scan(data, VideoLimits(max_duration_s=2.0, max_pixels=2_000_000, max_frames=MAX_FRAMES))
    assert caught.value.code == "video_too_long"


def test_frames_larger_than_the_header_said_are_refused_by_the_decoder() -> None:
    """VP8 may grow at any keyframe: the 1024x1024 frames of a stream whose header says 64x64
    are refused by the decoder, before it allocates them, and the video is too large (not
    scored on its small frames alone)."""
    limits = VideoLimits(max_duration_s=600.0, max_pixels=100 * 100, max_frames=MAX_FRAMES)
    with pytest.raises(VideoError, match="larger than the limit of 10000 pixels, or of no valid size .its header says 64x64") as caught:
        scan(videos.growing_frames_webm(small=64, big=1024), limits)
    assert caught.value.code == "video_too_large"
    scan(videos.growing_frames_webm(small=64, big=96), limits)


def _mutations(data: bytes, seed: int, count: int) -> list[bytes]:
    """``count`` copies of ``data``, each truncated or with a few bytes overwritten."""
    rng = random.Random(seed)
    mutated = []
    for _ in range(count):
        if rng.random() < 0.3:
            mutated.append(data[: rng.randrange(1, len(data))])
            continue
        copy = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            copy[rng.randrange(len(copy))] = rng.randrange(256)
        mutated.append(bytes(copy))
    return mutated


def test_mutated_files_raise_only_video_errors() -> None:
    """Client bytes never escape as another exception (an HTTP 500): metadata that is not
    UTF-8, streams without a decoder, unseekable containers, … are all `VideoError`s."""
    small = [(PHOTO.resize((32, 24)), 0.3), (HIGH.resize((32, 24)), 0.3)]
    seeds = [
        videos.encode(small),
        videos.encode(small, codec=videos.VP8),
        videos.animated([(image.quantize(16).convert("RGB"), 200) for image, _ in small], "GIF"),
    ]
    for seed, data in enumerate(seeds):
        for mutated in _mutations(data, seed, 200):
            try:
                scan(mutated)
            except VideoError:
                pass


def test_cli_refuses_an_oversized_file_before_reading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MAX_VIDEO_BYTES", "1024")
    path = tmp_path / "big.webm"
    path.write_bytes(b"\0" * 2048)
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("the file was read"))
    with pytest.raises(VideoError, match="2048 bytes exceeds the 1024-byte limit") as caught:
        video_cli.score_path(path, ScoringOptions(), video_cli.DEFAULT_MODEL)
    assert caught.value.code == "video_too_large"
