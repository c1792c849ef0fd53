"""A local stand-in for Wikimedia Commons, speaking the real MediaWiki API format.

Tests and load tests need Commons without the internet, and a mock of our own client would
only check that it agrees with itself. So this is a real HTTP server on 127.0.0.1 that
answers ``action=query&prop=imageinfo&format=json&formatversion=2`` the way MediaWiki does
(``normalized``, ``redirects``, ``missing``, ``invalid``, ``thumburl``, ``continue``, the
50-title ``toomanyvalues`` error, ``maxlag``) and serves originals and Pillow-made
thumbnails. Files are described as MediaWiki would: bitmaps by Pillow, videos and audio
by PyAV (real dimensions, ``VIDEO`` or ``AUDIO``), SVGs as ``DRAWING`` with rasterised PNG
thumbnails (CairoSVG) at any width. Knobs inject the failures production sees: 5xx/429
answers with or without
Retry-After, lagged replicas, slow answers, API errors, answers split into batches, file
URLs on a foreign host, redirects, web pages instead of files, bodies without a
Content-Length.

Use it as a context manager::

    with FakeCommons({"Cat.jpg": image_bytes(640, 480)}) as fake:
        ...  # fake.api_url, fake.requests

or from a shell, serving a folder of images for load tests::

    python devtools/fake_commons.py DIR --port 8090
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import mimetypes
import re
import sys
import threading
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import av
from PIL import Image, UnidentifiedImageError

API_PATH = "/w/api.php"
MAX_TITLES = 50

_NAMESPACE = re.compile(r"(?i)(?:file|image) ?: ?(.*)")
_ILLEGAL = re.compile(r"[#<>\[\]|{}\x00-\x1f\x7f\ufffd]|%[0-9A-Fa-f]{2}")
_THUMB_NAME = re.compile(r"(\d+)px-(.+)")
# Containers PyAV describes, by magic bytes: (offset, magic, video MIME, audio MIME), as
# MediaWiki reports them (Ogg files are application/ogg either way).
_AV_MAGIC = (
    (0, b"\x1a\x45\xdf\xa3", "video/webm", "audio/webm"),
    (4, b"ftyp", "video/mp4", "audio/mp4"),
    (0, b"OggS", "application/ogg", "application/ogg"),
)
_SVG = "image/svg+xml"
_ERROR_PAGE = b"<!DOCTYPE html><html><body><h1>Error</h1><p>Our servers are busy.</p></body></html>"
_HTML = "text/html; charset=utf-8"
# The upload time ``iicontinue`` names; every file here has one version.
_TIMESTAMP = "20240101000000"


class InvalidTitle(ValueError):
    """The text cannot be a MediaWiki title; the message is MediaWiki's ``invalidreason``."""


def normalize_title(raw: str) -> str:
    """MediaWiki's title normalisation, as far as file names need it.

    Underscores become spaces, runs of them collapse, ``Image:``/``file:`` become ``File:``,
    the first letter is upper-cased. Titles outside the File namespace keep no prefix.
    """
    text = re.sub(r"[ _]+", " ", raw).strip()
    match = _NAMESPACE.fullmatch(text)
    rest = match.group(1) if match else text
    if bad := _ILLEGAL.search(rest):
        raise InvalidTitle(
            f'The requested page title contains invalid characters: "{bad.group()}".'
        )
    if not rest:
        raise InvalidTitle(
            "The requested page title is empty or contains only the name of a namespace."
        )
    if rest in (".", "..") or rest.startswith(("./", "../")) or "/./" in rest or "/../" in rest:
        raise InvalidTitle(
            "Title has relative path. Relative page titles (./, ../) are invalid, because they "
            "will often be unreachable when handled by user's browser."
        )
    if "~~~" in rest:
        raise InvalidTitle("The requested page title contains invalid magic tilde sequence (~~~).")
    if len(rest.encode()) > 255:
        raise InvalidTitle(
            "The requested page title is too long. It must be no longer than 255 bytes in "
            "UTF-8 encoding."
        )
    rest = rest[0].upper() + rest[1:]
    return f"File:{rest}" if match else rest


def image_bytes(width: int, height: int, fmt: str = "JPEG") -> bytes:
    """A small test image with some structure (a gradient), encoded as ``fmt``."""
    img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


