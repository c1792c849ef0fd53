"""Instances → media bytes: inline base64 as sent, or looked up and fetched from Commons."""

from __future__ import annotations

from dataclasses import dataclass

from transformer.commons import CommonsClient, CommonsFile, CommonsUnavailable, DeadlineExceeded
from transformer.config import Settings
from transformer.errors import ItemError
from transformer.request import Instance


@dataclass(frozen=True)
class Wanted:
    """Which Commons files a model can score, and which rendition of them it downloads."""

    mediatypes: frozenset[str]
    # Accepted whatever their mediatype: Commons files animated GIF/PNG/WebP as BITMAP.
    mimes: frozenset[str] = frozenset()
    # The original file rather than the thumbnail (a video's thumbnail is a still).
    original: bool = False
    noun: str = "an image"
    refusal: str = "not_an_image"

    def accepts(self, file: CommonsFile) -> bool:
        return file.mediatype in self.mediatypes or file.mime in self.mimes


# Commons media types whose thumbnails are still images the models can score.
IMAGES = Wanted(frozenset({"BITMAP", "DRAWING"}))
VIDEOS = Wanted(
    frozenset({"VIDEO"}),
    frozenset({"image/gif", "image/png", "image/apng", "image/webp"}),
    original=True,
    noun="a video or an animated image",
    refusal="not_a_video",
)

Source = bytes | CommonsFile | ItemError


def commons_client(
    settings: Settings, *, max_fetch_bytes: int | None = None, fetch_timeout_s: float | None = None
) -> CommonsClient:
    """The Commons client; the download limits default to the image ones."""
    return CommonsClient(
        settings.commons_api_url,
        user_agent=settings.commons_user_agent,
        upload_hosts=settings.commons_upload_hosts,
        api_timeout=settings.commons_api_timeout_s,
        fetch_timeout=fetch_timeout_s or settings.commons_fetch_timeout_s,
        max_fetch_bytes=max_fetch_bytes or settings.max_image_bytes,
        retries=settings.commons_retries,
        max_retry_after=settings.commons_max_retry_after_s,
        maxlag=settings.commons_maxlag,
        api_host_header=settings.commons_api_host_header,
    )


async def resolve_all(
    instances: list[Instance], commons: CommonsClient, *, deadline: float | None = None
) -> list[Source]:
    """Inline bytes, the Commons file to download, or the error; one per instance, in order.

    All names are looked up together (one API call per 50), nothing is downloaded yet.
    """
    lookups = {
        i: inst.filename
        for i, inst in enumerate(instances)
        if inst.filename and inst.error is None and inst.data is None
    }
    files: list[Source] = []
    if lookups:
        try:
            files = list(await commons.resolve(list(lookups.values()), deadline=deadline))
        except CommonsUnavailable as exc:
            files = [_outage(exc)] * len(lookups)
    found = dict(zip(lookups, files, strict=True))
    return [found[i] if i in found else _given(inst) for i, inst in enumerate(instances)]


def _given(instance: Instance) -> Source:
    """What an instance that needs no lookup brought: its error, else its bytes."""
    return instance.error if instance.error is not None else instance.data or b""


async def download(
    commons: CommonsClient, source: Source, wanted: Wanted, *, deadline: float | None = None
) -> bytes | ItemError:
    """The bytes of one resolved source: inline bytes and errors as they are."""
    if not isinstance(source, CommonsFile):
        return source
    if not wanted.accepts(source):
        return ItemError(
            wanted.refusal,
            f"{source.title} is {source.mediatype} ({source.mime}), not {wanted.noun}",
        )
    try:
        return await commons.fetch(source, original=wanted.original, deadline=deadline)
    except CommonsUnavailable as exc:
        return _outage(exc)


def _outage(exc: CommonsUnavailable) -> ItemError:
    if isinstance(exc, DeadlineExceeded):
        return ItemError(
            "deadline_exceeded",
            f"the request's deadline passed while waiting for Commons: {exc.message}",
            exc.status,
        )
    return ItemError("commons_unavailable", f"Commons failed: {exc.message}", exc.status)
