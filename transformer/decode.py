"""Bytes → RGB ``PIL.Image``: the one decode policy shared by serving and training.

The policy:

* the format is sniffed from the bytes (Pillow's plugins), never from the file name, and
  only the formats in ``ALLOWED_FORMATS`` are accepted;
* the pixel count is checked against ``max_pixels`` from the header, before any pixel is
  decoded, so a decompression bomb costs nothing (Pillow's own ``MAX_IMAGE_PIXELS`` guard
  stays on as a backstop);
* JPEGs are decoded at reduced DCT scale (``Image.draft``) when the caller only needs
  ``min_side`` pixels on the shorter side, which turns a 12-MP decode into a few ms;
* the EXIF orientation is applied;
* transparency is composited onto ``BACKGROUND`` (white, as Commons renders files on
  its file pages), palette, CMYK, 16-bit and float images are converted to 8-bit RGB;
* animated images use their first frame.
"""

from __future__ import annotations

import io
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

BACKGROUND: tuple[int, int, int] = (255, 255, 255)
# Pillow plugin names; the JPEG plugin also opens MPO (multi-picture JPEG from cameras).
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP", "TIFF", "BMP")
DEFAULT_MAX_PIXELS = 50_000_000


class DecodeError(ValueError):
    """The bytes are not an image we can score. ``code`` is the machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def decode_image(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
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
    except (OSError, ValueError, SyntaxError) as exc:
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
        if min_side is not None and img.format in ("JPEG", "MPO"):
            img.draft("RGB", (min_side, min_side))
        img.load()
        img = ImageOps.exif_transpose(img)
        return _to_rgb(img)
    except Image.DecompressionBombError as exc:
        raise DecodeError("image_too_large", f"decompression bomb rejected: {exc}") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DecodeError("corrupt_image", f"the image data cannot be decoded: {exc}") from None


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        img = _high_depth_to_l(img)
        mode = "L"
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    elif mode in ("LA", "La", "PA", "RGBa"):
        img = img.convert("RGBA")
        mode = "RGBA"
    elif mode in ("L", "1") and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode == "RGBA":
        background = Image.new("RGB", img.size, BACKGROUND)
        background.paste(img, mask=img.getchannel("A"))
        return background
    return img.convert("RGB")


def _high_depth_to_l(img: Image.Image) -> Image.Image:
    """Map 16-bit and 32-bit greyscale onto 0..255 by their nominal range."""
    arr = np.asarray(img)
    if img.mode == "F":
        scaled = np.clip(arr, 0.0, 1.0 if arr.max() <= 1.0 else 255.0)
        scaled = scaled * (255.0 if arr.max() <= 1.0 else 1.0)
    else:
        top = 65535.0 if arr.max() > 255 or img.mode.startswith("I;16") else 255.0
        scaled = arr.astype(np.float64) * (255.0 / top)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")