@dataclass(frozen=True)
class LoggedRequest:
    """One request the fake received; ``params`` merges the query string and a form body."""

    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]  # lower-case names
    at: float  # time.monotonic() on arrival

    @property
    def host(self) -> str:
        return self.headers.get("host", "")


@dataclass(frozen=True)
class _Reply:
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)
    # Sent as Retry-After when the reply goes out: delta-seconds, or an HTTP-date that far
    # ahead (rounded up to the date's whole seconds).
    retry_after: float | None = None
    retry_after_date: bool = False

    def all_headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return self.headers
        if self.retry_after_date:
            value = formatdate(math.ceil(time.time() + self.retry_after), usegmt=True)
        else:
            value = str(math.ceil(self.retry_after))
        return self.headers | {"Retry-After": value}


@dataclass(frozen=True)
class _File:
    title: str
    data: bytes
    pageid: int
    mime: str
    mediatype: str
    width: int
    height: int
    format: str | None
    content_type: str  # what the upload host serves it as

    @property
    def key(self) -> str:
        """The name as it appears in upload URLs (MediaWiki's DB key)."""
        return _db_key(self.title)


class FakeCommons:
    """Serves ``files`` (name → bytes; any accepted spelling of the name) and ``redirects``
    (from name → to name) as Commons does, on ``127.0.0.1`` and an ephemeral port.

    Knobs, all safe to change while it runs:

    * `add_file`: host another file; `reset`: undo every other knob;
    * `fail_api` / `fail_files`: the next N answers get a given status, body, headers and
      Retry-After (seconds or HTTP-date); status 200 serves the HTML page as if it were the
      file;
    * `api_error`: the next N API answers are a MediaWiki error object (HTTP 200);
    * `lag_replicas`: the next N API calls that send ``maxlag`` below the lag get MediaWiki's
      ``maxlag`` error;
    * ``batch_size``: at most this many pages' imageinfo per answer, the rest through
      ``continue``/``iicontinue`` (None: all at once);
    * ``api_delay`` / ``file_delay``: seconds to wait before answering;
    * ``upload_base``: origin for the URLs in imageinfo (another host, to test allow-lists);
    * ``redirect_files_to``: files answer ``302`` to this URL;
    * ``send_content_length``: False sends file bodies without a length (read until close).

    A file whose bytes are an HTML page stands for an upload host that serves a web page
    instead of the file: listed as the media its name says, served as ``text/html``; an
    empty file is listed the same way and served empty. Every request is logged in
    `requests`, with all its parameters and headers.
    """

    def __init__(
        self,
        files: Mapping[str, bytes],
        redirects: Mapping[str, str] | None = None,
        *,
        port: int = 0,
    ) -> None:
        self._lock = threading.Lock()
        self._files: dict[str, _File] = {}
        self._by_key: dict[str, _File] = {}
        self._thumbs: dict[tuple[str, int], bytes] = {}
        for name, data in files.items():
            self.add_file(name, data)
        self._redirects = {_file_title(a): _file_title(b) for a, b in (redirects or {}).items()}
        self._redirect_ids = {title: 100_000 + i for i, title in enumerate(self._redirects)}
        self._api_failures: list[_Reply] = []
        self._file_failures: list[_Reply] = []
        self._lags: list[int] = []
        self.requests: list[LoggedRequest] = []
        self.api_delay = 0.0
        self.file_delay = 0.0
        self.upload_base: str | None = None
        self.redirect_files_to: str | None = None
        self.send_content_length = True
        self.batch_size: int | None = None
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.fake = self
        # A short poll keeps `shutdown` (every test's teardown) from waiting the default 0.5 s.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    def __enter__(self) -> FakeCommons:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        return self.base_url + API_PATH

    @property
    def api_requests(self) -> list[LoggedRequest]:
        return [r for r in self.requests if r.path == API_PATH]

    @property
    def file_requests(self) -> list[LoggedRequest]:
        return [r for r in self.requests if r.path != API_PATH]

    def original_url(self, name: str) -> str:
        """Where the imageinfo of file ``name`` says its original is."""
        key = quote(self._files[_file_title(name)].key)
        return f"{self.upload_base or self.base_url}/original/{key}"

    def thumb_url(self, name: str, width: int) -> str:
        """Where the imageinfo of file ``name`` says its ``width``-px thumbnail is."""
        file = self._files[_file_title(name)]
        key = quote(file.key)
        name = f"{width}px-{key}{_thumb_suffix(file)}"
        return f"{self.upload_base or self.base_url}/thumb/{key}/{name}"

    def add_file(self, name: str, data: bytes) -> None:
        """Host one more file (or new bytes under a name already hosted)."""
        title = _file_title(name)
        old = self._files.get(title)
        file = _describe(title, data, old.pageid if old else len(self._files) + 1)
        with self._lock:
            self._files[title] = file
            self._by_key[file.key] = file
            self._thumbs = {key: thumb for key, thumb in self._thumbs.items() if key[0] != title}

    def reset(self) -> None:
        """Back to serving every file promptly and correctly: no queued failures, lag,
        delays, foreign upload host, redirects or batching. Hosted files and the request
        log stay."""
        with self._lock:
            self._api_failures.clear()
            self._file_failures.clear()
            self._lags.clear()
        self.api_delay = self.file_delay = 0.0
        self.upload_base = self.redirect_files_to = None
        self.send_content_length = True
        self.batch_size = None

    def fail_api(
        self,
        times: int = 1,
        status: int = 503,
        *,
        body: bytes = _ERROR_PAGE,
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        http_date: bool = False,
    ) -> None:
        """The next ``times`` API answers are ``status`` with an HTML ``body``, asking to
        retry after ``retry_after`` seconds (an HTTP-date with ``http_date``)."""
        reply = _html(status, body, headers, retry_after, http_date)
        with self._lock:
            self._api_failures += [reply] * times

    def fail_files(
        self,
        times: int = 1,
        status: int = 404,
        *,
        body: bytes = _ERROR_PAGE,
        headers: Mapping[str, str] | None = None,
        retry_after: float | None = None,
        http_date: bool = False,
        content_type: str = _HTML,
    ) -> None:
        """The next ``times`` answers for originals or thumbnails are ``status``, as in
        `fail_api`; ``content_type`` may disguise the page as media."""
        reply = _html(status, body, headers, retry_after, http_date, content_type)
        with self._lock:
            self._file_failures += [reply] * times

    def api_error(self, code: str, info: str, times: int = 1) -> None:
        """The next ``times`` API answers are ``{"error": {...}}`` with HTTP 200, as MediaWiki
        answers e.g. ``maxlag`` or ``toomanyvalues``."""
        reply = _api_error(code, info)
        with self._lock:
            self._api_failures += [reply] * times

    def lag_replicas(self, times: int = 1, lag: int = 7) -> None:
        """The replicas lag ``lag`` seconds for the next ``times`` API calls that send a
        ``maxlag`` below it (calls without ``maxlag`` are served, as by MediaWiki)."""
        with self._lock:
            self._lags += [lag] * times

    def _next_failure(self, queue: list[_Reply]) -> _Reply | None:
        with self._lock:
            return queue.pop(0) if queue else None

    def _lagged(self, params: dict[str, str]) -> _Reply | None:
        """MediaWiki's answer to a call whose ``maxlag`` the replicas' lag exceeds."""
        maxlag = params.get("maxlag", "")
        with self._lock:
            if not (maxlag.isdigit() and self._lags and self._lags[0] > int(maxlag)):
                return None
            lag = self._lags.pop(0)
        reply = _api_error(
            "maxlag", f"Waiting for a database server: {lag} seconds lagged.", lag=lag, type="db"
        )
        # ApiMain asks to come back after max(maxlag, 5) seconds.
        headers = reply.headers | {"X-Database-Lag": str(lag)}
        return _Reply(reply.status, reply.body, reply.content_type, headers, max(int(maxlag), 5))

    def _api(self, params: dict[str, str]) -> _Reply:
        if failure := self._next_failure(self._api_failures):
            return failure
        if params.get("action") != "query":
            return _api_error(
                "badvalue", f'Unrecognized value for parameter "action": {params.get("action")}.'
            )
        if params.get("format") != "json" or params.get("formatversion") != "2":
            return _api_error(
                "fake-unsupported", "The fake speaks only format=json&formatversion=2."
            )
        if lagged := self._lagged(params):
            return lagged
        titles = params["titles"].split("|") if params.get("titles") else []
        if len(titles) > MAX_TITLES:
            return _api_error(
                "toomanyvalues",
                f'Too many values supplied for parameter "titles". The limit is {MAX_TITLES}.',
                limit=MAX_TITLES,
                lowlimit=MAX_TITLES,
                highlimit=500,
            )
        body: dict[str, Any] = {}
        if titles:
            body["query"] = self._query(titles, params)
            if resume := self._paginate(body["query"]["pages"], params.get("iicontinue")):
                body["continue"] = {"iicontinue": resume, "continue": "||"}
        if "continue" not in body:
            body = {"batchcomplete": True, **body}
        return _json(body)

    def _query(self, titles: list[str], params: dict[str, str]) -> dict[str, Any]:
        # MediaWiki composes the request's Unicode (NFC) before it parses titles and reports
        # both steps, the first with the raw title percent-encoded: a two-hop chain.
        composed: list[dict[str, Any]] = []
        normalized: list[dict[str, Any]] = []
        redirects: list[dict[str, str]] = []
        pages: dict[str, dict[str, Any]] = {}
        follow = "redirects" in params
        for raw in dict.fromkeys(titles):
            nfc = unicodedata.normalize("NFC", raw)
            if nfc != raw:
                composed.append({"fromencoded": True, "from": quote(raw, safe=""), "to": nfc})
            try:
                title = normalize_title(nfc)
            except InvalidTitle as exc:
                pages[raw] = {"title": raw, "invalidreason": str(exc), "invalid": True}
                continue
            if title != nfc:
                normalized.append({"fromencoded": False, "from": nfc, "to": title})
            seen: set[str] = set()
            while follow and title in self._redirects and title not in seen:
                seen.add(title)
                if all(r["from"] != title for r in redirects):
                    redirects.append({"from": title, "to": self._redirects[title]})
                title = self._redirects[title]
            pages[title] = self._page(title, params, follow)
        query: dict[str, Any] = {}
        if composed or normalized:
            query["normalized"] = composed + normalized
        if redirects:
            query["redirects"] = redirects
        # Like MediaWiki: pages without an id (missing, invalid) first, then by page id;
        # never in request order.
        query["pages"] = sorted(pages.values(), key=lambda p: p.get("pageid", 0))
        return query

    def _paginate(self, pages: list[dict[str, Any]], iicontinue: str | None) -> str | None:
        """Keep the imageinfo of at most `batch_size` File pages, in title order from
        ``iicontinue``, as ApiQueryImageInfo does; the ``iicontinue`` of the rest, if any."""
        files = sorted(
            (p for p in pages if "imagerepository" in p), key=lambda p: _db_key(p["title"])
        )
        if self.batch_size is None or not files:
            return None
        start = iicontinue.split("|", 1)[0] if iicontinue else ""
        todo = [p for p in files if _db_key(p["title"]) >= start]
        batch = {p["title"] for p in todo[: self.batch_size]}
        for page in files:
            if page["title"] not in batch:
                page.pop("imagerepository")
                page.pop("imageinfo", None)
        if len(todo) <= self.batch_size:
            return None
        return f"{_db_key(todo[self.batch_size]['title'])}|{_TIMESTAMP}"

    def _page(self, title: str, params: dict[str, str], follow: bool) -> dict[str, Any]:
        ns = 6 if title.startswith("File:") else 0
        imageinfo = "imageinfo" in params.get("prop", "").split("|") and ns == 6
        if not follow and title in self._redirects:
            return {"pageid": self._redirect_ids[title], "ns": ns, "title": title, "redirect": True}
        file = self._files.get(title)
        if file is None:
            page: dict[str, Any] = {"ns": ns, "title": title, "missing": True}
            if imageinfo:
                page["imagerepository"] = ""
            return page
        page = {"pageid": file.pageid, "ns": ns, "title": title}
        if imageinfo:
            page["imagerepository"] = "local"
            page["imageinfo"] = [self._imageinfo(file, params)]
        return page

    def _imageinfo(self, file: _File, params: dict[str, str]) -> dict[str, Any]:
        props = set(params.get("iiprop", "timestamp|user").split("|"))
        info: dict[str, Any] = {}
        if "size" in props:
            info.update(size=len(file.data), width=file.width, height=file.height)
        if "url" in props:
            original = self.original_url(file.title)
            width = int(params.get("iiurlwidth", -1))
            if width > 0 and file.format:
                # Bitmaps are never scaled up: the original it is. SVGs render at any width.
                if width >= file.width and file.mime != _SVG:
                    info.update(thumburl=original, thumbwidth=file.width, thumbheight=file.height)
                else:
                    info.update(
                        thumburl=self.thumb_url(file.title, width),
                        thumbwidth=width,
                        thumbheight=_scaled_height(file, width),
                    )
                    responsive = {
                        density: self.thumb_url(file.title, round(width * float(density)))
                        for density in ("1.5", "2")
                        if round(width * float(density)) < file.width
                    }
                    if responsive:
                        info["responsiveUrls"] = responsive
            page_name = quote(file.title.replace(" ", "_"), safe="/:")
            info.update(
                url=original,
                descriptionurl=f"{self.base_url}/wiki/{page_name}",
                descriptionshorturl=f"{self.base_url}/w/index.php?curid={file.pageid}",
            )
        if "sha1" in props:
            info["sha1"] = hashlib.sha1(file.data).hexdigest()
        if "mime" in props:
            info["mime"] = file.mime
        if "mediatype" in props:
            info["mediatype"] = file.mediatype
        return info

    def _file(self, path: str) -> _Reply:
        if failure := self._next_failure(self._file_failures):
            return failure
        if self.redirect_files_to:
            return _Reply(302, b"", "text/plain", {"Location": self.redirect_files_to})
        section, *rest = [unquote(p) for p in path.split("/")[1:]]
        file = self._by_key.get(rest[0]) if rest else None
        if file and section == "original" and len(rest) == 1:
            return _Reply(200, file.data, file.content_type)
        if file and file.format and section == "thumb" and len(rest) == 2:
            match = _THUMB_NAME.fullmatch(rest[1])
            if match and match.group(2) == rest[0] + _thumb_suffix(file):
                width = int(match.group(1))
                # What Wikimedia's thumbnailer answers for bitmaps:
                if width >= file.width and file.mime != _SVG:
                    return _Reply(400, b"Error: width is bigger than the source", "text/plain")
                thumb_mime = "image/png" if file.mime == _SVG else file.mime
                return _Reply(200, self._thumbnail(file, width), thumb_mime)
        return _Reply(404, b"Not Found", "text/plain")

    def _thumbnail(self, file: _File, width: int) -> bytes:
        if (file.title, width) not in self._thumbs and file.mime == _SVG:
            self._thumbs[(file.title, width)] = _render_svg(
                file.data, width, _scaled_height(file, width)
            )
        if (file.title, width) not in self._thumbs:
            with Image.open(io.BytesIO(file.data)) as img:
                thumb = img.resize((width, _scaled_height(file, width)), Image.Resampling.LANCZOS)
                out = io.BytesIO()
                thumb.save(out, format=file.format)
            self._thumbs[(file.title, width)] = out.getvalue()
        return self._thumbs[(file.title, width)]


