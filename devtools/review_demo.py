"""The review page with demo data, for its browser test and its screenshot.

- ``ReviewServer``: `python -m review` as a child process on a free port.
- ``FakeFilePath``: a stand-in for Commons' ``Special:FilePath`` thumbnails and file pages,
  so the page shows images without the internet.
- ``seed``: stored results across models and review states, decided by the policy.

`python -m devtools.review_demo --screenshot docs/review-page.png` renders the page in
headless Chromium (`devtools.browser`) and saves it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Self
from urllib.parse import unquote, urlsplit

from PIL import Image
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ready
from selenium.webdriver.support.ui import WebDriverWait

from devtools import images
from devtools.browser import chromium
from devtools.local_server import LocalServer
from moderation.policy import Policy, load_policy
from moderation.reviewers import hash_token
from store.scores import Key, Record, ScoreStore, open_store

ROOT = Path(__file__).resolve().parent.parent
_LISTENING = re.compile(r"Uvicorn running on http://[^:]+:(\d+)")
START_TIMEOUT_S = 60.0


class ReviewServerError(Exception):
    pass


class ReviewServer:
    """`python -m review` with ``env`` added to this process's environment, on a port the
    kernel picks (REVIEW_PORT=0; the port is read from uvicorn's start-up line)."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, "REVIEW_HOST": "127.0.0.1", "REVIEW_PORT": "0", **env}
        self.output: list[str] = []
        self._port: int | None = None
        self._listening = threading.Event()
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> Self:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "review"],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._listening.wait(0.1):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                raise ReviewServerError(
                    f"review server did not start (exit status {self._process.returncode}):\n"
                    + self.log()
                )
        return self

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self.output.append(line)
            found = _LISTENING.search(line)
            if found and self._port is None:
                self._port = int(found.group(1))
                self._listening.set()

    def __exit__(self, *exc_info: object) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    def log(self) -> str:
        return "".join(self.output)[-4000:]


class _FilePathHandler(BaseHTTPRequestHandler):
    server: Any

    def do_GET(self) -> None:
        fake: FakeFilePath = self.server.fake
        url = urlsplit(self.path)
        fake.paths.append(url.path)
        prefix = "/wiki/Special:FilePath/"
        if url.path.startswith(prefix):
            body, kind = fake.thumbnail(unquote(url.path.removeprefix(prefix))), "image/png"
        elif url.path.startswith("/wiki/File:"):
            body, kind = b"<!doctype html><title>file page</title>", "text/html"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is `FakeFilePath.paths`


class FakeFilePath(LocalServer):
    """Thumbnails for any file name: a logo for names with "logo" in them, else a photo,
    both drawn from the name, so a page of them looks like a queue."""

    def __init__(self, port: int = 0) -> None:
        super().__init__(_FilePathHandler, port)
        self.paths: list[str] = []
        self._cache: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def thumbnail(self, name: str) -> bytes:
        with self._lock:
            if name not in self._cache:
                seed = int(hashlib.sha1(name.encode()).hexdigest()[:8], 16)
                img = (
                    images.logo(240, 120, seed, text=name.split("_")[0], alpha=False)
                    if "logo" in name.lower()
                    else images.photo(240, 180, seed)
                )
                self._cache[name] = images.encode(img.convert("RGB"), "PNG")
            return self._cache[name]

    def thumbnails_served(self) -> list[str]:
        return [path for path in self.paths if path.startswith("/wiki/Special:FilePath/")]


_BRANDS = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Tyrell"]
_PLACES = ["Beach", "Festival", "Portrait", "Studio", "Poolside", "Gallery"]


def demo_records(policy: Policy, count: int) -> list[Record]:
    """``count`` results, about half logo-detection, the rest nsfw-detection, with scores
    spread so that every state but ok appears, and a few ok ones the queue leaves out."""
    records = []
    start = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    for i in range(count):
        if i % 2 == 0:
            model, label = "logo-detection", "logo"
            title = f"File:{_BRANDS[i % len(_BRANDS)]} logo {i}.png"
            mime = "image/png"
        else:
            model, label = "nsfw-detection", "nsfw"
            title = f"File:{_PLACES[i % len(_PLACES)]} photo {i}.jpg"
            mime = "image/jpeg"
        # A spread over (0.4, 1): a few land below every threshold (ok).
        score = round(0.4 + 0.6 * ((i * 37) % count) / count, 4)
        scores = {label: score, "out_of_domain": round(1 - score, 4)}
        decision = policy.decide(model, scores)
        records.append(
            Record(
                key=Key(hashlib.sha1(f"demo {i}".encode()).hexdigest(), model, "2"),
                scores=scores,
                mime=mime,
                scored_at=start + timedelta(minutes=7 * i),
                titles=(title,),
                state=decision.state,
                reason=decision.reason,
                policy_version=policy.version,
                policy_score=policy.score(model, scores),
            )
        )
    return records


def seed(store: ScoreStore, policy: Policy, count: int = 40) -> list[Record]:
    records = demo_records(policy, count)
    store.put(records)
    return records


def reviewers_yaml(tokens: dict[str, str]) -> str:
    """A reviewers file's text for reviewer name -> token."""
    return "".join(f"{name}: {hash_token(token)}\n" for name, token in tokens.items())


def review_env(
    database_url: str,
    reviewers_file: Path,
    commons_url: str,
    *,
    extra: Iterable[tuple[str, str]] = (),
) -> dict[str, str]:
    """The review page's settings for a local run: plain HTTP, so cookies without Secure."""
    return {
        "DATABASE_URL": database_url,
        "REVIEWERS_FILE": str(reviewers_file),
        "COMMONS_URL": commons_url,
        "COMMONS_UPLOAD_HOSTS": "[]",
        "REVIEW_SECRET_KEY": secrets.token_urlsafe(32),
        "REVIEW_SECURE_COOKIE": "false",
        **dict(extra),
    }


def screenshot(out: Path) -> None:
    token = "demo-reviewer-token-0123456789"
    with tempfile.TemporaryDirectory(prefix="review-demo-") as tmp:
        url = f"sqlite:///{tmp}/scores.sqlite3"
        store = open_store(url)
        seed(store, load_policy())
        store.dispose()
        reviewers = Path(tmp) / "reviewers.yaml"
        reviewers.write_text(reviewers_yaml({"ada": token}))
        with (
            FakeFilePath() as commons,
            ReviewServer(review_env(url, reviewers, commons.base_url)) as server,
            chromium(1280, 1000) as browser,
        ):
            wait = WebDriverWait(browser, 20)
            browser.get(f"{server.url}/login")
            browser.find_element(By.ID, "token").send_keys(token)
            browser.find_element(By.ID, "login-button").click()
            wait.until(ready.presence_of_element_located((By.ID, "flash")))
            browser.get(f"{server.url}/?limit=10")
            browser.find_element(By.TAG_NAME, "body").send_keys("j")
            wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "#item-1.selected")))
            wait.until(
                lambda b: b.execute_script(
                    "return Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"
                )
            )
            shot = Image.open(io.BytesIO(browser.get_screenshot_as_png())).convert("RGB")
    # 128 colours: a quarter of the bytes of the full-colour PNG, and no loss a reader sees.
    out.parent.mkdir(parents=True, exist_ok=True)
    shot.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--screenshot", type=Path, default=ROOT / "docs" / "review-page.png")
    args = parser.parse_args(argv)
    screenshot(args.screenshot)


if __name__ == "__main__":
    main()
