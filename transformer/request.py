"""Request body → validated instances (the Lift Wing v1 request shape, BRIEF §2).

Problems with the request as a whole raise ``InvalidInput`` (HTTP 400). Problems with one
instance become that instance's ``ItemError`` so the others are still scored.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial

import orjson
from kserve.errors import InvalidInput

from transformer.errors import ItemError


@dataclass(frozen=True)
class Instance:
    """One requested item: inline bytes, a Commons file name to look up, or an error."""

    filename: str | None
    target: str | None
    data: bytes | None = None
    error: ItemError | None = None


def parse_request(
    payload: dict | bytes, *, max_instances: int, max_bytes: int, media_key: str = "image"
) -> list[Instance]:
    body = _as_json(payload)
    if not isinstance(body, dict) or "instances" not in body:
        raise InvalidInput('the request must be a JSON object with an "instances" list')
    instances = body["instances"]
    if not isinstance(instances, list):
        raise InvalidInput(f'"instances" must be a list, not {type(instances).__name__}')
    if not instances:
        raise InvalidInput('"instances" is empty: send at least one instance')
    if len(instances) > max_instances:
        raise InvalidInput(
            f'too many instances: {len(instances)} > {max_instances} per request; split the batch'
        )
    return [_parse_instance(i, raw, max_bytes, media_key) for i, raw in enumerate(instances)]


async def parse_request_in(
    executor: Executor, payload: dict | bytes, **options: object
) -> list[Instance]:
    """``parse_request`` in ``executor``: base64-decoding a 64 MB body takes ~0.1 s, too long
    to hold the event loop."""
    return await asyncio.get_running_loop().run_in_executor(
        executor, partial(parse_request, payload, **options)
    )


def _as_json(payload: dict | bytes) -> object:
    # KServe hands over raw bytes when the Content-Type is not JSON (curl without -H).
    if not isinstance(payload, (bytes, bytearray)):
        return payload
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}") from None


def _parse_instance(index: int, raw: object, max_bytes: int, media_key: str) -> Instance:
    where = f"instances[{index}]"
    if not isinstance(raw, dict):
        return Instance(None, None, error=ItemError("invalid_instance", f"{where} must be an object"))
    filename, target, encoded = raw.get("filename"), raw.get("target"), raw.get(media_key)
    problem = None
    if filename is not None and not isinstance(filename, str):
        problem = f'{where}.filename must be a string'
        filename = None
    if target is not None and not isinstance(target, str):
        problem = problem or f"{where}.target must be a string"
        target = None
    if problem:
        return Instance(filename, target, error=ItemError("invalid_instance", problem))
    if encoded is None:
        if not filename:
            return Instance(
                filename,
                target,
                error=ItemError(
                    "invalid_instance", f'{where} needs "{media_key}" (base64) or "filename"'
                ),
            )
        return Instance(filename, target)
    if not isinstance(encoded, str):
        return Instance(
            filename,
            target,
            error=ItemError("invalid_base64", f"{where}.{media_key} must be a base64 string"),
        )
    data = _decode_base64(encoded, max_bytes)
    if isinstance(data, ItemError):
        return Instance(filename, target, error=ItemError(data.code, f"{where}.{media_key}: {data.message}"))
    return Instance(filename, target, data=data)


def _decode_base64(encoded: str, max_bytes: int) -> bytes | ItemError:
    if encoded.startswith("data:") and "," in encoded:
        encoded = encoded.split(",", 1)[1]
    compact = "".join(encoded.split())
    if len(compact) * 3 // 4 > max_bytes:
        return ItemError("image_too_large", f"{len(compact) * 3 // 4} bytes exceeds the {max_bytes}-byte limit")
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        return ItemError("invalid_base64", f"not valid base64 ({exc})")
    if not data:
        return ItemError("empty_image", "the base64 string decodes to 0 bytes")
    return data
