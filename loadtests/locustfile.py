"""Locust users for the moderation service; `make loadtest` runs them (loadtests/run.py).

Environment (run.py sets it): ``LOADTEST_URL``, the service; ``LOADTEST_HOST_HEADER``, a
``Host`` header for a deployment behind an ingress; ``LOADTEST_PAYLOADS``, the payload
files (registry-package images); ``LOADTEST_COMMONS_NAMES``, the file names the Commons
behind the service knows (default: ``commons_names.txt``, files on the real Commons);
``LOADTEST_TRITON_URL``, Triton's HTTP endpoint for the calibration user;
``LOADTEST_PHASES``, the phases (`PhaseShape`); ``LOADTEST_SAMPLES``, where every request
is written when the run ends.

Payloads and MixedUser's tasks follow fixed, evenly interleaved sequences instead of random
draws, so that two runs put the same work on every endpoint and differ only in how fast it
was served. Users do not wait between tasks: the number of users is the concurrency, and a
think time, which a faster machine does not shorten, would make the ratios run.py gates on
depend on the machine.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import random
import time
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from locust import LoadTestShape, constant, events, task
from locust.contrib.fasthttp import FastHttpUser

from preprocessing.decode import decode_image
from preprocessing.specs import SPECS, VIDEO_MODEL
from preprocessing.tensor import PREPARATIONS

URL = os.environ.get("LOADTEST_URL", "http://127.0.0.1:8080")
HOST_HEADER = os.environ.get("LOADTEST_HOST_HEADER", "")
PAYLOADS = Path(os.environ.get("LOADTEST_PAYLOADS", "build/loadtest/payloads"))
DEFAULT_NAMES = Path(__file__).with_name("commons_names.txt")
NAMES = [
    name
    for name in os.environ.get("LOADTEST_COMMONS_NAMES", DEFAULT_NAMES.read_text()).splitlines()
    if name.strip() and not name.startswith("#")
]
TRITON_URL = os.environ.get("LOADTEST_TRITON_URL", "")
LOGO = "/v1/models/logo-detection:predict"
NSFW = "/v1/models/nsfw-detection:predict"
VIDEO = f"/v1/models/{VIDEO_MODEL}:predict"
JSON = {"Content-Type": "application/json"}
HEADERS = {**JSON, **({"Host": HOST_HEADER} if HOST_HEADER else {})}
CALIBRATION = "calibration: Triton direct"


def _load(suffixes: tuple[str, ...]) -> list[tuple[str, bytes]]:
    files = sorted(p for p in PAYLOADS.glob("*") if p.suffix.lower() in suffixes)
    # A fixed shuffle spreads the two large photos through the sequence.
    random.Random(0).shuffle(files)
    return [(p.name, p.read_bytes()) for p in files]


IMAGE_FILES = _load((".jpg", ".jpeg", ".png"))
IMAGES = [(name, base64.b64encode(data).decode()) for name, data in IMAGE_FILES]
VIDEOS = [
    (name, base64.b64encode(data).decode()) for name, data in _load((".webm", ".mp4", ".ogv"))
]


class _Turns:
    """One fixed sequence per endpoint, shared by all users: each request takes the next
    item, so every endpoint sees the same items in the same proportions in every run."""

    def __init__(self) -> None:
        self._counters: dict[str, itertools.count] = {}

    def next(self, key: str, items: list) -> Any:
        return items[next(self._counters.setdefault(key, itertools.count())) % len(items)]


TURNS = _Turns()


def _instance(
    key: str = "image", turn: str = "inline", pool: list[tuple[str, str]] = IMAGES
) -> dict:
    name, data = TURNS.next(turn, pool)
    return {"filename": name, key: data}


class _Base(FastHttpUser):
    abstract = True
    host = URL
    wait_time = constant(0)

    def post(
        self, path: str, instances: list, name: str, expect: int = 200, item_errors: int = 0
    ) -> None:
        body = json.dumps({"instances": instances})
        context = {"payload": instances[0].get("filename", "")} if len(instances) == 1 else {}
        with self.client.post(
            path, data=body, headers=HEADERS, name=name, context=context, catch_response=True
        ) as r:
            if r.status_code != expect:
                r.failure(f"expected {expect}, got {r.status_code}: {r.text[:200]}")
                return
            if expect != 200:
                r.success()
                return
            predictions = r.json()["predictions"]
            errors = [p["error"]["code"] for p in predictions if "error" in p]
            if len(predictions) != len(instances):
                r.failure("prediction count differs from instance count")
            elif len(errors) != item_errors:
                r.failure(f"expected {item_errors} item errors, got {errors}")
            else:
                r.success()


class LogoBase64User(_Base):
    """Today's Lift Wing client: one base64 image per request, ``target: logo``."""

    @task
    def logo(self) -> None:
        self.post(LOGO, [{**_instance("image", "logo base64"), "target": "logo"}], "logo base64")


