"""Deterministic test videos, made with PyAV from still images.

``skin`` images are warm, blurred blobs that open_nsfw scores far above ``tests.images``
photos (about 0.4 against 0.001), so a video of both has frames on either side of a
threshold in between.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from fractions import Fraction

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from devtools import images

# An H.264 encode that keeps the frames' pixels exactly (RGB, lossless): the frames a
# video is made of are then exactly the frames the service decodes.
LOSSLESS = ("mp4", "libx264rgb", "rgb24", {"crf": "0", "preset": "ultrafast"})
H264 = ("mp4", "libx264", "yuv420p", {"crf": "20", "preset": "ultrafast"})
VP8 = ("webm", "libvpx", "yuv420p", {"crf": "10", "b": "2M", "deadline": "realtime"})
# Ogg as Commons has it carries Theora, which this FFmpeg build only decodes; VP8 in Ogg
# exercises the same demuxer.
OGG_VP8 = ("ogg", "libvpx", "yuv420p", {"crf": "10", "b": "2M", "deadline": "realtime"})

OPUS_RATE, OPUS_FRAME = 48000, 960  # Opus's 20 ms frames


def skin(width: int, height: int, seed: int) -> Image.Image:
    """Overlapping skin-toned ellipses on a plain background, blurred."""
    rng = np.random.default_rng(seed)
    tone = rng.integers((180, 110, 80), (256, 190, 160))
    img = Image.new("RGB", (width, height), tuple(int(c) for c in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 5))):
        x0, y0 = rng.integers(-width // 3, width), rng.integers(-height // 3, height)
        x1 = x0 + rng.integers(width // 4, width)
        y1 = y0 + rng.integers(height // 3, height + height // 2)
        shade = np.clip(tone + rng.integers(-30, 30, 3), 0, 255)
        draw.ellipse((int(x0), int(y0), int(x1), int(y1)), fill=tuple(int(c) for c in shade))
    return img.filter(ImageFilter.GaussianBlur(width / 64))


# Two seconds of a photo (open_nsfw ≈ 0.001), then two of skin (≈ 0.4): what the fake
# Commons serves as videos.
PHOTO_THEN_SKIN: list[tuple[Image.Image, float]] = [
    (images.photo(320, 240, 22), 2.0),
    (skin(320, 240, 4), 2.0),
]


def encode(
    scenes: Sequence[tuple[Image.Image, float]],
    *,
    fps: int = 10,
    codec: tuple[str, str, str, dict[str, str]] = H264,
    container_options: dict[str, str] | None = None,
) -> bytes:
    """A video showing each ``(image, seconds)`` in turn, all images the same size."""
    fmt, name, pix_fmt, options = codec
    width, height = scenes[0][0].size
    out = io.BytesIO()
    with av.open(out, "w", format=fmt, options=container_options or {}) as container:
        stream = container.add_stream(name, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = dict(options)
        _write_scenes(container, stream, scenes, fps)
    return out.getvalue()


def _write_scenes(container, stream, scenes: Sequence[tuple[Image.Image, float]], fps: int) -> None:
    """Each ``(image, seconds)`` as that many frames at ``fps``, then flush the encoder."""
    index = 0
    for image, seconds in scenes:
        frame = av.VideoFrame.from_image(image)
        for _ in range(round(seconds * fps)):
            frame.pts = index
            container.mux(stream.encode(frame))
            index += 1
    container.mux(stream.encode(None))


def growing_frames_webm(small: int = 64, big: int = 1024, seconds: float = 0.6, fps: int = 10) -> bytes:
    """A VP8 WebM whose header (and first keyframe) say ``small`` x ``small`` and whose later
    keyframes are ``big`` x ``big``: VP8 may change size at any keyframe, so only the
    decoder sees the real size."""
    out = io.BytesIO()
    with av.open(out, "w", format="webm") as container:
        stream = container.add_stream("libvpx", rate=fps)
        stream.width, stream.height, stream.pix_fmt = small, small, "yuv420p"
        later = av.CodecContext.create("libvpx", "w")
        later.width, later.height, later.pix_fmt = big, big, "yuv420p"
        later.time_base, later.framerate = Fraction(1, fps), Fraction(fps)
        index = 0
        for encoder, side in ((stream.codec_context, small), (later, big)):
            for _ in range(round(seconds * fps)):
                frame = av.VideoFrame.from_image(images.photo(side, side, index))
                frame.pts = index
                index += 1
                for packet in encoder.encode(frame):
                    packet.stream = stream
                    container.mux(packet)
            for packet in encoder.encode(None):
                packet.stream = stream
                container.mux(packet)
    return out.getvalue()


def with_audio(
    scenes: Sequence[tuple[Image.Image, float]], audio_s: float, *, fps: int = 10
) -> bytes:
    """A VP8 WebM of ``scenes`` with ``audio_s`` seconds of silent Opus beside it (no video
    stream at all when ``scenes`` is empty)."""
    out = io.BytesIO()
    with av.open(out, "w", format="webm") as container:
        if scenes:
            video = container.add_stream("libvpx", rate=fps)
            video.width, video.height = scenes[0][0].size
            video.pix_fmt = "yuv420p"
        audio = container.add_stream("libopus", rate=OPUS_RATE, layout="mono")
        if scenes:
            _write_scenes(container, video, scenes, fps)
        silence = np.zeros((1, OPUS_FRAME), np.int16)
        for index in range(round(audio_s * OPUS_RATE / OPUS_FRAME)):
            frame = av.AudioFrame.from_ndarray(silence, format="s16", layout="mono")
            frame.sample_rate, frame.pts = OPUS_RATE, index * OPUS_FRAME
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))
    return out.getvalue()


def animated(frames: Sequence[tuple[Image.Image, int]], fmt: str) -> bytes:
    """An animated GIF/PNG/WebP of ``(image, milliseconds)`` frames."""
    out = io.BytesIO()
    images = [image for image, _ in frames]
    images[0].save(
        out,
        format=fmt,
        save_all=True,
        append_images=images[1:],
        duration=[ms for _, ms in frames],
        loop=0,
    )
    return out.getvalue()


def frames_at(data: bytes, times: Sequence[float]) -> list[Image.Image]:
    """The decoded frames shown at ``times`` (seconds from the first frame), as RGB."""
    decoded = [
        (float(frame.time), frame.to_image()) for frame in av.open(io.BytesIO(data)).decode(video=0)
    ]
    start = decoded[0][0]
    return [
        next(img for t, img in reversed(decoded) if t - start <= wanted + 1e-6) for wanted in times
    ]


def displayed_clockwise(mp4: bytes) -> bytes:
    """``mp4`` with its track header telling players to turn it 90° clockwise, as phones
    store portrait video: the 3×3 matrix 48 bytes into the (version 0) ``tkhd`` box."""
    at = mp4.index(b"tkhd") - 4 + 48
    matrix = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    return mp4[:at] + matrix + mp4[at + len(matrix) :]


# --- hostile videos ---------------------------------------------------------------------

# LZW codes for a GIF with 2-bit minimum code size: 4 clears the table, 5 ends the data.
_GIF_CLEAR, _GIF_END = 4, 5


def _gif_pixels(count: int) -> bytes:
    """LZW data for ``count`` pixels of colour 0, clearing the table every two codes so
    every code stays 3 bits wide; packed into data sub-blocks."""
    codes = [_GIF_CLEAR]
    for index in range(count):
        codes.append(0)
        if index % 2:
            codes.append(_GIF_CLEAR)
    codes.append(_GIF_END)
    bits = sum(code << (3 * i) for i, code in enumerate(codes))
    packed = bits.to_bytes((3 * len(codes) + 7) // 8, "little")
    blocks = b"".join(
        bytes([len(packed[i : i + 255])]) + packed[i : i + 255] for i in range(0, len(packed), 255)
    )
    return b"\x02" + blocks + b"\x00"


def gif(
    frames: Sequence[tuple[int, int, int, int]],
    *,
    screen: tuple[int, int] = (1, 1),
    delay_ms: int = 20,
    pixels_limit: int = 4096,
) -> bytes:
    """A GIF89a built block by block, one frame per ``(left, top, width, height)`` image
    descriptor, all black. A frame's pixel data is complete up to ``pixels_limit`` pixels;
    larger frames carry one pixel: their descriptor is the point, not their content."""
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0))
    out += bytes(6)  # two-colour global table: black, black
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    for left, top, width, height in frames:
        out += b"\x21\xf9\x04\x00" + struct.pack("<H", delay_ms // 10) + b"\x00\x00"
        out += b"\x2c" + struct.pack("<HHHHB", left, top, width, height, 0)
        pixels = width * height
        out += _gif_pixels(pixels if pixels <= pixels_limit else 1)
    return bytes(out + b"\x3b")


def growing_canvas_gif(side: int = 13_000) -> bytes:
    """Two 64×64 frames, then a third whose descriptor claims ``side``×``side``: Pillow
    grows the canvas to it when it reaches that frame (169 MP at the default side)."""
    return gif([(0, 0, 64, 64), (0, 0, 64, 64), (0, 0, side, side)], screen=(64, 64))


def many_frames_gif(frames: int = 3000) -> bytes:
    """A GIF of ``frames`` one-pixel frames, 20 ms each: cheap bytes, many seeks."""
    return gif([(0, 0, 1, 1)] * frames)


def long_video(seconds: float = 60.0, *, fps: int = 10) -> bytes:
    """A small H.264 video of ``seconds``: many frames for little data."""
    return encode([(images.photo(64, 48, 30), seconds)], fps=fps)


def truncated(data: bytes, keep: float = 0.6) -> bytes:
    """The first ``keep`` share of ``data``: a download cut short."""
    return images.truncated(data, keep)
