"""Deterministic test images in every shape the decoder must handle.

Content is smooth random colour fields with drawn shapes and skin-like tones, so both
models give scores away from 0 and 1 and a preprocessing slip shows up as a score change.
"""

from __future__ import annotations

import functools
import io
import math
import struct
import zlib

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A photo-like RGB image: an upsampled colour field plus a few shapes."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    coarse[..., 0] = np.maximum(coarse[..., 0], 150)  # warm, skin-like bias
    base = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    noise = rng.normal(0, 12, size=(height, width, 3))
    pixels = np.clip(np.asarray(base, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels)
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(1, width // 2 + 2)), y0 + int(rng.integers(1, height // 2 + 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        draw.ellipse((x0, y0, x1, y1), fill=colour)
    return img


def encode(img: Image.Image, fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def logo(
    width: int, height: int, seed: int, *, text: str = "Kanion", alpha: bool = True
) -> Image.Image:
    """A logo-like render: a flat-colour mark (ring, disc or rounded square) beside a
    wordmark, on a transparent background (RGBA) or on a flat colour (RGB).

    Pillow's built-in scalable font keeps the render the same on every machine.
    """
    rng = np.random.default_rng(seed)
    colour = tuple(int(c) for c in rng.integers(0, 200, 3))
    accent = tuple(int(c) for c in rng.integers(0, 256, 3))
    background = (0, 0, 0, 0) if alpha else tuple(int(c) for c in rng.integers(200, 256, 3))
    img = Image.new("RGBA" if alpha else "RGB", (width, height), background)
    draw = ImageDraw.Draw(img)
    side = int(min(height, width) * 0.8)
    top = (height - side) // 2
    left = top if width > height * 1.5 else (width - side) // 2
    box = (left, top, left + side, top + side)
    shape = int(rng.integers(0, 3))
    if shape == 0:
        draw.ellipse(box, outline=colour, width=max(2, side // 8))
        inner = side // 4
        draw.ellipse((box[0] + inner, box[1] + inner, box[2] - inner, box[3] - inner), fill=accent)
    elif shape == 1:
        draw.ellipse(box, fill=colour)
        draw.polygon(
            [(left + side // 2, top + side // 6), (left + side // 6, top + side * 5 // 6),
             (left + side * 5 // 6, top + side * 5 // 6)],
            fill=accent,
        )
    else:
        draw.rounded_rectangle(box, radius=side // 5, fill=colour)
        inner = side // 4
        square = (left + inner, top + inner, left + side - inner, top + side - inner)
        draw.rectangle(square, fill=accent)
    if width > height * 1.5 and text:
        font = ImageFont.load_default(size=max(8, int(height * 0.5)))
        at = (left + side + height // 4, height // 2)
        draw.text(at, text, fill=colour, font=font, anchor="lm")
    return img


# (width, height, format): sizes from thumbnail to 12 MP, both orientations.
PLAIN_CASES: list[tuple[int, int, str]] = [
    (64, 48, "JPEG"), (120, 300, "PNG"), (224, 224, "JPEG"), (256, 256, "PNG"),
    (300, 200, "JPEG"), (333, 517, "PNG"), (500, 375, "JPEG"), (640, 480, "PNG"),
    (800, 600, "JPEG"), (731, 1024, "JPEG"), (1024, 768, "PNG"), (1200, 300, "JPEG"),
    (1280, 720, "JPEG"), (1500, 1000, "PNG"), (1600, 1200, "JPEG"), (1920, 1080, "JPEG"),
    (2048, 1536, "PNG"), (2500, 1700, "JPEG"), (3000, 2000, "JPEG"), (4000, 3000, "JPEG"),
    (97, 1301, "PNG"), (2400, 2400, "JPEG"),
]


def plain_files() -> list[tuple[str, bytes]]:
    """At least 20 plain RGB JPEG and PNG files of varied sizes."""
    files = []
    for seed, (width, height, fmt) in enumerate(PLAIN_CASES):
        name = f"Plain_{seed:02d}_{width}x{height}.{'jpg' if fmt == 'JPEG' else 'png'}"
        options = {"quality": 90} if fmt == "JPEG" else {}
        files.append((name, encode(photo(width, height, seed), fmt, **options)))
    return files


def exif_rotated_jpeg(seed: int = 100) -> bytes:
    """Stored landscape with orientation 6: displayed portrait after rotation."""
    img = photo(640, 360, seed)
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(img, "JPEG", quality=90, exif=exif.tobytes())


def special_files() -> list[tuple[str, bytes]]:
    """Modes the reference classifier does not treat like we do (alpha, EXIF) or at all."""
    base = photo(400, 300, 200)
    rgba = base.convert("RGBA")
    alpha = Image.new("L", base.size, 0)
    ImageDraw.Draw(alpha).ellipse((40, 30, 360, 270), fill=255)
    rgba.putalpha(alpha)
    palette = base.quantize(64)
    palette_transparent = palette.copy()
    palette_transparent.info["transparency"] = 0
    grey16 = Image.fromarray(
        (np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    )
    return [
        ("Rgba.png", encode(rgba, "PNG")),
        ("Palette.png", encode(palette, "PNG")),
        ("Palette_transparent.png", encode(palette_transparent, "PNG", transparency=0)),
        ("Palette.gif", encode(palette, "GIF")),
        ("Grey.jpg", encode(base.convert("L"), "JPEG", quality=90)),
        ("Cmyk.jpg", encode(base.convert("CMYK"), "JPEG", quality=90)),
        ("Grey16.png", encode(grey16, "PNG")),
        # A seed whose upright and stored orientations score clearly apart (0.004 vs 0.018).
        ("Exif_rotated.jpg", exif_rotated_jpeg(103)),
        ("La.png", encode(base.convert("LA"), "PNG")),
        ("Rgb.webp", encode(base, "WEBP", quality=90)),
        ("Rgb.tiff", encode(base, "TIFF")),
    ]


def decompression_bomb(pixels_side: int = 12_000) -> bytes:
    """A ~20 KB PNG that would decode to 144 MP (1-bit, all zero)."""
    return encode(Image.new("1", (pixels_side, pixels_side)), "PNG", optimize=True)


# --- hostile images: small files that would decode to far more memory than they weigh ----


def truncated(data: bytes, keep: float = 0.6) -> bytes:
    """The first ``keep`` share of ``data``: a file cut short in transfer."""
    return data[: max(1, int(len(data) * keep))]


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _zeros_deflated(row_bytes: int, rows: int) -> bytes:
    """zlib data of ``rows`` × ``row_bytes`` zero bytes, compressed a row at a time so the
    generator itself never holds the image."""
    compressor = zlib.compressobj(9)
    row = bytes(row_bytes)
    return b"".join(compressor.compress(row) for _ in range(rows)) + compressor.flush()


# PNG colour type → channels.
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


@functools.cache
def giant_png(width: int, height: int, *, bit_depth: int = 16, colour_type: int = 0) -> bytes:
    """An all-zero PNG, built chunk by chunk: 7000×7000 16-bit grey (the default colour
    type) is about 110 KB and decodes to 98 MB in Pillow's I;16 mode. Colour type 3 gets a
    palette with a transparent entry (Pillow's P with transparency → RGBA)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    row_bytes = 1 + math.ceil(width * _PNG_CHANNELS[colour_type] * bit_depth / 8)
    chunks = [_png_chunk(b"IHDR", header)]
    if colour_type == 3:
        chunks += [_png_chunk(b"PLTE", bytes(range(48))), _png_chunk(b"tRNS", b"\0")]
    chunks += [_png_chunk(b"IDAT", _zeros_deflated(row_bytes, height)), _png_chunk(b"IEND", b"")]
    return b"\x89PNG\r\n\x1a\n" + b"".join(chunks)


def sixteen_bit_png(side: int = 7000) -> bytes:
    """A ~110 KB 16-bit greyscale PNG of ``side``² pixels (2 bytes each once decoded)."""
    return giant_png(side, side, bit_depth=16, colour_type=0)


def palette_png(side: int = 7000) -> bytes:
    """A palette PNG with transparency of ``side``² pixels: composited via RGBA."""
    return giant_png(side, side, bit_depth=8, colour_type=3)


def rgba_png(side: int = 7000) -> bytes:
    """An RGBA PNG of ``side``² pixels, all transparent."""
    return giant_png(side, side, bit_depth=8, colour_type=6)


@functools.cache
def giant_tiff(
    width: int,
    height: int,
    *,
    bits: int,
    samples: int = 1,
    sample_format: int = 1,
    photometric: int = 1,
) -> bytes:
    """An all-zero, deflate-compressed, single-strip TIFF: libtiff decodes the whole strip
    into one buffer. ``sample_format`` 1 is unsigned, 2 signed, 3 float; ``photometric`` 1
    is greyscale, 5 CMYK."""
    strip = _zeros_deflated(math.ceil(width * bits * samples / 8), height)
    arrays = struct.pack(f"<{samples}H", *[bits] * samples) + struct.pack(
        f"<{samples}H", *[sample_format] * samples
    )
    ifd_at = 8 + len(strip) + len(arrays)
    ifd_at += ifd_at % 2
    bits_at, format_at = 8 + len(strip), 8 + len(strip) + 2 * samples

    def short_array(at: int, value: int) -> tuple[int, int, int]:
        return (3, samples, value if samples <= 2 else at)  # two SHORTs fit in the entry

    entries = [
        (256, 4, 1, width),
        (257, 4, 1, height),
        (258, *short_array(bits_at, bits | (bits << 16) if samples == 2 else bits)),
        (259, 3, 1, 8),  # deflate
        (262, 3, 1, photometric),
        (273, 4, 1, 8),
        (277, 3, 1, samples),
        (278, 4, 1, height),
        (279, 4, 1, len(strip)),
        (284, 3, 1, 1),
        (339, *short_array(format_at, sample_format)),
    ]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", tag, kind, count, value) for tag, kind, count, value in entries
    ) + struct.pack("<I", 0)
    body = strip + arrays
    return b"II*\0" + struct.pack("<I", ifd_at) + body + bytes(ifd_at - 8 - len(body)) + ifd


def float_tiff(side: int = 7000) -> bytes:
    """A 32-bit float greyscale TIFF (Pillow's F: 4 bytes a pixel) of ``side``² pixels."""
    return giant_tiff(side, side, bits=32, sample_format=3)


def int32_tiff(side: int = 7000) -> bytes:
    """A 32-bit signed greyscale TIFF (Pillow's I) of ``side``² pixels."""
    return giant_tiff(side, side, bits=32, sample_format=2)


def cmyk_tiff(side: int = 7000) -> bytes:
    """An 8-bit CMYK TIFF of ``side``² pixels."""
    return giant_tiff(side, side, bits=8, samples=4, photometric=5)


def progressive_jpeg_header(width: int = 7000, height: int = 7000) -> bytes:
    """A small progressive JPEG whose frame header claims ``width``×``height``: libjpeg
    would allocate every DCT coefficient of that size before reading a scan."""
    data = bytearray(encode(photo(64, 48, 7), "JPEG", progressive=True))
    sof = data.index(b"\xff\xc2")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def later_frame_giant_tiff(side: int = 7000) -> bytes:
    """A two-page TIFF: a 64×48 first page, then a float page of ``side``² pixels. Still
    images use the first frame, so the second must never be read."""
    first = encode(photo(64, 48, 8), "TIFF")
    giant = giant_tiff(side, side, bits=32, sample_format=3)
    # Chain the giant's IFD after the first page's: shift its offsets past the first file.
    shift = len(first) - 8
    first_ifd = struct.unpack_from("<I", first, 4)[0]
    count = struct.unpack_from("<H", first, first_ifd)[0]
    next_at = first_ifd + 2 + 12 * count
    giant_ifd = struct.unpack_from("<I", giant, 4)[0]
    body = bytearray(giant[8:])
    ifd = giant_ifd - 8
    entries = struct.unpack_from("<H", body, ifd)[0]
    for index in range(entries):
        at = ifd + 2 + 12 * index
        tag, kind, entry_count, value = struct.unpack_from("<HHII", body, at)
        if tag == 273 or (kind == 3 and entry_count > 2):
            struct.pack_into("<I", body, at + 8, value + shift)
    merged = bytearray(first) + body
    struct.pack_into("<I", merged, next_at, giant_ifd + shift)
    return bytes(merged)
