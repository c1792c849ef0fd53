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
* MediaWiki may split one answer into batches; the ``continue`` object of each is sent back
  until the answer is complete, and the batches are merged (a bounded number of rounds);
* as Wikimedia's API etiquette asks, every API call sends ``maxlag`` and a lagged-replica
  answer, like a 429 or 503, is retried after the server's ``Retry-After``, else after a
  jittered exponential backoff;
* an outage (unreachable, 5xx, 429, maxlag, timeout, bad JSON, API error) raises
  `CommonsUnavailable` after bounded retries, carrying the status our own API should answer;
  a problem with one file is an `ItemError` value, so the other files are still scored;
* a caller's ``deadline`` (event-loop time) bounds a whole call, retries included: no
  attempt outlives it and no pause is taken that would end after it (`DeadlineExceeded`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import random
import re
import unicodedata
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from functools import partial
from http import HTTPStatus
from typing import Any, TypeVar
from urllib.parse import unquote

import httpx

from transformer import request_log
from transformer.errors import ItemError
from transformer.metrics import (
    COMMONS_DOWNLOAD_BYTES,
    COMMONS_RETRIES,
    COMMONS_RETRY_WAIT,
    COMMONS_SECONDS,
)

log = logging.getLogger(__name__)

MAX_TITLES_PER_QUERY = 50
# Continuation rounds of one query; a server that keeps asking for more is misbehaving.
MAX_CONTINUATIONS = 20
# The models need at least this many pixels on the shorter side.
MIN_SIDE = 224
# Widths the Wikimedia thumbnail servers pre-render and cache; asking for one of these is a
# cache hit instead of a fresh render.
CACHED_WIDTHS: tuple[int, ...] = (120, 250, 330, 500, 960, 1280, 1920)
FIRST_WIDTH = 330
MAX_TITLE_BYTES = 255
# A thumbnail's headers and metadata beyond its pixels; also the least a download is counted as.
_THUMB_SLACK_BYTES = 64 * 1024
# An imageinfo answer for 50 titles is tens of kilobytes; a larger one is not Commons'.
MAX_API_ANSWER_BYTES = 4 * 2**20
# A name any longer cannot be a title of MAX_TITLE_BYTES once normalised: NFC composes at most
# four code points into one, and the namespace prefix and padding get 64. Checked first, so a
# hostile name is never normalised or scanned on the event loop (or sent to the API) whole.
MAX_NAME_CHARS = 4 * MAX_TITLE_BYTES + 64
IIPROP = "url|sha1|mime|size|mediatype"

_NAMESPACE = re.compile(r"^[ _]*(?:file|image)[ _]*:", re.IGNORECASE)
_FORBIDDEN = re.compile(r"[|#<>\[\]{}\x00-\x1f\x7f]")
# The status our API answers for an upstream status; everything else is a 502.
_UPSTREAM_STATUS = {429: 503, 503: 503, 504: 504}
# Enough of a body to see past leading whitespace to an HTML start tag.
_SNIFF_BYTES = 512
_HTML_STARTS = (b"<!doctype", b"<html")

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
    504 for timeouts, 503 when Commons is overloaded (429/503/maxlag), 502 otherwise."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class DeadlineExceeded(CommonsUnavailable):
    """The caller's deadline passed, or the next retry could not have finished before it."""

    def __init__(self, message: str) -> None:
        super().__init__(HTTPStatus.GATEWAY_TIMEOUT, message)


class _Transient(CommonsUnavailable):
    """A failure worth retrying; ``retry_after`` is the pause the server asked for."""

    def __init__(
        self, status: int, message: str, retry_after: float | None = None, *, maxlag: bool = False
    ) -> None:
        super().__init__(status, message)
        self.retry_after = retry_after
        self.maxlag = maxlag


class CommonsClient:
    """Resolves Commons file names and downloads their thumbnails over one pooled
    `httpx.AsyncClient`. Use as ``async with`` or call `aclose`.

    ``api_host_header`` is sent as ``Host`` on API calls only: an internal API endpoint
    (e.g. ``http://api-ro.discovery.wmnet/w/api.php``) serves the wiki that header names.
    ``maxlag`` of 0 sends none.
    """

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
        maxlag: int = 5,
        api_host_header: str = "",
    ) -> None:
        self._api_url = httpx.URL(api_url)
        # Upload hosts are bare host[:port] names, reached over HTTPS or the API's scheme
        # (an internal API is plain HTTP, yet its file URLs stay HTTPS).
        self._allowed_origins = {_origin(self._api_url)} | {
            _origin(httpx.URL(f"{scheme}://{host}"))
            for host in upload_hosts
            for scheme in {self._api_url.scheme, "https"}
        }
        self._api_timeout = api_timeout
        self._fetch_timeout = fetch_timeout
        self._max_fetch_bytes = max_fetch_bytes
        self._retries = retries
        self._backoff = backoff
        self._max_retry_after = max_retry_after
        self._maxlag = maxlag
        # The header tells Wikimedia's routing that these POSTs are reads, so any data
        # centre may serve them.
        self._api_headers = {"Promise-Non-Write-API-Action": "true"}
        if api_host_header:
            self._api_headers["Host"] = api_host_header
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

    async def resolve(
        self, names: Sequence[str], *, deadline: float | None = None
    ) -> list[Resolved]:
        """Look ``names`` up on Commons: one `CommonsFile` or `ItemError` per name, in order.

        Names may carry a ``File:``/``Image:`` prefix and use spaces or underscores.
        Raises `CommonsUnavailable` when Commons cannot answer, which fails every name alike,
        and `DeadlineExceeded` when the answer cannot come before ``deadline`` (a
        ``loop.time()`` value covering every lookup and retry).
        """
        titles = [_to_title(name) for name in names]
        wanted = list(dict.fromkeys(t for t in titles if isinstance(t, str)))
        found = await self._lookup(wanted, FIRST_WIDTH, deadline)
        await self._widen(found, deadline)
        return [title if isinstance(title, ItemError) else found[title] for title in titles]

    def fetch_bound(self, file: CommonsFile, *, original: bool = False) -> int:
        """The bytes fetching ``file`` may bring, known before it starts, within
        ``max_fetch_bytes``: the file's size when the original is served; for a GIF's
        thumbnail too (it keeps every frame); else the thumbnail's pixels as uncompressed
        RGBA, which a JPEG or PNG thumbnail never reaches."""
        if original or file.url == file.original_url or file.mime == "image/gif":
            bound = file.size
        else:
            bound = file.thumb_width * file.thumb_height * 4 + _THUMB_SLACK_BYTES
        return min(max(bound, _THUMB_SLACK_BYTES), self._max_fetch_bytes)

    async def fetch(
        self, file: CommonsFile, *, original: bool = False, deadline: float | None = None
    ) -> bytes | ItemError:
        """Download ``file.url`` (or the original), streaming, up to ``max_fetch_bytes``.

        Only the API host and the upload hosts are ever contacted. Raises
        `CommonsUnavailable` for outages (after retries) and `DeadlineExceeded` past
        ``deadline``; a refused URL, a 4xx or 3xx, a body that is a web page rather than
        media, or a file over the limit is an `ItemError`.
        """
        try:
            url = self._api_url.join(file.original_url if original else file.url)
        except httpx.InvalidURL as exc:
            return ItemError(
                "url_not_allowed",
                f"{file.title} points to a URL that is not valid ({exc}); not fetched",
                HTTPStatus.BAD_GATEWAY,
            )
        if _origin(url) not in self._allowed_origins:
            return ItemError(
                "url_not_allowed",
                f"{file.title} points to {url.scheme}://{url.netloc.decode()}, "
                "which is not a Commons upload host; not fetched",
                HTTPStatus.BAD_GATEWAY,
            )
        return await self._retrying(
            "download", partial(self._fetch_once, url, file.title), self._fetch_timeout, deadline
        )

    async def _widen(self, found: dict[str, Resolved], deadline: float | None) -> None:
        """Replace thumbnails shorter than `MIN_SIDE` by wider ones, one call per width."""
        by_width: dict[int, dict[str, None]] = {}
        for file in found.values():
            if isinstance(file, CommonsFile) and (width := _wider_width(file)):
                by_width.setdefault(width, {})[file.title] = None
        for width, titles in sorted(by_width.items()):
            wider = await self._lookup(list(titles), width, deadline)
            for key, file in found.items():
                better = wider.get(file.title) if isinstance(file, CommonsFile) else None
                if isinstance(better, CommonsFile):
                    found[key] = better

    async def _lookup(
        self, titles: Sequence[str], width: int, deadline: float | None
    ) -> dict[str, Resolved]:
        """Resolve ``titles`` in chunks of 50, one chunk after the other as Wikimedia's API
        etiquette asks, keyed by the title as sent."""
        results: dict[str, Resolved] = {}
        for start in range(0, len(titles), MAX_TITLES_PER_QUERY):
            chunk = titles[start : start + MAX_TITLES_PER_QUERY]
            batches = await self._query(chunk, width, deadline)
            try:
                results.update(_match(chunk, batches))
            except (KeyError, TypeError, AttributeError, IndexError) as exc:
                raise CommonsUnavailable(
                    502, f"the Commons API answered in an unexpected format ({exc!r})"
                ) from exc
        return results

    async def _query(
        self, titles: Sequence[str], width: int, deadline: float | None
    ) -> list[dict[str, Any]]:
        """One imageinfo query, following ``continue``; the ``query`` object of each batch."""
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
        if self._maxlag > 0:
            params["maxlag"] = str(self._maxlag)
        batches: list[dict[str, Any]] = []
        continuation: Mapping[str, Any] = {}
        for _ in range(MAX_CONTINUATIONS + 1):
            request = params | {key: str(value) for key, value in continuation.items()}
            body = await self._retrying(
                "api", partial(self._api_call, request), self._api_timeout, deadline
            )
            batches.append(body["query"])
            continuation = body.get("continue") or {}
            if not isinstance(continuation, Mapping):
                raise CommonsUnavailable(502, "the Commons API answered a malformed 'continue'")
            if not continuation:
                return batches
        raise CommonsUnavailable(
            502, f"the Commons API still asked to continue after {MAX_CONTINUATIONS} rounds"
        )

    async def _api_call(self, params: dict[str, str]) -> dict[str, Any]:
        """One POST (which keeps 50 long titles out of the URL); the answer's JSON body."""
        async with self._http.stream(
            "POST",
            self._api_url,
            data=params,
            headers={**self._api_headers, **_traced()},
            timeout=self._api_timeout,
        ) as response:
            _raise_if_transient(response)
            if response.status_code != 200:
                raise CommonsUnavailable(502, f"the Commons API answered HTTP {response.status_code}")
            raw = await _read_api_answer(response)
        try:
            # On the event loop: at most MAX_API_ANSWER_BYTES, tens of milliseconds at worst.
            body = json.loads(raw)
        except ValueError:
            raise CommonsUnavailable(502, "the Commons API answered with invalid JSON") from None
        if not isinstance(body, dict):
            raise CommonsUnavailable(502, "the Commons API answered with unexpected JSON")
        if "error" in body:
            error = body["error"] if isinstance(body["error"], dict) else {}
            if error.get("code") == "maxlag":
                raise _Transient(
                    503,
                    f"Commons database replicas lag {error.get('lag')} s behind "
                    f"(maxlag={self._maxlag}): {error.get('info')}",
                    retry_after(response),
                    maxlag=True,
                )
            raise CommonsUnavailable(
                502, f"the Commons API refused the query: {error.get('code')}: {error.get('info')}"
            )
        if not isinstance(body.get("query"), dict):
            raise CommonsUnavailable(502, "the Commons API answered without a query result")
        return body

    async def _fetch_once(self, url: httpx.URL, title: str) -> bytes | ItemError:
        async with self._http.stream(
            "GET", url, headers=_traced(), timeout=self._fetch_timeout
        ) as response:
            _raise_if_transient(response)
            if response.status_code != 200:
                # Commons listed the file, then would not serve it: not the client's fault.
                return ItemError(
                    "fetch_failed",
                    f"downloading {title} failed: {url} answered HTTP {response.status_code}",
                    HTTPStatus.BAD_GATEWAY,
                )
            content_type = response.headers.get("content-type", "")
            if _is_document_type(content_type):
                return _not_media(title, url, content_type)
            too_large = ItemError(
                "file_too_large", f"{title} is larger than {self._max_fetch_bytes} bytes"
            )
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self._max_fetch_bytes:
                return too_large
            data = bytearray()
            sniffed = False
            async for chunk in response.aiter_bytes():
                data += chunk
                if not sniffed and len(data) >= _SNIFF_BYTES:
                    sniffed = True
                    if _looks_like_html(data):
                        return _not_media(title, url, content_type)
                if len(data) > self._max_fetch_bytes:
                    return too_large
            if not sniffed and _looks_like_html(data):
                return _not_media(title, url, content_type)
            COMMONS_DOWNLOAD_BYTES.observe(len(data))
            return bytes(data)

    async def _retrying(
        self,
        call: str,
        attempt: Callable[[], Awaitable[T]],
        timeout: float,
        deadline: float | None,
    ) -> T:
        """Run ``attempt``, each try under ``timeout`` and all of them before ``deadline``,
        retrying transient failures after a pause (see `_pause`). ``call`` ("api" or
        "download") labels the attempts' metrics."""
        loop = asyncio.get_running_loop()
        error: _Transient
        for n in range(self._retries + 1):
            if n:
                COMMONS_RETRIES.labels(call=call, outcome=_outcome(error)).inc()
                await self._pause(error, n - 1, _time_left(loop, deadline))
            left = _time_left(loop, deadline)
            if left <= 0:
                raise DeadlineExceeded(
                    f"the deadline passed before Commons answered ({error.message})"
                    if n
                    else "the deadline had passed before Commons was asked"
                )
            started, outcome = loop.time(), "failed"
            try:
                async with asyncio.timeout(min(timeout, left)):
                    result = await attempt()
                outcome = "refused" if isinstance(result, ItemError) else "ok"
                return result
            except (httpx.TimeoutException, TimeoutError):
                outcome = "timeout"
                if left < timeout:
                    raise DeadlineExceeded(
                        f"Commons did not answer within the {left:.2f} s left before the deadline"
                    ) from None
                error = _Transient(504, f"Commons did not answer within {timeout:g} s")
            except (httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                outcome = "network"
                error = _Transient(502, f"cannot reach Commons: {exc!r}")
            except _Transient as exc:
                error = exc
                outcome = _outcome(exc)
            except httpx.HTTPError as exc:  # e.g. a body that fails to decode: not transient
                raise CommonsUnavailable(502, f"bad answer from Commons: {exc!r}") from exc
            finally:
                elapsed = loop.time() - started
                COMMONS_SECONDS.labels(call=call, outcome=outcome).observe(elapsed)
                request_log.add_stage(f"commons_{call}", elapsed)
        raise CommonsUnavailable(error.status, error.message)

    async def _pause(self, error: _Transient, n: int, left: float) -> None:
        """Wait before retry ``n + 1``: the server's Retry-After (capped by
        ``max_retry_after``), else full-jitter exponential backoff, so that clients that
        failed together do not retry together. A pause that would outlast the ``left``
        seconds of the deadline is not taken: the call fails at once."""
        if error.retry_after is not None:
            if error.retry_after >= left:
                raise CommonsUnavailable(
                    HTTPStatus.SERVICE_UNAVAILABLE,
                    f"{error.message}; Commons asked to retry after {error.retry_after:g} s, "
                    f"more than the {left:.2f} s left before the deadline",
                )
            pause = min(error.retry_after, self._max_retry_after)
        else:
            pause = random.uniform(0, self._backoff * 2**n)
            if pause >= left:
                raise DeadlineExceeded(
                    f"{error.message}; the deadline leaves {left:.2f} s, "
                    f"less than the {pause:.2f} s pause before a retry"
                )
        log.warning("Commons request failed (%s); retry %d in %.2f s", error, n + 1, pause)
        reason = "retry_after" if error.retry_after is not None else "backoff"
        COMMONS_RETRY_WAIT.labels(reason=reason).inc(pause)
        await asyncio.sleep(pause)


def _traced() -> dict[str, str]:
    """The request id, so that Commons' logs can be matched with ours."""
    request_id = request_log.request_id()
    return {request_log.REQUEST_ID_HEADER: request_id} if request_id else {}


def _outcome(error: _Transient) -> str:
    """A transient failure's metric label: ``http_<status>``, or ``maxlag``."""
    return "maxlag" if error.maxlag else f"http_{error.status}"


def _to_title(name: str) -> str | ItemError:
    """The ``titles`` value for a user-supplied file name, or why it can never be one.

    Normalisation (underscores, capitalisation, ``Image:``) is left to MediaWiki, which
    reports it in ``query.normalized``; here we only catch what would break the request.
    """
    name = name.strip()
    if len(name) > MAX_NAME_CHARS:
        return _too_long(name)
    # MediaWiki stores titles in NFC; sending NFC saves a normalisation hop we would
    # otherwise have to follow (names typed on macOS often arrive decomposed).
    name = unicodedata.normalize("NFC", name)
    prefix = _NAMESPACE.match(name)
    bare = name[prefix.end() if prefix else 0 :].strip(" _")
    if not bare:
        return ItemError("invalid_title", f"{_shown(name)} is not a valid file name: it is empty")
    if bad := _FORBIDDEN.search(bare):
        return ItemError(
            "invalid_title",
            f"{_shown(name)} is not a valid file name: it contains {bad.group()!r}",
        )
    if len(bare.encode()) > MAX_TITLE_BYTES:
        return _too_long(name)
    return name if prefix else f"File:{name}"


def _too_long(name: str) -> ItemError:
    return ItemError(
        "invalid_title",
        f"{_shown(name)} is not a valid file name: longer than {MAX_TITLE_BYTES} bytes",
    )


def _shown(name: str) -> str:
    """A client's name as error messages quote it: at most 40 characters of it."""
    return repr(name if len(name) <= 40 else name[:40] + "…")


def _match(titles: Sequence[str], batches: Sequence[dict[str, Any]]) -> dict[str, Resolved]:
    """Follow each title as sent through ``normalized`` and then ``redirects`` to its page,
    across all batches of one answer."""
    normalized = {_sent_form(n): n["to"] for query in batches for n in query.get("normalized", ())}
    redirects = {r["from"]: r["to"] for query in batches for r in query.get("redirects", ())}
    pages: dict[str, dict[str, Any]] = {}
    for query in batches:
        for page in query.get("pages", ()):
            pages[page["title"]] = _merge_page(pages.get(page["title"]), page)
    return {
        sent: _parse_page(sent, pages.get(_follow(_follow(sent, normalized), redirects)))
        for sent in titles
    }


def _sent_form(entry: dict[str, Any]) -> str:
    """A ``normalized`` entry's ``from`` as it was sent: MediaWiki percent-encodes it when it
    was not valid NFC (``fromencoded``)."""
    return unquote(entry["from"]) if entry.get("fromencoded") else entry["from"]


def _follow(title: str, hops: dict[str, str]) -> str:
    """Follow a chain of ``hops`` (one Unicode fix, then one spelling fix; redirects to
    redirects); the bound stops a loop."""
    for _ in range(len(hops)):
        if title not in hops:
            break
        title = hops[title]
    return title


def _merge_page(seen: dict[str, Any] | None, page: dict[str, Any]) -> dict[str, Any]:
    """One page as several batches describe it: each batch may carry its imageinfo or not."""
    if seen is None:
        return page
    return seen | page | {"imageinfo": seen.get("imageinfo", []) + page.get("imageinfo", [])}


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
    _check_types(title, info)
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


# The imageinfo fields we use and their JSON types. Anything else is a malformed answer
# (a TypeError, which the lookup turns into a 502 for the chunk), never a crash later on.
_INFO_TYPES: dict[str, type] = {
    "url": str, "thumburl": str, "mime": str, "mediatype": str, "sha1": str,
    "size": int, "width": int, "height": int, "thumbwidth": int, "thumbheight": int,
}


def _check_types(title: Any, info: dict[str, Any]) -> None:
    if not isinstance(title, str):
        raise TypeError(f"a page title is {type(title).__name__}, not str")
    for key, kind in _INFO_TYPES.items():
        # A field may be absent (a file without a thumbnail); present, it has its type (not null).
        value = info.get(key, kind())
        if not isinstance(value, kind) or isinstance(value, bool):
            raise TypeError(f"{title}'s {key} is {type(value).__name__}, not {kind.__name__}")


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


async def _read_api_answer(response: httpx.Response) -> bytes:
    """The body of an API answer, refused (502) past `MAX_API_ANSWER_BYTES` before more is read."""
    too_large = CommonsUnavailable(
        502, f"the Commons API answered more than {MAX_API_ANSWER_BYTES} bytes"
    )
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_API_ANSWER_BYTES:
        raise too_large
    data = bytearray()
    async for chunk in response.aiter_bytes():
        data += chunk
        if len(data) > MAX_API_ANSWER_BYTES:
            raise too_large
    return bytes(data)


def _raise_if_transient(response: httpx.Response) -> None:
    status = response.status_code
    if status == 429 or status >= 500:
        raise _Transient(
            _UPSTREAM_STATUS.get(status, 502),
            f"{response.url.host} answered HTTP {status}",
            retry_after(response) if status in (429, 503) else None,
        )


def retry_after(response: httpx.Response) -> float | None:
    """Retry-After in seconds, from delta-seconds or an HTTP-date; None when absent or
    unreadable."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _time_left(loop: asyncio.AbstractEventLoop, deadline: float | None) -> float:
    return math.inf if deadline is None else deadline - loop.time()


def _is_document_type(content_type: str) -> bool:
    """Whether a Content-Type names a document (an error page, an API answer), not media."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type.startswith("text/") or media_type == "application/json"


def _looks_like_html(data: bytes | bytearray) -> bool:
    return bytes(data[:_SNIFF_BYTES]).lstrip().lower().startswith(_HTML_STARTS)


def _not_media(title: str, url: httpx.URL, content_type: str) -> ItemError:
    """An upload host that serves a web page instead of the file failed us, not the client."""
    return ItemError(
        "fetch_failed",
        f"downloading {title} failed: {url.host} answered a web page "
        f"(Content-Type {content_type or 'unset'}) instead of the file",
        HTTPStatus.BAD_GATEWAY,
    )


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """Scheme, host and port (None for the scheme's default), as httpx normalises them."""
    return url.scheme, url.host, url.port
