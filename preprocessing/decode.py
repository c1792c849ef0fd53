"""Bytes → RGB ``PIL.Image``: the one decode policy shared by serving and training.

The policy:

* the format is sniffed from the bytes (Pillow's plugins), never from the file name, and
  only the formats in ``ALLOWED_FORMATS`` are accepted;
* the pixel count is checked against ``max_pixels`` from the header, before any pixel is
  decoded, so a decompression bomb costs nothing (Pillow's own ``MAX_IMAGE_PIXELS`` guard
  stays on as a backstop);
* so is the memory the decode will need at its peak (`peak_bytes`: the decoded image in
  its own mode, the decoder's buffers, the RGB copy) against ``max_decode_bytes``: pixels
  alone do not bound it, a 16-bit or float image takes 2 or 4 bytes per pixel before
  conversion, a progressive JPEG buffers every DCT coefficient;
* JPEGs are decoded at reduced DCT scale (``Image.draft``) when the caller only needs
  ``min_side`` pixels on the shorter side, which turns a 12-MP decode into a few ms;
* the EXIF orientation is applied;
* transparency is composited onto ``BACKGROUND`` (white, as Commons renders files on
  its file pages), palette, CMYK, 16-bit and float images are converted to 8-bit RGB,
  tile by tile into the output, so conversion costs the RGB image plus one tile;
* animated and multi-page images use their first frame; nothing seeks past it, so later
  frames (which may claim a larger canvas) cost nothing.
"""

from __future__ import annotations

import io
import math
import re
import struct

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from preprocessing.errors import CodedError

BACKGROUND: tuple[int, int, int] = (255, 255, 255)
# Pillow plugin names; the JPEG plugin also opens MPO (multi-picture JPEG from cameras).
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP")
DEFAULT_MAX_PIXELS = 50_000_000
DEFAULT_MAX_DECODE_BYTES = 256 * 1024 * 1024

HIGH_DEPTH_MODES: tuple[str, ...] = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# Bytes per pixel of Pillow's storage; every other mode takes 4 (RGB is stored as RGBX).
_STORED_BYTES: dict[str, int] = {
    "1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2,
}
RGB_BYTES = 4
# Conversion works on TILE × TILE squares; a tile's temporaries (crop, float64 copy of a
# high-depth tile, RGBA, background, alpha, transposed copy) stay under this per pixel.
TILE = 512
TILE_BYTES_PER_PIXEL = 32
# Decoder state, read buffers and Python objects besides the pixel buffers.
FIXED_BYTES = 16 * 1024 * 1024
# libwebp's animation decoder (Pillow's only WebP path) keeps two RGBA canvases, and
# Pillow copies the frame out of it once more before decoding it into the image.
WEBP_DECODER_BYTES_PER_PIXEL = 12
# libjpeg stores each DCT coefficient of a multi-scan (progressive) JPEG as a 16-bit value.
JPEG_COEFFICIENT_BYTES = 2

_ORIENTATIONS: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = (
    Image.Transpose.TRANSPOSE,
    Image.Transpose.ROTATE_270,
    Image.Transpose.TRANSVERSE,
    Image.Transpose.ROTATE_90,
)
# What Pillow's plugins raise on bytes they cannot make sense of; struct.error and
# IndexError come from blocks shorter than their fields.
_UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError)
# A marker inside entropy-coded JPEG data: 0xFF not followed by stuffing, a restart or fill.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


class DecodeError(CodedError):
    """The bytes are not an image we can score. ``code`` is the machine-readable reason."""