def _file_title(name: str) -> str:
    """The title of a fixture named with or without ``File:``."""
    return normalize_title(f"File:{name.removeprefix('File:')}")


def _db_key(title: str) -> str:
    """MediaWiki's DB key of a File title: no namespace, underscores for spaces."""
    return title.removeprefix("File:").replace(" ", "_")


def _describe(title: str, data: bytes, pageid: int) -> _File:
    """What MediaWiki would know about an upload: WebM, MP4 and Ogg by their magic bytes are
    VIDEO, or AUDIO without a video stream, with the dimensions PyAV reads (served as
    originals only); an ``.svg`` that renders is a DRAWING; an HTML page is the media its
    name says (served as a web page), and so is an empty file (served empty: a store that
    lost the bytes); other bytes Pillow cannot read are UNKNOWN."""
    if not data or data.lstrip()[:9].lower().startswith((b"<!doctype", b"<html")):
        mime = mimetypes.guess_type(title)[0] or "application/octet-stream"
        mediatype = "BITMAP" if mime.startswith("image/") else "UNKNOWN"
        return _File(title, data, pageid, mime, mediatype, 0, 0, None, _HTML if data else mime)
    if title.lower().endswith(".svg") and (size := _svg_size(data)):
        return _File(title, data, pageid, _SVG, "DRAWING", *size, "PNG", _SVG)
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt, (width, height) = img.format, img.size
    except UnidentifiedImageError:
        for at, magic, video_mime, audio_mime in _AV_MAGIC:
            if data[at : at + len(magic)] == magic:
                size = _video_size(data)
                if size is None:
                    return _File(title, data, pageid, audio_mime, "AUDIO", 0, 0, None, audio_mime)
                return _File(title, data, pageid, video_mime, "VIDEO", *size, None, video_mime)
        mime = "application/octet-stream"
        return _File(title, data, pageid, mime, "UNKNOWN", 0, 0, None, mime)
    mime = Image.MIME[fmt]
    return _File(title, data, pageid, mime, "BITMAP", width, height, fmt, mime)


