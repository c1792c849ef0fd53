"""Where a backfill's titles come from: a file of titles, a category tree, or the uploads of
a time range, each as an async generator of pages.

Every page comes with the cursor after it (a JSON-able dict) and whether it was the last,
so the caller can save the titles and the cursor in one transaction; started again from a
saved cursor, a generator yields what follows it. Commons is asked the way its API
etiquette asks: one request at a time, ``maxlag`` on every call, a lagged or overloaded
answer retried after its Retry-After.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import unicodedata
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from bulk.retry import pause, retry_after

log = logging.getLogger(__name__)

Cursor = dict[str, Any]
Page = tuple[list[str], Cursor, bool]

# The most a list module returns to an ordinary client per request.
PAGE_SIZE = 500
# MediaWiki's limit on a title, without its namespace.
MAX_TITLE_BYTES = 255

_FILE_PREFIX = re.compile(r"(?i)(?:file|image) ?: ?")
_CATEGORY_PREFIX = re.compile(r"(?i)category ?: ?")


class EnumerationFailed(Exception):
    """Commons could not list the titles: unreachable after retries, or a refused query."""


class MediaWikiApi:
    """``action=query`` calls on a MediaWiki API, retried on 429/5xx, lagged replicas and
    connection errors. Use as ``async with`` or call `aclose`."""

    def __init__(
        self,
        api_url: str,
        *,
        user_agent: str,
        maxlag: int = 5,
        retries: int = 6,
        timeout_s: float = 30.0,
        backoff_s: float = 1.0,
        max_pause_s: float = 60.0,
    ) -> None:
        self._api_url = api_url
        self._maxlag = maxlag
        self._retries = retries
        self._backoff_s = backoff_s
        self._max_pause_s = max_pause_s
        self._http = httpx.AsyncClient(headers={"User-Agent": user_agent}, timeout=timeout_s)

    async def __aenter__(self) -> MediaWikiApi:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def query(self, params: dict[str, Any]) -> dict[str, Any]:
        """The JSON answer (formatversion 2) to one query with ``params``."""
        params = {
            "action": "query",
            "format": "json",
            "formatversion": "2",
            **({"maxlag": self._maxlag} if self._maxlag else {}),
            **params,
        }
        failure, asked = "", None  # of the last failed attempt
        for attempt in range(self._retries + 1):
            if attempt:
                wait = pause(attempt - 1, asked, backoff_s=self._backoff_s, max_s=self._max_pause_s)
                log.warning("Commons API: %s; retry %d in %.1f s", failure, attempt, wait)
                await asyncio.sleep(wait)
            try:
                response = await self._http.get(self._api_url, params=params)
            except httpx.TransportError as exc:
                failure, asked = f"{type(exc).__name__}: {exc}", None
                continue
            if response.status_code == 429 or response.status_code >= 500:
                failure, asked = f"HTTP {response.status_code}", retry_after(response)
                continue
            body = _json(response)
            error = body.get("error")
            if isinstance(error, dict) and error.get("code") == "maxlag":
                failure, asked = f"replicas lag: {error.get('info')}", retry_after(response)
                continue
            if error is not None:
                raise EnumerationFailed(f"the Commons API refused {params}: {error}")
            return body
        raise EnumerationFailed(
            f"the Commons API failed {self._retries + 1} times; last: {failure}"
        )


def canonical_title(raw: str) -> str | None:
    """``raw`` as a File title (NFC, prefix added or unified, underscores as spaces, the first
    letter upper-cased, as MediaWiki stores it), so one file is one title in the job; None
    for text that cannot be a file name."""
    text = re.sub(r"[ _]+", " ", unicodedata.normalize("NFC", raw)).strip()
    prefix = _FILE_PREFIX.match(text)
    name = text[prefix.end() if prefix else 0 :].strip()
    if not name or len(name.encode()) > MAX_TITLE_BYTES:
        return None
    return f"File:{name[0].upper()}{name[1:]}"


def category_title(name: str) -> str:
    """``name`` as a Category title, ``Category:`` added when missing."""
    text = re.sub(r"[ _]+", " ", name).strip()
    prefix = _CATEGORY_PREFIX.match(text)
    rest = text[prefix.end() if prefix else 0 :]
    return f"Category:{rest[:1].upper()}{rest[1:]}"


async def from_file(
    path: Path, cursor: Cursor | None, *, page_size: int = PAGE_SIZE
) -> AsyncIterator[Page]:
    """Titles from ``path``, one a line (``File:`` optional; blank lines and ``#`` comments
    skipped). The cursor is the byte offset of the first line not yet handed on."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        handle.seek((cursor or {}).get("offset", 0))
        page: list[str] = []
        done = False
        while not done and (line := handle.readline()):
            text = line.decode("utf-8", "replace").strip()
            if not text or text.startswith("#"):
                continue
            if (title := canonical_title(text)) is None:
                log.warning("skipped %r: not a file name", text[:80])
                continue
            page.append(title)
            if len(page) == page_size:
                done = handle.tell() >= size
                yield page, {"offset": handle.tell()}, done
                page = []
        if not done:
            yield page, {"offset": handle.tell()}, True


