import io

import numpy as np
import pytest
from PIL import Image

from codec import UnsupportedImageError
from codec.images.imageio import read_image


def encoded(im: Image.Image, fmt="PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_palette_becomes_rgb():
    im = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)).convert("P")
    arr = read_image(encoded(im))
    assert arr.shape == (20, 30, 3) and arr.dtype == np.uint8


def test_gray_alpha_becomes_rgba():
    im = Image.new("LA", (5, 4), (100, 7))
    arr = read_image(encoded(im))
    assert arr.shape == (4, 5, 4) and (arr[..., 3] == 7).all()


def test_16_bit_png_is_read_as_uint16_and_float_is_rejected_with_name():
    arr = np.arange(16, dtype=np.uint16).reshape(4, 4) * 4000
    im = Image.fromarray(arr)
    got = read_image(encoded(im), name="scene.png")
    assert got.dtype == np.uint16 and np.array_equal(got, arr)
    with pytest.raises(UnsupportedImageError, match="scene.png.*float"):
        read_image(encoded(Image.fromarray(arr.astype(np.float32)), "TIFF"), name="scene.png")


def test_truncated_and_garbage_and_bomb():
    data = encoded(Image.new("RGB", (64, 64), (1, 2, 3)), "JPEG")
    with pytest.raises(UnsupportedImageError, match="cannot decode|not a recognised"):
        read_image(data[: len(data) // 3])
    with pytest.raises(UnsupportedImageError, match="not a recognised image"):
        read_image(b"hello world" * 10)
    with pytest.raises(UnsupportedImageError, match="exceeds the limit"):
        read_image(encoded(Image.new("RGB", (100, 100))), max_pixels=5000)


def test_read_image_is_load_image_pixels_and_refuses_what_the_loader_refuses(tmp_path):
    from codec.errors import ImageTooLargeError
    from codec.images.imageio import load_image

    data = encoded(Image.fromarray(np.random.default_rng(1).integers(0, 255, (9, 7, 3), dtype=np.uint8)))
    path = tmp_path / "a.png"
    path.write_bytes(data)
    assert np.array_equal(read_image(path), load_image(data, "a.png").pixels)
    with pytest.raises(UnsupportedImageError, match=r"c\.jpg: CMYK .*not supported"):
        read_image(encoded(Image.new("CMYK", (8, 8)), "JPEG"), name="c.jpg")
    with pytest.raises(ImageTooLargeError, match=r"a\.png: 7×9 = 63 pixels exceeds the limit of 10"):
        read_image(path, name="a.png", max_pixels=10)
    with pytest.raises(UnsupportedImageError, match=r"missing\.png: cannot open"):
        read_image(tmp_path / "missing.png", name="missing.png")