def _video_size(data: bytes) -> tuple[int, int] | None:
    """The first video stream's width and height, None without one; (0, 0) when PyAV cannot
    read the file (MediaWiki's metadata is empty then too)."""
    try:
        with av.open(io.BytesIO(data)) as container:
            stream = next(iter(container.streams.video), None)
            if stream is None:
                return None
            return stream.codec_context.width, stream.codec_context.height
    except (av.FFmpegError, OSError, ValueError):
        return (0, 0)


def _svg_size(data: bytes) -> tuple[int, int] | None:
    """The size an SVG renders at by default; None when it does not render."""
    try:
        with Image.open(io.BytesIO(_render_svg(data))) as img:
            return img.size
    except (ValueError, SyntaxError, OSError, TypeError, AttributeError):  # CairoSVG's parsers
        return None


def _render_svg(data: bytes, width: int | None = None, height: int | None = None) -> bytes:
    import cairosvg  # only SVG fixtures need it

    return cairosvg.svg2png(bytestring=data, output_width=width, output_height=height)


def _thumb_suffix(file: _File) -> str:
    """What a thumbnail's name adds to the file's: ``.png`` for SVGs, rasterised."""
    return ".png" if file.mime == _SVG else ""


def _scaled_height(file: _File, width: int) -> int:
    """MediaWiki's File::scaleHeight: rounded, at least 1."""
    return max(1, round(file.height * width / file.width))