async def from_category(
    api: MediaWikiApi,
    category: str,
    depth: int,
    cursor: Cursor | None,
    *,
    page_size: int = PAGE_SIZE,
) -> AsyncIterator[Page]:
    """The files in ``category`` and, ``depth`` levels down, in its subcategories, walked
    breadth-first, each category once. The cursor holds the walk: the categories still to
    list with the depth left below each (the first is being listed, from its
    ``continue``), and those already queued."""
    start = category_title(category)
    state = cursor or {"queue": [[start, depth]], "seen": [start], "continue": {}}
    queue: list[list[Any]] = [list(entry) for entry in state["queue"]]
    seen = set(state["seen"])
    resume: dict[str, Any] = dict(state["continue"])
    while queue:
        title, left = queue[0]
        body = await api.query(
            {
                "list": "categorymembers",
                "cmtitle": title,
                "cmtype": "file|subcat" if left > 0 else "file",
                "cmprop": "ids|title",
                "cmlimit": page_size,
                **resume,
            }
        )
        members = body.get("query", {}).get("categorymembers", [])
        files = [member["title"] for member in members if member.get("ns") == 6]
        for member in members:
            if member.get("ns") == 14 and left > 0 and member["title"] not in seen:
                seen.add(member["title"])
                queue.append([member["title"], left - 1])
        resume = dict(body.get("continue") or {})
        if not resume:
            queue.pop(0)
        after = {"queue": [list(e) for e in queue], "seen": sorted(seen), "continue": resume}
        yield files, after, not queue


async def from_uploads(
    api: MediaWikiApi,
    start: str,
    end: str,
    cursor: Cursor | None,
    *,
    page_size: int = PAGE_SIZE,
) -> AsyncIterator[Page]:
    """The files uploaded from ``start`` to ``end`` (ISO 8601, both inclusive), oldest
    first. The cursor is the API's ``continue``."""
    resume: dict[str, Any] = dict((cursor or {}).get("continue") or {})
    while True:
        body = await api.query(
            {
                "list": "allimages",
                "aisort": "timestamp",
                "aidir": "newer",
                "aistart": start,
                "aiend": end,
                "aiprop": "timestamp",
                "ailimit": page_size,
                **resume,
            }
        )
        images = body.get("query", {}).get("allimages", [])
        titles = [
            image.get("title") or f"File:{image['name']}".replace("_", " ") for image in images
        ]
        resume = dict(body.get("continue") or {})
        yield titles, {"continue": resume}, not resume
        if not resume:
            return


def _json(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise EnumerationFailed(f"the Commons API answered HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        raise EnumerationFailed("the Commons API answered with invalid JSON") from None
    if not isinstance(body, dict):
        raise EnumerationFailed("the Commons API answered with unexpected JSON")
    return body
