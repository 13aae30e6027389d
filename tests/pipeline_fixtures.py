"""Sample inputs for the pipeline tests: good images of each format and every kind of bad one."""

import io

import numpy as np
import tifffile
from PIL import Image

from conftest import natural_image

EPSG = 32633
GEO_TAGS = [
    (33550, "d", 3, (10.0, 10.0, 0.0), False),
    (33922, "d", 6, (0.0, 0.0, 0.0, 500000.0, 4000000.0, 0.0), False),
    (34735, "H", 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, EPSG), False),
]


def png(img) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def good_objects(seed: int = 0) -> dict[str, bytes]:
    a, b = natural_image(96, 160, seed), natural_image(130, 100, seed + 1)
    jpeg = io.BytesIO()
    Image.fromarray(b).save(jpeg, format="JPEG", quality=92)
    webp = io.BytesIO()
    Image.fromarray(a[:64, :64]).save(webp, format="WEBP", quality=90)
    tif = io.BytesIO()
    tifffile.imwrite(tif, natural_image(80, 120, seed + 2), photometric="rgb", extratags=GEO_TAGS)
    rgba = np.concatenate([a, np.full(a.shape[:2] + (1,), 200, np.uint8)], axis=2)
    return {"scenes/a.png": png(a), "scenes/b.jpg": jpeg.getvalue(), "scenes/c.webp": webp.getvalue(),
            "geo/d.tif": tif.getvalue(), "scenes/e-rgba.png": png(rgba)}


def bad_objects() -> dict[str, bytes]:
    good = png(natural_image(64, 64))
    return {
        "bad/zero.png": b"",
        "bad/truncated.png": good[: len(good) // 2],
        "bad/not-an-image.png": b"this is a text file, not a PNG",
        "bad/float32.tif": float_tiff(),  # floating-point samples: not archivable faithfully (yet)
        "bad/huge.png": png(natural_image(300, 300)),  # over the test's max_pixels
    }


def float_tiff() -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.linspace(0, 1, 400, dtype=np.float32).reshape(20, 20))
    return buf.getvalue()


def upload(fs, bucket: str, prefix: str, objects: dict[str, bytes]) -> None:
    for name, data in objects.items():
        fs.pipe(f"{bucket}/{prefix}/{name}", data)
