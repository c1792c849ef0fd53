"""Request body → validated instances (the Lift Wing v1 request shape).

Problems with the request as a whole raise `BadRequest` (HTTP 400). Problems with one
instance become that instance's ``ItemError`` so the others are still scored. A request may
ask for its stage timings in the answer with ``"debug": true``.

Parsing runs in a worker thread, but orjson and base64 hold the GIL while they work, so
a thread alone does not keep the event loop free: a 60 MB body of ``[{},{},…]`` takes
orjson seconds. What bounds the time is the shape check before parsing: a valid request
has a few JSON tokens per instance (the media are long strings, which parse at memory
speed), so a body with more structural characters than any valid request could hold is
refused after one ``bytes.count`` pass per character.
"""

from __future__ import annotations

import asyncio
import binascii
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial

import orjson

from transformer.errors import BadRequest, ItemError

# Per instance: its keys, values and separators, and a title's worth of commas or colons
# (a file name may be made of them); plus the envelope and request-wide options.
_TOKENS_PER_INSTANCE = 300
_TOKENS_PER_REQUEST = 1000
_STRUCTURAL = (b"{", b"[", b",", b":")
_WHITESPACE = b" \t\n\r\v\f"


@dataclass(frozen=True)
class Instance:
    """One requested item: inline bytes, a Commons file name to look up, or an error."""

    filename: str | None
    target: str | None
    data: bytes | None = None
    error: ItemError | None = None


@dataclass(frozen=True)
class ParsedRequest:
    instances: list[Instance]
    debug: bool = False


def parse_request(
    payload: dict | bytes, *, max_instances: int, max_bytes: int, media_key: str = "image"
) -> ParsedRequest:
    body = parse_body(payload, max_instances=max_instances)
    instances = [
        _parse_instance(i, raw, max_bytes, media_key) for i, raw in enumerate(body["instances"])
    ]
    return ParsedRequest(instances, debug=body.get("debug", False))


def parse_body(payload: dict | bytes, *, max_instances: int) -> dict:
    """The request's JSON object, with an ``instances`` list of 1..``max_instances`` and,
    if present, a boolean ``debug``."""
    body = _as_json(payload, max_tokens=_TOKENS_PER_REQUEST + _TOKENS_PER_INSTANCE * max_instances)
    if not isinstance(body, dict) or "instances" not in body:
        raise BadRequest('the request must be a JSON object with an "instances" list')
    instances = body["instances"]
    if not isinstance(instances, list):
        raise BadRequest(f'"instances" must be a list, not {type(instances).__name__}')
    if not instances:
        raise BadRequest('"instances" is empty: send at least one instance')
    if len(instances) > max_instances:
        raise BadRequest(
            f"too many instances: {len(instances)} > {max_instances} per request; split the batch"
        )
    debug = body.get("debug", False)
    if not isinstance(debug, bool):
        raise BadRequest(f'"debug" must be true or false, not {_json_type(debug)}')
    return body


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return "a number"
    names = {str: "a string", list: "an array", dict: "an object"}
    return names.get(type(value), type(value).__name__)


async def parse_request_in(
    executor: Executor, payload: dict | bytes, **options: object
) -> ParsedRequest:
    """``parse_request`` in ``executor``: base64-decoding a 64 MB body takes ~0.1 s, too long
    to hold the event loop."""
    return await asyncio.get_running_loop().run_in_executor(
        executor, partial(parse_request, payload, **options)
    )


def _as_json(payload: dict | bytes, *, max_tokens: int) -> object:
    # The gate hands KServe every predict body as opaque bytes; a dict only comes from
    # in-process callers.
    if not isinstance(payload, (bytes, bytearray)):
        return payload
    tokens = sum(payload.count(c) for c in _STRUCTURAL)
    if tokens > max_tokens:
        raise BadRequest(
            f"the request body has {tokens} JSON structural characters, more than any valid "
            f"request of at most the allowed instances ({max_tokens}): too many or too deeply "
            "nested values"
        )
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc}") from None


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
        encoded = encoded.partition(",")[2]
    try:
        ascii_text = encoded.encode("ascii")
    except UnicodeEncodeError as exc:
        return ItemError("invalid_base64", f"not valid base64: non-ASCII character at {exc.start}")
    # Line breaks (MIME) and spaces are allowed; removing them in C keeps a string with a
    # space between every character from becoming millions of Python objects.
    compact = ascii_text.translate(None, _WHITESPACE)
    if len(compact) * 3 // 4 > max_bytes:
        return ItemError(
            "image_too_large", f"{len(compact) * 3 // 4} bytes exceeds the {max_bytes}-byte limit"
        )
    try:
        data = binascii.a2b_base64(compact, strict_mode=True)
    except binascii.Error as exc:
        return ItemError("invalid_base64", f"not valid base64 ({exc})")
    if not data:
        return ItemError("empty_image", "the base64 string decodes to 0 bytes")
    return data