def decode_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_decode_bytes: int = DEFAULT_MAX_DECODE_BYTES,
    min_side: int | None = None,
) -> Image.Image:
    """Decode ``data`` into an 8-bit RGB image following the module's policy.

    ``min_side`` allows a reduced-resolution JPEG decode that still leaves at least that
    many pixels on each side; ``None`` decodes at full resolution.
    """
    if not data:
        raise DecodeError("empty_image", "the image is empty (0 bytes)")
    try:
        img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise DecodeError(
            "unsupported_image",
            f"the bytes are not an image in a supported format ({', '.join(ALLOWED_FORMATS)})",
        ) from None
    except Image.DecompressionBombError as exc:
        raise DecodeError("image_too_large", f"decompression bomb rejected: {exc}") from None
    except _UNREADABLE as exc:
        raise DecodeError("corrupt_image", f"the image header cannot be read: {exc}") from None

    width, height = img.size
    if width < 1 or height < 1:
        raise DecodeError("corrupt_image", f"the image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise DecodeError(
            "image_too_large",
            f"the image has {width}x{height} = {width * height} pixels, "
            f"more than the limit of {max_pixels} (decompression-bomb guard)",
        )
    try:
        full_size = img.size
        if min_side is not None and img.format in ("JPEG", "MPO"):
            img.draft("RGB", (min_side, min_side))
        _check_memory(img, data, full_size, _orientation(img, loaded=False), max_decode_bytes)
        img.load()
        # A PNG's eXIf chunk may follow its pixels: the orientation is only sure now.
        method = _orientation(img, loaded=True)
        _check_memory(img, data, full_size, method, max_decode_bytes)
        return _to_rgb(img, method)
    except DecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise DecodeError("image_too_large", f"decompression bomb rejected: {exc}") from None
    except _UNREADABLE as exc:
        raise DecodeError("corrupt_image", f"the image data cannot be decoded: {exc}") from None


def peak_bytes(
    img: Image.Image, data: bytes, full_size: tuple[int, int], method: Image.Transpose | None
) -> int:
    """Bytes ``decode_image`` holds at most while decoding ``img`` (opened, not loaded; its
    size after any draft, ``full_size`` before) and converting it to upright RGB."""
    pixels = img.width * img.height
    stored = _STORED_BYTES.get(img.mode, 4)
    if img.mode == "RGB" and method is None:
        conversion = 0
    else:
        conversion = pixels * RGB_BYTES + min(pixels, TILE * TILE) * TILE_BYTES_PER_PIXEL
    decoder = _decoder_bytes(img, data, full_size)
    # Plugins may read the whole file into a buffer of their own.
    return pixels * stored + conversion + decoder + len(data) + FIXED_BYTES


def _check_memory(
    img: Image.Image,
    data: bytes,
    full_size: tuple[int, int],
    method: Image.Transpose | None,
    max_decode_bytes: int,
) -> None:
    needed = peak_bytes(img, data, full_size, method)
    if needed > max_decode_bytes:
        raise DecodeError(
            "image_too_large",
            f"decoding the {img.width}x{img.height} {img.mode} {img.format} image needs about "
            f"{needed} bytes ({needed / 2**20:.0f} MiB), more than the limit of "
            f"{max_decode_bytes} bytes",
        )


def _decoder_bytes(img: Image.Image, data: bytes, full_size: tuple[int, int]) -> int:
    """What the format's decoder allocates besides the image itself."""
    if img.format == "WEBP":
        return img.width * img.height * WEBP_DECODER_BYTES_PER_PIXEL
    if img.format in ("JPEG", "MPO"):
        multi_scan = img.info.get("progressive") or _jpeg_scans(data) > 1
        return _jpeg_coefficient_bytes(img, full_size) if multi_scan else 0
    if img.format == "TIFF":
        return _tiff_block_bytes(img)
    return 0


def _jpeg_coefficient_bytes(img: Image.Image, full_size: tuple[int, int]) -> int:
    """libjpeg's whole-image coefficient buffer, at full size (drafting does not shrink it)."""
    layers = getattr(img, "layer", None) or [(0, 1, 1, 0)] * len(img.getbands())
    h_max = max(h for _, h, _, _ in layers) or 1
    v_max = max(v for _, _, v, _ in layers) or 1
    width, height = full_size
    total = 0
    for _, h, v, _ in layers:
        blocks_x = math.ceil(math.ceil(width * h / h_max) / 8) + 1
        blocks_y = math.ceil(math.ceil(height * v / v_max) / 8) + 1
        total += blocks_x * blocks_y * 64 * JPEG_COEFFICIENT_BYTES
    return total


def _jpeg_scans(data: bytes) -> int:
    """Start-of-scan segments of the JPEG's first image, counted up to 2."""
    pos, scans = 2, 0
    while pos + 4 <= len(data) and scans < 2:
        if data[pos] != 0xFF:
            break  # not a marker: the decoder reports the damage
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
        elif marker == 0xD9:
            break
        elif 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
            if marker == 0xDA:
                scans += 1
                found = _JPEG_MARKER.search(data, pos)
                if found is None:
                    break
                pos = found.start()
    return scans