def _html(
    status: int,
    body: bytes,
    headers: Mapping[str, str] | None,
    retry_after: float | None = None,
    http_date: bool = False,
    content_type: str = _HTML,
) -> _Reply:
    return _Reply(status, body, content_type, dict(headers or {}), retry_after, http_date)


def _json(body: dict[str, Any], headers: dict[str, str] | None = None) -> _Reply:
    return _Reply(
        200, json.dumps(body).encode(), "application/json; charset=utf-8", headers or {}
    )


def _api_error(code: str, info: str, **extra: Any) -> _Reply:
    error = {"code": code, "info": info, **extra}
    error["docref"] = "See /w/api.php for API usage."
    return _json({"error": error, "servedby": "fake-commons"}, {"MediaWiki-API-Error": code})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeCommons

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a timeout test) leaves a broken pipe behind: not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        self._handle(b"")

    def do_POST(self) -> None:
        self._handle(self.rfile.read(int(self.headers.get("Content-Length", 0))))

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the request log is `FakeCommons.requests`

    def _handle(self, body: bytes) -> None:
        fake = self.server.fake
        url = urlsplit(self.path)
        params = dict(parse_qsl(url.query, keep_blank_values=True))
        if self.headers.get_content_type() == "application/x-www-form-urlencoded":
            params.update(parse_qsl(body.decode(), keep_blank_values=True))
        headers = {name.lower(): value for name, value in self.headers.items()}
        fake.requests.append(
            LoggedRequest(self.command, url.path, params, headers, time.monotonic())
        )
        is_api = url.path == API_PATH
        time.sleep(fake.api_delay if is_api else fake.file_delay)
        reply = fake._api(params) if is_api else fake._file(url.path)
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        for name, value in reply.all_headers().items():
            self.send_header(name, value)
        if is_api or fake.send_content_length:
            self.send_header("Content-Length", str(len(reply.body)))
        else:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(reply.body)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a folder of images as a fake Commons.")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--port", type=int, default=8090)
    args = parser.parse_args(argv)
    files = {p.name: p.read_bytes() for p in sorted(args.directory.iterdir()) if p.is_file()}
    with FakeCommons(files, port=args.port) as fake:
        print(f"fake Commons API at {fake.api_url} serving {len(files)} files", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