class LogoByNameUser(_Base):
    """Lookups by Commons file name: the service resolves and fetches thumbnails."""

    def on_start(self) -> None:
        if not NAMES:
            raise RuntimeError("LogoByNameUser needs file names: LOADTEST_COMMONS_NAMES is empty")

    @task
    def logo_by_name(self) -> None:
        self.post(LOGO, [{"filename": TURNS.next("logo by name", NAMES)}], "logo by name")


class NsfwImageUser(_Base):
    @task
    def nsfw(self) -> None:
        self.post(NSFW, [_instance("image", "nsfw base64")], "nsfw base64")


class ImageModelsUser(_Base):
    """One inline image to every image model the specs declare, in turn: a model added to
    the specs is load-tested without a user of its own."""

    @task
    def every_model(self) -> None:
        for spec in SPECS:
            name = f"{spec.name} base64"
            self.post(f"/v1/models/{spec.name}:predict", [_instance("image", name)], name)


class NsfwVideoUser(_Base):
    @task
    def video(self) -> None:
        self.post(VIDEO, [_instance("video", "nsfw video base64", VIDEOS)], "nsfw video base64")


def interleave(weights: dict[str, int]) -> list[str]:
    """Smooth weighted round robin: each key ``weight`` times per cycle, spread evenly."""
    total = sum(weights.values())
    current = dict.fromkeys(weights, 0)
    order = []
    for _ in range(total):
        for key, weight in weights.items():
            current[key] += weight
        chosen = max(current, key=current.__getitem__)
        current[chosen] -= total
        order.append(chosen)
    return order


class MixedUser(_Base):
    """Production-like traffic: mostly single files, some 50-file batches, some bad input."""

    MIX: ClassVar[dict[str, int]] = {
        "logo_single": 40,
        "nsfw_single": 25,
        "by_name": 15,
        "batch_of_50": 3,
        "bad_base64": 7,
        "mixed_good_and_bad": 5,
        "video": 5,
    }
    SCHEDULE = interleave(MIX)

    @task
    def next_in_mix(self) -> None:
        getattr(self, TURNS.next("mixed", self.SCHEDULE))()

    def logo_single(self) -> None:
        self.post(LOGO, [_instance("image", "mixed logo single")], "mixed logo single")

    def nsfw_single(self) -> None:
        self.post(NSFW, [_instance("image", "mixed nsfw single")], "mixed nsfw single")

    def by_name(self) -> None:
        if NAMES:
            name = TURNS.next("mixed logo by name", NAMES)
            self.post(LOGO, [{"filename": name}], "mixed logo by name")

    def batch_of_50(self) -> None:
        instances = [_instance("image", "mixed batch of 50") for _ in range(50)]
        self.post(TURNS.next("mixed batch model", [LOGO, NSFW]), instances, "mixed batch of 50")

    def bad_base64(self) -> None:
        self.post(LOGO, [{"filename": "bad.jpg", "image": "not base64!"}], "mixed bad input", 400)

    def mixed_good_and_bad(self) -> None:
        instances = [
            _instance("image", "mixed partial errors"),
            {"filename": "x.png", "image": "AAAA"},
            _instance("image", "mixed partial errors"),
        ]
        self.post(NSFW, instances, "mixed partial errors", item_errors=1)

    def video(self) -> None:
        self.post(VIDEO, [_instance("video", "mixed nsfw video", VIDEOS)], "mixed nsfw video")


