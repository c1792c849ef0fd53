"""Instances → image bytes: inline base64 as sent, or looked up and fetched from Commons."""

from __future__ import annotations

import asyncio

from transformer.commons import CommonsClient, CommonsFile, CommonsUnavailable
from transformer.config import Settings
from transformer.errors import ItemError
from transformer.request import Instance

# Commons media types whose thumbnails are still images the models can score.
IMAGE_MEDIATYPES = frozenset({"BITMAP", "DRAWING"})


def commons_client(settings: Settings) -> CommonsClient:
    return CommonsClient(
        settings.commons_api_url,
        user_agent=settings.commons_user_agent,
        upload_hosts=settings.commons_upload_hosts,
        api_timeout=settings.commons_api_timeout_s,
        fetch_timeout=settings.commons_fetch_timeout_s,
        max_fetch_bytes=settings.max_image_bytes,
        retries=settings.commons_retries,
    )


async def fetch_all(instances: list[Instance], commons: CommonsClient) -> list[bytes | ItemError]:
    """One entry per instance, in order. A Commons outage fails only the looked-up items."""
    results: list[bytes | ItemError | None] = [
        inst.error if inst.error is not None else inst.data for inst in instances
    ]
    lookups = [i for i, inst in enumerate(instances) if results[i] is None]
    if not lookups:
        return results
    try:
        resolved = await commons.resolve([instances[i].filename for i in lookups])
    except CommonsUnavailable as exc:
        error = _outage(exc)
        for i in lookups:
            results[i] = error
        return results
    downloads = await asyncio.gather(*(_download(commons, r) for r in resolved))
    for i, data in zip(lookups, downloads):
        results[i] = data
    return results


async def _download(commons: CommonsClient, resolved: CommonsFile | ItemError) -> bytes | ItemError:
    if isinstance(resolved, ItemError):
        return resolved
    if resolved.mediatype not in IMAGE_MEDIATYPES:
        return ItemError(
            "not_an_image",
            f"{resolved.title} is {resolved.mediatype} ({resolved.mime}), not an image",
        )
    try:
        return await commons.fetch(resolved)
    except CommonsUnavailable as exc:
        return _outage(exc)


def _outage(exc: CommonsUnavailable) -> ItemError:
    return ItemError("commons_unavailable", f"Commons failed: {exc.message}", exc.status)
