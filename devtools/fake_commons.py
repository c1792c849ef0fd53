"""A local stand-in for Wikimedia Commons, speaking the real MediaWiki API format.

Tests and load tests need Commons without the internet, and a mock of our own client would
only check that it agrees with itself. So this is a real HTTP server on 127.0.0.1 that
answers ``action=query&prop=imageinfo&format=json&formatversion=2`` the way MediaWiki does
(``normalized``, ``redirects``, ``missing``, ``invalid``, ``thumburl``, ``continue``, the
50-title ``toomanyvalues`` error, ``maxlag``) and serves originals and Pillow-made
thumbnails. It also answers the two list modules a bulk backfill enumerates with,
``list=categorymembers`` (files and subcategories) and ``list=allimages`` (by name or upload
time), with their limits, warnings and ``continue`` tokens. Files are described as
MediaWiki would: bitmaps by Pillow, videos and audio by PyAV (real dimensions, ``VIDEO``
or ``AUDIO``), SVGs as ``DRAWING`` with rasterised PNG thumbnails (CairoSVG) at any width.
Knobs inject the failures production sees: 5xx/429 answers with or without
Retry-After, lagged replicas, slow answers, API errors, answers split into batches, file
URLs on a foreign host, redirects, web pages instead of files, bodies without a
Content-Length.

Use it as a context manager::

    with FakeCommons({"Cat.jpg": image_bytes(640, 480)}) as fake:
        ...  # fake.api_url, fake.requests

or from a shell, serving a folder of images for load tests, and/or many generated files
(distinct bytes, one upload a second) in a category::

    python -m devtools.fake_commons DIR --port 8090
    python -m devtools.fake_commons --many 10000 --category "Backfill test" --port 8090
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import io
import json
import math
import mimetypes
import re
import struct
import threading
import time
import unicodedata
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import av
from PIL import Image, UnidentifiedImageError

from devtools import images
from devtools.local_server import LocalServer, LoggedRequest, Server

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
# The upload time of a file added without one; every file here has one version.
DEFAULT_TIMESTAMP = "2024-01-01T00:00:00Z"
# Limits of list modules for ordinary clients (``max`` asks for this many).
LIST_LIMIT = 500
_DEFAULT_LIMIT = 10
# categorymembers sorts by type first, in the order of MediaWiki's cl_type enum.
_MEMBER_TYPES = ("page", "subcat", "file")
_CATEGORY = re.compile(r"(?i)category ?: ?(.*)")
_CATEGORY_PAGEIDS = 200_000


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
    timestamp: str = DEFAULT_TIMESTAMP  # upload time, ISO 8601 in UTC

    @property
    def key(self) -> str:
        """The name as it appears in upload URLs (MediaWiki's DB key)."""
        return _db_key(self.title)


class FakeCommons(LocalServer):
    """Serves ``files`` (name → bytes; any accepted spelling of the name) and ``redirects``
    (from name → to name) as Commons does, on ``127.0.0.1`` and an ephemeral port.

    Knobs, all safe to change while it runs:

    * `add_file`: host another file, in categories, uploaded at a time; `add_category`: a
      (sub)category; `add_many`: thousands of distinct small images at once; `reset`: undo
      every other knob;
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
        # Category title → page id, and → member titles (files and subcategories).
        self._categories: dict[str, int] = {}
        self._members: dict[str, dict[str, None]] = {}
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
        super().__init__(_Handler, port)

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

    def add_file(
        self,
        name: str,
        data: bytes,
        *,
        categories: Iterable[str] = (),
        timestamp: str | datetime | None = None,
    ) -> None:
        """Host one more file (or new bytes under a name already hosted), uploaded at
        ``timestamp`` (ISO 8601, default `DEFAULT_TIMESTAMP`), as a member of ``categories``
        (added to those it is in already)."""
        title = _file_title(name)
        old = self._files.get(title)
        file = _describe(title, data, old.pageid if old else len(self._files) + 1)
        file = replace(file, timestamp=_iso(timestamp) if timestamp else DEFAULT_TIMESTAMP)
        with self._lock:
            self._files[title] = file
            self._by_key[file.key] = file
            self._thumbs = {key: thumb for key, thumb in self._thumbs.items() if key[0] != title}
            self._categorise(title, categories)

    def add_category(self, name: str, *, parents: Iterable[str] = ()) -> str:
        """Create category ``name`` (with or without ``Category:``), as a subcategory of
        ``parents``; its title."""
        title = _category_title(name)
        with self._lock:
            self._categories.setdefault(title, _CATEGORY_PAGEIDS + len(self._categories))
            self._members.setdefault(title, {})
            self._categorise(title, parents)
        return title

    def add_many(
        self,
        count: int,
        *,
        prefix: str = "Bulk",
        categories: Iterable[str] = (),
        first_upload: str | datetime = DEFAULT_TIMESTAMP,
        interval_s: float = 1.0,
    ) -> list[str]:
        """Host ``count`` distinct small images (different bytes, so different SHA-1s, that
        decode to one of a few base images) named ``{prefix} 000001.jpg`` etc., uploaded
        ``interval_s`` apart from ``first_upload``; their titles. 10,000 take about a second:
        the bytes are a base image with a unique comment spliced in, not a new encoding."""
        bases = [(ext, data, _describe(f"File:Base.{ext}", data, 0)) for ext, data in _bases()]
        start = datetime.fromisoformat(_iso(first_upload))
        categories = [self.add_category(name) for name in categories]
        made: list[_File] = []
        for i in range(count):
            ext, data, base = bases[i % len(bases)]
            title = _file_title(f"{prefix} {i + 1:06d}.{ext}")
            tag = f"{title} #{i}".encode()
            unique = _tagged_png(data, tag) if ext == "png" else _tagged_jpeg(data, tag)
            at = _iso(start + timedelta(seconds=i * interval_s))
            made.append(replace(base, title=title, data=unique, timestamp=at))
        with self._lock:
            for file in made:
                old = self._files.get(file.title)
                file = replace(file, pageid=old.pageid if old else len(self._files) + 1)
                self._files[file.title] = self._by_key[file.key] = file
                self._categorise(file.title, categories)
        return [file.title for file in made]

    def _categorise(self, title: str, categories: Iterable[str]) -> None:
        """Make ``title`` a member of ``categories``, creating them; under the lock."""
        for name in categories:
            category = _category_title(name)
            self._categories.setdefault(category, _CATEGORY_PAGEIDS + len(self._categories))
            self._members.setdefault(category, {})[title] = None

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
        lists = [name for name in params.get("list", "").split("|") if name]
        for name in lists:
            module = self._list_modules().get(name)
            if module is None:
                _warn(body, "query", f'Unrecognized value for parameter "list": {name}.')
                continue
            try:
                items, resume = module(params, body)
            except _ApiFailure as failure:
                return failure.reply
            body.setdefault("query", {})[name] = items
            if resume:
                body.setdefault("continue", {"continue": "-||"})
                body["continue"] = {**resume, **body["continue"]}
        # A list module that continues still completes its batch: there are no page props.
        if "continue" not in body or "iicontinue" not in body["continue"]:
            body = {"batchcomplete": True, **body}
        return _json(body)

    def _list_modules(self) -> dict[str, Callable[..., tuple[list[dict[str, Any]], dict]]]:
        return {"categorymembers": self._categorymembers, "allimages": self._allimages}

    def _categorymembers(
        self, params: dict[str, str], body: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """ApiQueryCategoryMembers by sort key: members of ``cmtitle`` of the ``cmtype``s and
        ``cmnamespace``s asked, ordered by type, sort key and page id."""
        raw = params.get("cmtitle")
        if raw is None:
            raise _ApiFailure(
                "invalidparammix", "One of the parameters cmtitle and cmpageid is required."
            )
        match = _CATEGORY.fullmatch(re.sub(r"[ _]+", " ", raw).strip())
        if not match or not match.group(1):
            raise _ApiFailure("invalidcategory", "The category name you entered is not valid.")
        types = _choices(params, "cmtype", "page|subcat|file", _MEMBER_TYPES)
        namespaces = (
            {int(n) for n in params["cmnamespace"].split("|")}
            if params.get("cmnamespace")
            else None
        )
        props = set(params.get("cmprop", "ids|title").split("|"))
        limit = _limit(params, "cmlimit", body, "categorymembers")
        with self._lock:
            titles = list(self._members.get(_category_title(match.group(1)), ()))
        rows = []
        for title in titles:
            page = self._member_page(title)
            kind = _member_type(page["ns"])
            if kind in types and (namespaces is None or page["ns"] in namespaces):
                sortkey = title.split(":", 1)[1] if page["ns"] else title
                key = (
                    _MEMBER_TYPES.index(kind),
                    sortkey.upper().encode().hex().upper(),
                    page["pageid"],
                )
                rows.append((key, kind, page))
        rows.sort(key=lambda row: row[0])
        if cmcontinue := params.get("cmcontinue"):
            try:
                kind, hexkey, pageid = cmcontinue.split("|")
                start = (_MEMBER_TYPES.index(kind), hexkey, int(pageid))
            except ValueError:
                raise _ApiFailure(
                    "badcontinue",
                    "Invalid continue param. You should pass the original value returned by "
                    "the previous query.",
                ) from None
            rows = [row for row in rows if row[0] >= start]
        items = []
        for (_, _, pageid), kind, page in rows[:limit]:
            item: dict[str, Any] = {}
            if "ids" in props:
                item["pageid"] = pageid
            if "title" in props:
                item |= {"ns": page["ns"], "title": page["title"]}
            if "type" in props:
                item["type"] = kind
            if "timestamp" in props:
                item["timestamp"] = page["timestamp"]
            items.append(item)
        if len(rows) <= limit:
            return items, {}
        (type_index, hexkey, pageid), _, _ = rows[limit]
        return items, {"cmcontinue": f"{_MEMBER_TYPES[type_index]}|{hexkey}|{pageid}"}

    def _member_page(self, title: str) -> dict[str, Any]:
        if title in self._categories:
            return {
                "pageid": self._categories[title],
                "ns": 14,
                "title": title,
                "timestamp": DEFAULT_TIMESTAMP,
            }
        file = self._files[title]
        return {"pageid": file.pageid, "ns": 6, "title": title, "timestamp": file.timestamp}

    def _allimages(
        self, params: dict[str, str], body: dict[str, Any]
    ) -> tuple[list[dict[str, Any]], dict[str, str]]:
        """ApiQueryAllImages: every file by name (``aifrom``/``aito``) or by upload time
        (``aistart``/``aiend``, both inclusive), in ``aidir``."""
        by_time = _choices(params, "aisort", "name", ("name", "timestamp")) == {"timestamp"}
        for name in ("aistart", "aiend") if not by_time else ("aifrom", "aito"):
            if name in params:
                other = "timestamp" if name in ("aistart", "aiend") else "name"
                raise _ApiFailure("badparams", f"{name} can only be used with aisort={other}.")
        direction = params.get("aidir", "ascending")
        allowed = (
            ("ascending", "descending", "newer", "older")
            if by_time
            else ("ascending", "descending")
        )
        if direction not in allowed:
            raise _ApiFailure("badvalue", f'Unrecognized value for parameter "aidir": {direction}.')
        descending = direction in ("descending", "older")
        props = set(params.get("aiprop", "timestamp|url").split("|"))
        limit = _limit(params, "ailimit", body, "allimages")
        with self._lock:
            files = list(self._files.values())

        def key(file: _File) -> tuple[str, ...]:
            return (_mw_timestamp(file.timestamp), file.key) if by_time else (file.key,)

        low, high = (
            _bound(params.get(name), name, by_time)
            for name in (("aistart", "aiend") if by_time else ("aifrom", "aito"))
        )
        if descending:
            low, high = high, low
        chosen = [
            f
            for f in files
            if (low is None or key(f)[0] >= low) and (high is None or key(f)[0] <= high)
        ]
        chosen.sort(key=key, reverse=descending)
        if aicontinue := params.get("aicontinue"):
            start = tuple(aicontinue.split("|", 1)) if by_time else (aicontinue,)
            chosen = [f for f in chosen if (key(f) <= start if descending else key(f) >= start)]
        items = [self._allimages_item(file, props) for file in chosen[:limit]]
        if len(chosen) <= limit:
            return items, {}
        return items, {"aicontinue": "|".join(key(chosen[limit]))}

    def _allimages_item(self, file: _File, props: set[str]) -> dict[str, Any]:
        item: dict[str, Any] = {"name": file.key}
        item |= self._imageinfo(file, {"iiprop": "|".join(props)})
        return item | {"ns": 6, "title": file.title}

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
        following = self._files[todo[self.batch_size]["title"]]
        return f"{following.key}|{_mw_timestamp(following.timestamp)}"

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
        if "timestamp" in props:
            info["timestamp"] = file.timestamp
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


def _category_title(name: str) -> str:
    """The title of a category named with or without ``Category:``."""
    text = re.sub(r"[ _]+", " ", name).strip()
    match = _CATEGORY.fullmatch(text)
    rest = match.group(1) if match else text
    return f"Category:{rest[:1].upper()}{rest[1:]}"


def _member_type(ns: int) -> str:
    return {6: "file", 14: "subcat"}.get(ns, "page")


def _iso(when: str | datetime) -> str:
    """An upload time as MediaWiki writes it in ISO 8601: ``2024-01-01T00:00:00Z``."""
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _mw_timestamp(iso: str) -> str:
    """MediaWiki's database form of an ISO timestamp: ``20240101000000``."""
    return re.sub(r"\D", "", iso)


def _timestamp_param(value: str, name: str) -> str:
    """A timestamp parameter as MediaWiki accepts it (ISO 8601 or 14 digits), in database
    form."""
    if re.fullmatch(r"\d{14}", value):
        return value
    try:
        return _mw_timestamp(_iso(value))
    except ValueError:
        raise _ApiFailure(
            "badtimestamp", f'Invalid value "{value}" for timestamp parameter "{name}".'
        ) from None


def _bound(value: str | None, name: str, by_time: bool) -> str | None:
    """An allimages range end as it sorts: a database timestamp, or a DB key."""
    if value is None:
        return None
    return _timestamp_param(value, name) if by_time else _db_key(normalize_title(value))


def _choices(params: dict[str, str], name: str, default: str, allowed: Iterable[str]) -> set[str]:
    values = set(params.get(name, default).split("|"))
    if bad := values - set(allowed):
        raise _ApiFailure("badvalue", f'Unrecognized value for parameter "{name}": {min(bad)}.')
    return values


def _limit(params: dict[str, str], name: str, body: dict[str, Any], module: str) -> int:
    """A list module's limit: ``max`` is `LIST_LIMIT`, and out-of-range values are clamped
    with a warning, as MediaWiki does."""
    raw = params.get(name, str(_DEFAULT_LIMIT))
    if raw == "max":
        return LIST_LIMIT
    try:
        value = int(raw)
    except ValueError:
        raise _ApiFailure(
            "badinteger", f'Invalid value "{raw}" for integer parameter "{name}".'
        ) from None
    if value > LIST_LIMIT:
        _warn(body, module, f"{name} may not be over {LIST_LIMIT} (set to {value}) for users")
        return LIST_LIMIT
    if value < 1:
        _warn(body, module, f"{name} may not be less than 1 (set to {value})")
        return 1
    return value


def _warn(body: dict[str, Any], module: str, text: str) -> None:
    """Add a warning as formatversion=2 lists them: one newline-joined text per module."""
    warnings = body.setdefault("warnings", {}).setdefault(module, {})
    warnings["warnings"] = "\n".join(filter(None, (warnings.get("warnings"), text)))


@functools.cache
def _bases() -> tuple[tuple[str, bytes], ...]:
    """A few small base images for `FakeCommons.add_many`, JPEG photos and PNG logos. At
    320x240 the first thumbnail width is the original, so nothing is ever resized."""
    photos = [
        ("jpg", images.encode(images.photo(320, 240, seed), "JPEG", quality=80))
        for seed in range(4)
    ]
    logos = [
        ("png", images.encode(images.logo(320, 240, seed, alpha=False), "PNG")) for seed in range(4)
    ]
    return tuple(photos + logos)


def _tagged_png(data: bytes, text: bytes) -> bytes:
    """``data`` with a ``tEXt`` comment chunk after the IHDR chunk (which ends at byte 33)."""
    payload = b"Comment\x00" + text
    chunk = b"tEXt" + payload
    return (
        data[:33]
        + struct.pack(">I", len(payload))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + data[33:]
    )


def _tagged_jpeg(data: bytes, text: bytes) -> bytes:
    """``data`` with a COM segment after SOI and the JFIF APP0 segment, if any."""
    at = 2
    if data[2:4] == b"\xff\xe0":
        at = 4 + struct.unpack(">H", data[4:6])[0]
    return data[:at] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + data[at:]


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


class _ApiFailure(Exception):
    """A list module refuses its parameters: the answer is this MediaWiki error."""

    def __init__(self, code: str, info: str) -> None:
        super().__init__(info)
        self.reply = _api_error(code, info)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm the body then waits for
    # the client's delayed ACK, ~40 ms per answer on a kept-alive connection.
    disable_nagle_algorithm = True
    server: Server

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
    parser = argparse.ArgumentParser(
        description="Serve a folder of images, and/or many generated ones, as a fake Commons."
    )
    parser.add_argument("directory", type=Path, nargs="?", help="images to serve by file name")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--many", type=int, default=0, help="also host N distinct small images")
    parser.add_argument("--prefix", default="Bulk", help="name prefix of the generated images")
    parser.add_argument(
        "--category", action="append", default=[], help="category of all files (repeatable)"
    )
    parser.add_argument(
        "--first-upload", default=DEFAULT_TIMESTAMP, help="upload time of the first generated image"
    )
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between uploads")
    args = parser.parse_args(argv)
    if args.directory is None and not args.many:
        parser.error("give a DIRECTORY, --many N, or both")
    paths = sorted(args.directory.iterdir()) if args.directory else []
    with FakeCommons({}, port=args.port) as fake:
        for path in filter(Path.is_file, paths):
            fake.add_file(path.name, path.read_bytes(), categories=args.category)
        fake.add_many(
            args.many,
            prefix=args.prefix,
            categories=args.category,
            first_upload=args.first_upload,
            interval_s=args.interval,
        )
        count = len(fake._files)
        print(f"fake Commons API at {fake.api_url} serving {count} files", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