def _tiff_block_bytes(img: Image.Image) -> int:
    """libtiff's buffer for one strip or tile, as stored or as RGBA, whichever is larger."""
    tags = getattr(img, "tag_v2", {})
    bits = tags.get(258, (8,))
    bits_per_pixel = max(sum(bits) if isinstance(bits, tuple) else int(bits), 32)
    if 322 in tags and 323 in tags:
        width, rows = int(tags[322]), int(tags[323])
    else:
        width, rows = img.width, min(int(tags.get(278, img.height)), img.height)
    return math.ceil(width * bits_per_pixel / 8) * rows


def _orientation(img: Image.Image, *, loaded: bool) -> Image.Transpose | None:
    """The transposition the EXIF orientation asks for. Before ``load`` a PNG's EXIF is
    only known when it precedes the pixels (reading a later one would load them)."""
    if not loaded and img.format == "PNG" and "exif" not in img.info:
        return None
    return _ORIENTATIONS.get(img.getexif().get(ExifTags.Base.Orientation, 1))


def _to_rgb(img: Image.Image, method: Image.Transpose | None) -> Image.Image:
    """``img`` upright in 8-bit RGB, converted tile by tile into a single output image."""
    if img.mode == "RGB" and method is None:
        return img
    width, height = img.size
    out = Image.new("RGB", (height, width) if method in _SWAPS_AXES else (width, height))
    top = _high_depth_max(img) if img.mode in HIGH_DEPTH_MODES else None
    for box in _tiles(width, height):
        tile = _tile_to_rgb(img.crop(box), top)
        if method is not None:
            tile = tile.transpose(method)
        out.paste(tile, _destination(method, box, width, height))
    return out


def _tiles(width: int, height: int) -> list[tuple[int, int, int, int]]:
    return [
        (x, y, min(x + TILE, width), min(y + TILE, height))
        for y in range(0, height, TILE)
        for x in range(0, width, TILE)
    ]


def _destination(
    method: Image.Transpose | None, box: tuple[int, int, int, int], width: int, height: int
) -> tuple[int, int]:
    """Where the tile cut from ``box`` lands once the whole image is transposed."""
    x0, y0, x1, y1 = box
    return {
        None: (x0, y0),
        Image.Transpose.FLIP_LEFT_RIGHT: (width - x1, y0),
        Image.Transpose.FLIP_TOP_BOTTOM: (x0, height - y1),
        Image.Transpose.ROTATE_180: (width - x1, height - y1),
        Image.Transpose.ROTATE_90: (y0, width - x1),
        Image.Transpose.ROTATE_270: (height - y1, x0),
        Image.Transpose.TRANSPOSE: (y0, x0),
        Image.Transpose.TRANSVERSE: (height - y1, width - x1),
    }[method]


def _tile_to_rgb(tile: Image.Image, top: np.generic | None) -> Image.Image:
    if top is not None:
        tile = _high_depth_to_l(tile, top)
    mode = tile.mode
    if mode == "P":
        tile = tile.convert("RGBA" if "transparency" in tile.info else "RGB")
    elif mode in ("LA", "La", "PA", "RGBa") or (mode in ("L", "1") and "transparency" in tile.info):
        tile = tile.convert("RGBA")
    if tile.mode == "RGBA":
        background = Image.new("RGB", tile.size, BACKGROUND)
        background.paste(tile, mask=tile.getchannel("A"))
        return background
    return tile.convert("RGB")


def _high_depth_max(img: Image.Image) -> np.generic:
    """The image's largest value (NaN if any pixel is NaN), one tile at a time."""
    return np.max([np.asarray(img.crop(box)).max() for box in _tiles(*img.size)])


def _high_depth_to_l(tile: Image.Image, top: np.generic) -> Image.Image:
    """Map 16-bit and 32-bit greyscale onto 0..255 by their nominal range; ``top`` is the
    whole image's maximum, so every tile is scaled alike."""
    arr = np.asarray(tile)
    if tile.mode == "F":
        scaled = np.clip(arr, 0.0, 1.0 if top <= 1.0 else 255.0)
        scaled = scaled * (255.0 if top <= 1.0 else 1.0)
    else:
        full = 65535.0 if top > 255 or tile.mode.startswith("I;16") else 255.0
        scaled = arr.astype(np.float64) * (255.0 / full)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