@cache
def calibration_bodies() -> list[tuple[str, bytes, int]]:
    """(model, body, JSON header length) per payload image and image model: one image's
    tensor in Triton's binary tensor format."""
    import tritonclient.http as triton_http

    bodies = []
    for (_, data), spec in itertools.product(IMAGE_FILES, SPECS):
        preparation = PREPARATIONS[spec.name]
        tensor = preparation.to_tensor(decode_image(data, min_side=preparation.min_side))
        request = triton_http.InferInput(spec.input_name, [1, *spec.input_dims], "UINT8")
        request.set_data_from_numpy(np.ascontiguousarray(tensor[np.newaxis]), binary_data=True)
        output = triton_http.InferRequestedOutput(spec.output_name, binary_data=True)
        body, header_length = triton_http.InferenceServerClient.generate_request_body(
            [request], [output]
        )
        bodies.append((spec.name, body, header_length or 0))
    return bodies


class TritonCalibration(FastHttpUser):
    """Not load but the yardstick: the image models alone, Triton called directly with one
    tensor of the payload images per request, the models taking turns. run.py measures it
    beside the load and divides each endpoint's figures by it."""

    host = TRITON_URL or "http://127.0.0.1:8000"
    wait_time = constant(0)

    def on_start(self) -> None:
        self.bodies = calibration_bodies()

    @task
    def infer(self) -> None:
        model, body, header_length = TURNS.next(CALIBRATION, self.bodies)
        headers = {
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(header_length),
        }
        with self.client.post(
            f"/v2/models/{model}/infer",
            data=body,
            headers=headers,
            name=CALIBRATION,
            context={"payload": model},
            catch_response=True,
        ) as r:
            if r.status_code != 200:
                r.failure(f"Triton answered {r.status_code}: {r.text[:200]}")


class Phases:
    """The phases' windows as they ran (`PhaseShape` sets them) and every request; run.py
    assigns each request to the window it started in."""

    windows: ClassVar[list[list[float]]] = []
    samples: ClassVar[list[tuple[str, float, float, bool, str]]] = []


@events.request.add_listener
def _record(
    name: str,
    response_time: float,
    exception: Exception | None,
    start_time: float = 0.0,
    context: dict | None = None,
    **_: Any,
) -> None:
    payload = (context or {}).get("payload", "")
    Phases.samples.append((name, start_time, response_time, exception is None, payload))


@events.test_stop.add_listener
def _write_samples(**_: Any) -> None:
    if path := os.environ.get("LOADTEST_SAMPLES"):
        Path(path).write_text(json.dumps({"windows": Phases.windows, "samples": Phases.samples}))


def phases_from_env() -> list[dict]:
    """``LOADTEST_PHASES``: a JSON list of {"classes", "users", "seconds"}; without it,
    ``LOADTEST_STEPS="users:seconds,..."`` of the classes given on the command line."""
    if raw := os.environ.get("LOADTEST_PHASES"):
        return json.loads(raw)
    steps = os.environ.get("LOADTEST_STEPS", "2:20,8:20,16:30")
    return [
        {"classes": None, "users": int(users), "seconds": float(seconds)}
        for users, seconds in (step.split(":") for step in steps.split(","))
    ]


class PhaseShape(LoadTestShape):
    """Runs each phase's users for its seconds. Where the next phase runs other user
    classes, it first stops the users and lets their requests finish (``--stop-timeout``),
    so that no request of one phase runs during the other."""

    def __init__(self) -> None:
        super().__init__()
        self.phases = phases_from_env()
        self.index = -1
        self.until = 0.0
        self.draining = False

    def _tick(self, users: int) -> tuple[int, float, list | None]:
        names = self.phases[self.index]["classes"]
        classes = None if names is None else [self.runner.user_classes_by_name[n] for n in names]
        # Every user at once: a phase is too short to ramp.
        return users, 100.0, classes

    def tick(self) -> tuple[int, float, list | None] | None:
        now = time.monotonic()
        if self.index >= 0 and not self.draining:
            if now < self.until:
                return self._tick(self.phases[self.index]["users"])
            Phases.windows[-1][1] = time.time()
            following = self.phases[self.index + 1 : self.index + 2]
            self.draining = (
                bool(following) and following[0]["classes"] != self.phases[self.index]["classes"]
            )
        if self.draining and self.runner.user_count:
            return self._tick(0)
        self.index += 1
        if self.index == len(self.phases):
            return None
        self.draining = False
        self.until = now + self.phases[self.index]["seconds"]
        Phases.windows.append([time.time(), time.time()])
        return self._tick(self.phases[self.index]["users"])


# The name `make soak`'s users (loadtests/soak_users.py) import the shape by.
StepShape = PhaseShape
