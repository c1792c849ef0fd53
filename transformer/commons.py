"""Async client for the MediaWiki API of Wikimedia Commons: file name → thumbnail URL → bytes.

Why it is shaped like this:

* one ``action=query&prop=imageinfo`` call resolves up to 50 names (MediaWiki's limit for
  ordinary clients); every requested name is followed through ``normalized`` and
  ``redirects`` to its page, so results come back one per name, in the caller's order;
* thumbnails are asked at a width Wikimedia's thumbnail servers already cache (330 px), and
  only files whose thumbnail would be shorter than the model's 224 px (panoramas) are asked
  again, wider, in one extra call per width;
* names that can never be titles are rejected here, before any request: ``|`` would split
  the ``titles`` parameter, and one bad name must not cost the others a round trip;
* the API's answer decides what we download, so only URLs on the API host or the configured
  upload hosts are fetched, redirects are never followed and downloads stop at
  ``max_fetch_bytes`` (no SSRF, no memory blow-up);
* an outage (unreachable, 5xx, 429, timeout, bad JSON, API error) raises `CommonsUnavailable`
  after bounded retries, carrying the status our own API should answer; a problem with one
  file is an `ItemError` value, so the other files are still scored.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import unicodedata
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, TypeVar

import httpx

from transformer.errors import ItemError

log = logging.getLogger(__name__)

MAX_TITLES_PER_QUERY = 50
# The models need at least this many pixels on the shorter side.
MIN_SIDE = 224
# Widths the Wikimedia thumbnail servers pre-render and cache; asking for one of these is a
# cache hit instead of a fresh render.
CACHED_WIDTHS: tuple[int, ...] = (120, 250, 330, 500, 960, 1280, 1920)
FIRST_WIDTH = 330
MAX_TITLE_BYTES = 255
IIPROP = "url|sha1|mime|size|mediatype"

_NAMESPACE = re.compile(r"^[ _]*(?:file|image)[ _]*:", re.IGNORECASE)
_FORBIDDEN = re.compile(r"[|#<>\[\]{}\x00-\x1f\x7f]")
# The status our API answers for an upstream status; everything else is a 502.
_UPSTREAM_STATUS = {429: 503, 503: 503, 504: 504}

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CommonsFile:
    """A file found on Commons. ``url`` is what to download for scoring: a thumbnail whose
    shorter side is at least `MIN_SIDE` where the original is that large, else the original."""

    title: str
    url: str
    original_url: str
    mime: str
    mediatype: str
    size: int
    width: int
    height: int
    sha1: str
    thumb_width: int
    thumb_height: int


Resolved = CommonsFile | ItemError


class CommonsUnavailable(Exception):
    """Commons could not answer at all. ``status`` is what our API should answer:
    504 for timeouts, 503 when Commons is overloaded (429/503), 502 otherwise."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Transient(CommonsUnavailable):
    """A failure worth retrying; ``retry_after`` is the pause the server asked for."""

    def __init__(self, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(status, message)
        self.retry_after = retry_after


class CommonsClient:
    """Resolves Commons file names and downloads their thumbnails over one pooled
    `httpx.AsyncClient`. Use as ``async with`` or call `aclose`."""

    def __init__(
        self,
        api_url: str,
        *,
        user_agent: str,
        upload_hosts: Sequence[str] = ("upload.wikimedia.org",),
        api_timeout: float = 5.0,
        fetch_timeout: float = 10.0,
        max_fetch_bytes: int = 25 * 2**20,
        retries: int = 2,
        backoff: float = 0.2,
        max_retry_after: float = 2.0,
        max_connections: int = 20,
    ) -> None:
        self._api_url = httpx.URL(api_url)
        # Upload hosts are bare host[:port] names; they share the API's scheme.
        self._allowed_origins = {_origin(self._api_url)} | {
            _origin(httpx.URL(f"{self._api_url.scheme}://{host}")) for host in upload_hosts
        }
        self._api_timeout = api_timeout
        self._fetch_timeout = fetch_timeout
        self._max_fetch_bytes = max_fetch_bytes
        self._retries = retries
        self._backoff = backoff
        self._max_retry_after = max_retry_after
        self._http = httpx.AsyncClient(
            headers={"User-Agent": user_agent},
            follow_redirects=False,
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
        )

    async def __aenter__(self) -> CommonsClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def resolve(self, names: Sequence[str]) -> list[Resolved]:
        """Look ``names`` up on Commons: one `CommonsFile` or `ItemError` per name, in order.

        Names may carry a ``File:``/``Image:`` prefix and use spaces or underscores.
        Raises `CommonsUnavailable` when Commons cannot answer, which fails every name alike.
        """
        titles = [_to_title(name) for name in names]
        wanted = list(dict.fromkeys(t for t in titles if isinstance(t, str)))
        found = await self._lookup(wanted, FIRST_WIDTH)
        await self._widen(found)
        return [title if isinstance(title, ItemError) else found[title] for title in titles]

    async def fetch(self, file: CommonsFile, *, original: bool = False) -> bytes | ItemError:
        """Download ``file.url`` (or the original), streaming, up to ``max_fetch_bytes``.

        Only the API host and the upload hosts are ever contacted. Raises
        `CommonsUnavailable` for outages (after retries); a refused URL, a 4xx or 3xx, or a
        file over the limit is an `ItemError`.
        """
        url = self._api_url.join(file.original_url if original else file.url)
        if _origin(url) not in self._allowed_origins:
            return ItemError(
                "url_not_allowed",
                f"{file.title} points to {url.scheme}://{url.netloc.decode()}, "
                "which is not a Commons upload host; not fetched",
                HTTPStatus.BAD_GATEWAY,
            )
        return await self._retrying(lambda: self._fetch_once(url, file.title), self._fetch_timeout)

    async def _widen(self, found: dict[str, Resolved]) -> None:
        """Replace thumbnails shorter than `MIN_SIDE` by wider ones, one call per width."""
        by_width: dict[int, dict[str, None]] = {}
        for file in found.values():
            if isinstance(file, CommonsFile) and (width := _wider_width(file)):
                by_width.setdefault(width, {})[file.title] = None
        for width, titles in sorted(by_width.items()):
            wider = await self._lookup(list(titles), width)
            for key, file in found.items():
                better = wider.get(file.title) if isinstance(file, CommonsFile) else None
                if isinstance(better, CommonsFile):
                    found[key] = better

    async def _lookup(self, titles: Sequence[str], width: int) -> dict[str, Resolved]:
        """Resolve ``titles`` in chunks of 50, one chunk after the other as Wikimedia's API
        etiquette asks, keyed by the title as sent."""
        results: dict[str, Resolved] = {}
        for start in range(0, len(titles), MAX_TITLES_PER_QUERY):
            chunk = titles[start : start + MAX_TITLES_PER_QUERY]
            query = await self._query(chunk, width)
            try:
                results.update(_match(chunk, query))
            except (KeyError, TypeError, AttributeError, IndexError) as exc:
                raise CommonsUnavailable(
                    502, f"the Commons API answered in an unexpected format ({exc!r})"
                ) from exc
        return results

    async def _query(self, titles: Sequence[str], width: int) -> dict[str, Any]:
        """One imageinfo query; returns its ``query`` object."""
        params = {
            "action": "query",
            "prop": "imageinfo",
            "iiprop": IIPROP,
            "iiurlwidth": str(width),
            "titles": "|".join(titles),
            "redirects": "1",
            "format": "json",
            "formatversion": "2",
        }

        async def attempt() -> dict[str, Any]:
            # POST keeps 50 long titles out of the URL; the header tells Wikimedia's routing
            # that this POST is a read, so any data centre may serve it.
            response = await self._http.post(
                self._api_url,
                data=params,
                headers={"Promise-Non-Write-API-Action": "true"},
                timeout=self._api_timeout,
            )
            _raise_if_transient(response)
            if response.status_code != 200:
                raise CommonsUnavailable(
                    502, f"the Commons API answered HTTP {response.status_code}"
                )
            try:
                body = response.json()
            except ValueError:
                raise CommonsUnavailable(
                    502, "the Commons API answered with invalid JSON"
                ) from None
            if not isinstance(body, dict):
                raise CommonsUnavailable(502, "the Commons API answered with unexpected JSON")
            if "error" in body:
                error = body["error"] if isinstance(body["error"], dict) else {}
                raise CommonsUnavailable(
                    502,
                    f"the Commons API refused the query: {error.get('code')}: {error.get('info')}",
                )
            query = body.get("query")
            if not isinstance(query, dict):
                raise CommonsUnavailable(502, "the Commons API answered without a query result")
            return query

        return await self._retrying(attempt, self._api_timeout)

    async def _fetch_once(self, url: httpx.URL, title: str) -> bytes | ItemError:
        async with self._http.stream("GET", url, timeout=self._fetch_timeout) as response:
            _raise_if_transient(response)
            if response.status_code != 200:
                # Commons listed the file, then would not serve it: not the client's fault.
                return ItemError(
                    "fetch_failed",
                    f"downloading {title} failed: {url} answered HTTP {response.status_code}",
                    HTTPStatus.BAD_GATEWAY,
                )
            too_large = ItemError(
                "file_too_large", f"{title} is larger than {self._max_fetch_bytes} bytes"
            )
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self._max_fetch_bytes:
                return too_large
            data = bytearray()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > self._max_fetch_bytes:
                    return too_large
            return bytes(data)

    async def _retrying(self, attempt: Callable[[], Awaitable[T]], timeout: float) -> T:
        """Run ``attempt`` under a total ``timeout``, retrying transient failures with
        exponential backoff (or the server's Retry-After, capped)."""
        for n in range(self._retries + 1):
            try:
                async with asyncio.timeout(timeout):
                    return await attempt()
            except (httpx.TimeoutException, TimeoutError):
                error = _Transient(504, f"Commons did not answer within {timeout:g} s")
            except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                error = _Transient(502, f"cannot reach Commons: {exc!r}")
            except _Transient as exc:
                error = exc
            except httpx.HTTPError as exc:  # e.g. a body that fails to decode: not transient
                raise CommonsUnavailable(502, f"bad answer from Commons: {exc!r}") from exc
            if n < self._retries:
                pause = (
                    min(error.retry_after, self._max_retry_after)
                    if error.retry_after is not None
                    else self._backoff * 2**n
                )
                log.warning("Commons request failed (%s); retry %d in %.2f s", error, n + 1, pause)
                await asyncio.sleep(pause)
        raise CommonsUnavailable(error.status, error.message)


def _to_title(name: str) -> str | ItemError:
    """The ``titles`` value for a user-supplied file name, or why it can never be one.

    Normalisation (underscores, capitalisation, ``Image:``) is left to MediaWiki, which
    reports it in ``query.normalized``; here we only catch what would break the request.
    """
    # MediaWiki stores titles in NFC; sending NFC saves a normalisation hop we would
    # otherwise have to follow (names typed on macOS often arrive decomposed).
    name = unicodedata.normalize("NFC", name.strip())
    prefix = _NAMESPACE.match(name)
    bare = name[prefix.end() if prefix else 0 :].strip(" _")
    if not bare:
        return ItemError("invalid_title", f"{name!r} is not a valid file name: it is empty")
    if bad := _FORBIDDEN.search(bare):
        return ItemError(
            "invalid_title", f"{name!r} is not a valid file name: it contains {bad.group()!r}"
        )
    if len(bare.encode()) > MAX_TITLE_BYTES:
        return ItemError(
            "invalid_title",
            f"{name[:40] + '…'!r} is not a valid file name: longer than {MAX_TITLE_BYTES} bytes",
        )
    return name if prefix else f"File:{name}"


def _match(titles: Sequence[str], query: dict[str, Any]) -> dict[str, Resolved]:
    """Follow each title as sent through ``normalized`` and ``redirects`` to its page."""
    normalized = {n["from"]: n["to"] for n in query.get("normalized", ())}
    redirects = {r["from"]: r["to"] for r in query.get("redirects", ())}
    pages = {p["title"]: p for p in query.get("pages", ())}
    results: dict[str, Resolved] = {}
    for sent in titles:
        title = normalized.get(sent, sent)
        for _ in range(len(redirects)):  # chains are followed; the bound stops a loop
            if title not in redirects:
                break
            title = redirects[title]
        results[sent] = _parse_page(sent, pages.get(title))
    return results


def _parse_page(sent: str, page: dict[str, Any] | None) -> Resolved:
    if page is None:
        return ItemError("file_not_found", f"Commons returned nothing for {sent}")
    if page.get("invalid"):
        reason = page.get("invalidreason", "")
        return ItemError("invalid_title", f"{sent!r} is not a valid file name: {reason}")
    title = page["title"]
    # A page can exist without a file, and a file can exist without a local page (a
    # foreign repository): the file's imageinfo is what counts, not ``missing``.
    info = (page.get("imageinfo") or [{}])[0]
    if "url" not in info or info.get("filemissing"):
        return ItemError("file_not_found", f"there is no file {title} on Commons")
    width, height = info.get("width", 0), info.get("height", 0)
    return CommonsFile(
        title=title,
        url=info.get("thumburl") or info["url"],
        original_url=info["url"],
        mime=info.get("mime", ""),
        mediatype=info.get("mediatype", ""),
        size=info.get("size", 0),
        width=width,
        height=height,
        sha1=info.get("sha1", ""),
        thumb_width=info.get("thumbwidth", width),
        thumb_height=info.get("thumbheight", height),
    )


def _wider_width(file: CommonsFile) -> int | None:
    """The width to ask again for when ``file``'s thumbnail is shorter than `MIN_SIDE` but
    the original is larger than the thumbnail; None when the thumbnail is as good as it gets.

    The smallest cached width that gives `MIN_SIDE` on the shorter side, capped at the
    original width for bitmaps (MediaWiki never scales them up; SVGs render at any width).
    """
    if file.width <= 0 or file.height <= 0:
        return None
    if min(file.thumb_width, file.thumb_height) >= MIN_SIDE:
        return None
    needed = max(MIN_SIDE, math.ceil(MIN_SIDE * file.width / file.height))
    width = next((w for w in CACHED_WIDTHS if w >= needed), needed)
    if file.mime != "image/svg+xml":
        width = min(width, file.width)
    return width if width > file.thumb_width else None


def _raise_if_transient(response: httpx.Response) -> None:
    status = response.status_code
    if status == 429 or status >= 500:
        raise _Transient(
            _UPSTREAM_STATUS.get(status, 502),
            f"{response.url.host} answered HTTP {status}",
            _retry_after(response) if status in (429, 503) else None,
        )


def _retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds; the HTTP-date form is not worth parsing for a capped pause."""
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isdigit() else None


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """Scheme, host and port (None for the scheme's default), as httpx normalises them."""
    return url.scheme, url.host, url.port
