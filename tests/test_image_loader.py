"""codec.images.imageio.load_image: the one image loader (CLI, pipeline, retraining).

Every behaviour is checked on a real small file made here (Pillow, tifffile, or a few
hand-written bytes where neither writes what is needed: a 16-bit RGB PNG, a sparse TIFF).
The rule under test: an input comes back as exactly the pixels it holds (with its colour
profile, EXIF and georeferencing), or as an error that names it and says why.
"""

import io
import json
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms

from codec.errors import ImageTooLargeError, UnsupportedImageError
from codec.images.imageio import CODEC_PEAK_BYTES_PER_PIXEL, LoadedImage, load_image, working_set_bytes

RNG = np.random.default_rng(7)


# --- files made in the test ----------------------------------------------------------------
def pillow_bytes(im: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def tiff_bytes(data=None, **kw) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, data, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_raw(width: int, height: int, bit_depth: int, colour_type: int, rows) -> bytes:
    """A PNG written by hand (Pillow cannot write 16-bit RGB/RGBA); ``rows`` yields each row's bytes."""
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(b"\x00" + row) for row in rows) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def png16(arr: np.ndarray) -> bytes:
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[1 if arr.ndim == 2 else arr.shape[2]]
    big = arr.astype(">u2")
    return png_raw(arr.shape[1], arr.shape[0], 16, colour_type, (big[r].tobytes() for r in range(arr.shape[0])))


def sparse_tiff(width: int, height: int) -> bytes:
    """A 122-byte grayscale TIFF whose two strips are absent (offset 0, 0 bytes): it decodes to width×height zeros."""
    tags = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
            (273, 3, 2, 0), (277, 3, 1, 1), (278, 4, 1, -(-height // 2)), (279, 3, 2, 0)]
    ifd = struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", *t) for t in tags) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd


def rgb(h=24, w=40):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def refused(match: str):
    """Content the archive cannot keep faithfully: the pipeline maps 'not supported' to error_kind 'unsupported'."""
    return pytest.raises(UnsupportedImageError, match=match)


# --- item 1: one loader, one result type ----------------------------------------------------
def test_loaded_image_carries_pixels_and_metadata_fields(tmp_path):
    data = pillow_bytes(Image.fromarray(rgb()))
    img = load_image(data, "a.png")
    assert isinstance(img, LoadedImage) and img.pixels.dtype == np.uint8 and img.pixels.shape == (24, 40, 3)
    assert img.geo is None and img.icc_profile is None and img.exif is None
    path = tmp_path / "a.png"
    path.write_bytes(data)
    for source in (path, str(path)):
        assert np.array_equal(load_image(source, "a.png").pixels, img.pixels)


@pytest.mark.parametrize("fmt,mode,kw", [("PNG", "RGB", {}), ("PNG", "RGBA", {}), ("PNG", "L", {}),
                                         ("JPEG", "RGB", {"quality": 90}), ("JPEG", "L", {"quality": 90}),
                                         ("WEBP", "RGB", {"quality": 90}), ("WEBP", "RGBA", {"lossless": True}),
                                         ("BMP", "RGB", {}), ("GIF", "P", {})])
def test_ordinary_images_load_as_pillow_decodes_them(fmt, mode, kw):
    arr = rgb()
    im = Image.fromarray(arr)
    im = im.convert(mode) if mode != "RGBA" else Image.fromarray(np.dstack([arr, arr[..., 0]]))
    data = pillow_bytes(im, fmt, **kw)
    with Image.open(io.BytesIO(data)) as ref:
        expected = np.asarray(ref.convert("RGB") if ref.mode == "P" else ref)
    got = load_image(data, f"x.{fmt.lower()}").pixels
    assert got.dtype == np.uint8 and np.array_equal(got, expected)


@pytest.mark.parametrize("photometric,shape", [("rgb", (20, 30, 3)), ("minisblack", (20, 30)), ("rgb", (20, 30, 4))])
def test_ordinary_tiffs_load_as_stored(photometric, shape):
    arr = RNG.integers(0, 256, shape, dtype=np.uint8)
    extras = {"extrasamples": ["unassalpha"]} if len(shape) == 3 and shape[2] == 4 else {}
    for kw in ({}, {"compression": "zlib"}, {"tile": (16, 16)}):
        assert np.array_equal(load_image(tiff_bytes(arr, photometric=photometric, **extras, **kw), "t.tif").pixels, arr)
    if arr.ndim == 3:  # one plane per sample
        planes = tiff_bytes(np.moveaxis(arr, -1, 0), photometric=photometric, planarconfig="separate", **extras)
        assert np.array_equal(load_image(planes, "t.tif").pixels, arr)


def test_lzw_tiff_that_tifffile_cannot_decode_goes_through_pillow_with_the_same_result():
    arr = rgb()
    lzw = pillow_bytes(Image.fromarray(arr), "TIFF", compression="tiff_lzw")
    assert np.array_equal(load_image(lzw, "lzw.tif").pixels, arr)


def test_geotiff_georeferencing_is_parsed():
    from pipeline_fixtures import EPSG, GEO_TAGS

    img = load_image(tiff_bytes(rgb(), photometric="rgb", extratags=GEO_TAGS), "d.tif")
    geo = json.loads(img.geo)
    assert geo["crs"] == f"EPSG:{EPSG}" and geo["geotransform"] == [500000.0, 10.0, 0.0, 4000000.0, 0.0, -10.0]
    assert geo["tags"]["ModelPixelScale"] == [10.0, 10.0, 0.0]


# --- item 2: refuse what cannot be archived faithfully; apply palettes -----------------------
@pytest.mark.parametrize("channels", [3, 4])
def test_16_bit_rgb_and_rgba_png_are_read_exactly_not_truncated(channels):
    arr = RNG.integers(0, 65536, (6, 9, channels), dtype=np.uint16)
    data = png16(arr)
    with Image.open(io.BytesIO(data)) as im:  # what Pillow does with it: 8 bits kept, silently
        assert im.mode == ("RGB" if channels == 3 else "RGBA")
    got = load_image(data, "scene.png")
    assert got.pixels.dtype == np.uint16 and np.array_equal(got.pixels, arr) and got.is_raster


def test_16_bit_gray_png_and_tiff_are_read_exactly_float_is_refused():
    arr = RNG.integers(0, 65536, (6, 9), dtype=np.uint16)
    assert np.array_equal(load_image(png16(arr), "g.png").pixels, arr)
    assert np.array_equal(load_image(tiff_bytes(arr), "g.tif").pixels, arr)
    rgb16 = np.dstack([arr, arr // 2, arr // 3])
    assert np.array_equal(load_image(tiff_bytes(rgb16, photometric="rgb"), "rgb16.tif").pixels, rgb16)
    with refused(r"f\.tif: 32-bit float .*not supported"):
        load_image(tiff_bytes(arr.astype(np.float32)), "f.tif")
    signed = (arr.astype(np.int32) - 32768).astype(np.int16)  # issue 26: int16 rasters are read as they are
    got = load_image(tiff_bytes(signed), "s.tif")
    assert got.pixels.dtype == np.int16 and np.array_equal(got.pixels, signed) and got.is_raster
    with refused(r"s32\.tif: 32-bit signed .*not supported"):
        load_image(tiff_bytes(arr.astype(np.int32)), "s32.tif")


def test_palette_tiff_comes_back_in_its_colours():
    cmap = (RNG.integers(0, 256, (3, 256)) * 257).astype(np.uint16)  # 16-bit colour map, as TIFF stores it
    index = RNG.integers(0, 256, (12, 17), dtype=np.uint8)
    data = tiff_bytes(index, photometric="palette", colormap=cmap)
    expected = np.moveaxis(cmap[:, index] // 256, 0, -1).astype(np.uint8)
    got = load_image(data, "pal.tif").pixels
    assert got.shape == (12, 17, 3) and np.array_equal(got, expected)


@pytest.mark.parametrize("bits,compression", [(8, "tiff_lzw"), (4, None)])
def test_palette_tiff_through_pillow_gets_the_same_colours(bits, compression):
    colours = RNG.integers(0, 256, (16, 3), dtype=np.uint8)
    index = RNG.integers(0, 16, (10, 14), dtype=np.uint8)
    im = Image.fromarray(index, "P")
    im.putpalette(colours.ravel().tolist())
    data = pillow_bytes(im, "TIFF", bits=bits, **({"compression": compression} if compression else {}))
    assert np.array_equal(load_image(data, "pal.tif").pixels, colours[index])


def test_transparent_colour_of_an_rgb_png_becomes_alpha():
    arr = rgb()
    arr[0, 0] = (1, 2, 3)
    data = pillow_bytes(Image.fromarray(arr), transparency=(1, 2, 3))
    got = load_image(data, "t.png").pixels
    assert got.shape == (24, 40, 4) and got[0, 0, 3] == 0 and np.array_equal(got[..., :3], arr)


def test_cmyk_tiff_and_jpeg_are_refused():
    cmyk = RNG.integers(0, 256, (8, 8, 4), dtype=np.uint8)
    with refused(r"c\.tif: CMYK .*not supported"):
        load_image(tiff_bytes(cmyk, photometric="separated"), "c.tif")
    with refused(r"c\.jpg: CMYK .*not supported"):
        load_image(pillow_bytes(Image.fromarray(cmyk, "CMYK"), "JPEG"), "c.jpg")


def test_lab_and_uncompressed_ycbcr_tiffs_are_refused_not_relabelled_as_rgb():
    arr = rgb(16, 16)
    with refused(r"lab\.tif: CIELAB .*not supported"):
        load_image(tiff_bytes(arr, photometric="cielab"), "lab.tif")
    with refused(r"y\.tif: YCBCR .*not supported"):
        load_image(tiff_bytes(arr, photometric="ycbcr", subsampling=(1, 1)), "y.tif")


def test_jpeg_compressed_ycbcr_tiff_is_rgb():
    arr = rgb(32, 32)
    data = pillow_bytes(Image.fromarray(arr).convert("YCbCr"), "TIFF", compression="jpeg")
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        assert tif.pages[0].photometric == 6  # stored as YCbCr
    with Image.open(io.BytesIO(data)) as im:  # libtiff's own YCbCr → RGB
        expected = np.asarray(im)
    assert np.array_equal(load_image(data, "y.tif").pixels, expected)


def test_miniswhite_and_bilevel_tiffs_are_inverted_and_scaled_as_their_tags_say():
    arr = RNG.integers(0, 256, (8, 8), dtype=np.uint8)
    assert np.array_equal(load_image(tiff_bytes(arr, photometric="miniswhite"), "w.tif").pixels, 255 - arr)
    bits = RNG.integers(0, 2, (9, 13)).astype(bool)
    got = load_image(pillow_bytes(Image.fromarray(bits), "TIFF"), "b.tif").pixels
    assert got.dtype == np.uint8 and np.array_equal(got, np.where(bits, 255, 0))


def test_tiff_extra_samples_beyond_rgba_are_bands_and_premultiplied_alpha_is_undone():
    five = RNG.integers(0, 256, (8, 8, 5), dtype=np.uint8)  # 8-bit multispectral: every sample kept, in order
    got = load_image(tiff_bytes(five, photometric="rgb", extrasamples=["unassalpha", "unspecified"]), "x.tif")
    assert np.array_equal(got.pixels, five) and got.is_raster
    rgba = np.dstack([rgb(8, 8), np.full((8, 8), 128, np.uint8)])
    premultiplied = rgba.copy()
    premultiplied[..., :3] = rgba[..., :3] // 2
    got = load_image(tiff_bytes(premultiplied, photometric="rgb", extrasamples=["assocalpha"]), "a.tif").pixels
    expected = np.asarray(Image.fromarray(premultiplied, "RGBa").convert("RGBA"))
    assert np.array_equal(got, expected)


def test_multi_page_tiff_is_refused_but_overviews_are_not_pages():
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as w:
        for _ in range(3):
            w.write(rgb(8, 8), photometric="rgb")
    with refused(r"stack\.tif: 3 pages; only single-image files are archived.*not supported"):
        load_image(buf.getvalue(), "stack.tif")
    full = rgb(16, 16)
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as w:  # a cloud-optimised GeoTIFF's layout: full image, then a reduced copy
        w.write(full, photometric="rgb")
        w.write(full[::2, ::2], photometric="rgb", subfiletype=1)
    assert np.array_equal(load_image(buf.getvalue(), "cog.tif").pixels, full)


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG", "MPO"])
def test_animated_and_multi_image_files_are_refused(fmt):
    frames = [Image.fromarray(rgb(16, 16)) for _ in range(3)]
    data = pillow_bytes(frames[0], fmt, save_all=True, append_images=frames[1:])
    with Image.open(io.BytesIO(data)) as im:
        assert im.n_frames == 3
    with refused(r"anim: 3 (frames|pages); only single-image files are archived.*not supported"):
        load_image(data, "anim")


def test_refusals_and_damage_are_told_apart():
    good = pillow_bytes(Image.fromarray(rgb()))
    for data, name in ((b"", "zero.png"), (good[: len(good) // 2], "cut.png"), (b"text, not an image", "t.png")):
        with pytest.raises(UnsupportedImageError) as err:
            load_image(data, name)
        assert name in str(err.value) and "not supported" not in str(err.value)
        assert not isinstance(err.value, ImageTooLargeError)


# --- item 3: decompression bombs --------------------------------------------------------------
def test_pillows_own_bomb_limit_does_not_fire_below_ours(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # as if the image were over Pillow's 179 MP
    arr = rgb(100, 100)
    for fmt in ("PNG", "TIFF", "GIF"):
        data = pillow_bytes(Image.fromarray(arr).convert("P") if fmt == "GIF" else Image.fromarray(arr), fmt)
        assert load_image(data, f"ok.{fmt}").pixels.shape[:2] == (100, 100)
        with pytest.raises(ImageTooLargeError, match=r"big: 100×100 = 10000 pixels exceeds the limit of 5000"):
            load_image(data, "big", max_pixels=5000)
    assert Image.MAX_IMAGE_PIXELS == 1000  # Pillow's setting is left as it was


def test_cli_encodes_an_image_over_pillows_bomb_limit_instead_of_a_traceback(monkeypatch, tmp_path, capsys):
    from codec import cli

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    src = tmp_path / "a.png"
    src.write_bytes(pillow_bytes(Image.fromarray(rgb(64, 64))))
    assert cli.main(["encode", str(src), str(tmp_path / "a.tlic"), "--quality", "0.5"]) == 0
    assert "a.tlic" in capsys.readouterr().out


def test_png_over_the_limit_is_refused_from_its_header_without_decoding():
    w = h = 15_000  # 225 MP of zeros in about 200 kB: over Pillow's 179 MP bomb error, under ours
    data = png_raw(w, h, 8, 0, (bytes(w) for _ in range(h)))
    assert len(data) < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLargeError, match="225000000 pixels exceeds the limit of 200000000"):
            load_image(data, "bomb.png", max_pixels=200_000_000)
        with pytest.raises(ImageTooLargeError, match=r"working set"):
            load_image(data, "bomb.png", max_bytes=1 << 30)
        assert tracemalloc.get_traced_memory()[1] < 20 << 20
    finally:
        tracemalloc.stop()


# --- item 4: memory budget --------------------------------------------------------------------
def test_working_set_estimate_uses_the_measured_constants():
    assert CODEC_PEAK_BYTES_PER_PIXEL == {1: 20, 3: 6, 4: 13}
    assert working_set_bytes(100, 10, 1) == 1000 * (20 + 1)
    assert working_set_bytes(100, 10, 3) == 1000 * (6 + 4)
    assert working_set_bytes(100, 10, 4) == working_set_bytes(100, 10, 2) == 1000 * (13 + 4)
    assert working_set_bytes(100, 10, 3, bytes_per_sample=2) == 1000 * (6 + 8)
    # rasters: three copies of the samples and a byte of nodata mask per pixel
    assert working_set_bytes(100, 10, 10, bytes_per_sample=2) == 1000 * (3 * 10 * 2 + 1)
    assert working_set_bytes(100, 10, 3, bytes_per_sample=2, raster=True) == 1000 * (3 * 3 * 2 + 1)
    with pytest.raises(ValueError):
        working_set_bytes(1, 1, 0)


def test_sparse_tiff_is_refused_from_its_header_before_tifffile_allocates():
    data = sparse_tiff(16384, 16384)  # 122 bytes on disk, 268 MB of pixels
    assert len(data) < 200
    tracemalloc.start()
    try:
        with pytest.raises(ImageTooLargeError, match="16384×16384"):
            load_image(data, "sparse.tif", max_pixels=10**6)
        estimate = working_set_bytes(16384, 16384, 1)
        with pytest.raises(ImageTooLargeError, match=rf"sparse\.tif: .*working set of {estimate} bytes.*limit of 100000000"):
            load_image(data, "sparse.tif", max_bytes=10**8)
        assert tracemalloc.get_traced_memory()[1] < 5 << 20
    finally:
        tracemalloc.stop()
    small = sparse_tiff(64, 32)
    assert np.array_equal(load_image(small, "s.tif", max_bytes=10**6).pixels, np.zeros((32, 64), np.uint8))


# --- item 5: EXIF orientation and ICC profile are carried, pixels are not rotated --------------
def _srgb() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_jpeg_icc_profile_and_exif_orientation_are_carried_and_pixels_kept_as_stored():
    icc, exif = _srgb(), Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    arr = rgb(20, 36)
    data = pillow_bytes(Image.fromarray(arr), "JPEG", quality=95, icc_profile=icc, exif=exif.tobytes())
    img = load_image(data, "photo.jpg")
    assert img.pixels.shape == (20, 36, 3)  # the stored grid, not rotated
    assert img.icc_profile == icc
    assert img.exif.startswith(b"Exif\x00\x00")
    carried = Image.Exif()
    carried.load(img.exif)
    assert carried[0x0112] == 6


def test_png_and_webp_icc_and_exif_are_carried_and_tiff_orientation_too():
    icc, exif = _srgb(), Image.Exif()
    exif[0x0112] = 3
    for fmt in ("PNG", "WEBP"):
        img = load_image(pillow_bytes(Image.fromarray(rgb()), fmt, icc_profile=icc, exif=exif.tobytes()), "x")
        assert img.icc_profile == icc and img.exif.startswith(b"Exif\x00\x00")
        carried = Image.Exif()
        carried.load(img.exif)
        assert carried[0x0112] == 3, fmt
    img = load_image(tiff_bytes(rgb(), photometric="rgb", iccprofile=icc, extratags=[(274, "H", 1, 8, False)]), "o.tif")
    assert img.icc_profile == icc
    carried = Image.Exif()
    carried.load(img.exif)
    assert carried[0x0112] == 8


# --- item 6: the HTML report never decodes a whole large image ---------------------------------
def test_report_bit_allocation_decodes_only_a_bounded_region(monkeypatch):
    import codec
    from pipeline import report_html

    arr = rgb(200, 330)
    data = codec.encode(arr, quality=0.3, tile_size=64).data
    decoded = []
    real_region = codec.api.decode_region

    def spy(data, box, *a, **kw):
        decoded.append(box[2] * box[3])
        return real_region(data, box, *a, **kw)

    monkeypatch.setattr(codec.api, "decode_region", spy)
    monkeypatch.setattr(codec, "decode_region", spy)
    monkeypatch.setattr(report_html, "PREVIEW_MAX_PIXELS", 128 * 128, raising=False)
    html = report_html.bit_allocation_plot("s3://b/big.png", {"bitstream": data})
    assert 'id="bit-allocation"' in html and decoded and max(decoded) <= 128 * 128
    decoded.clear()
    monkeypatch.setattr(report_html, "PREVIEW_MAX_PIXELS", 10**6)  # small enough: shown whole
    report_html.bit_allocation_plot("s3://b/big.png", {"bitstream": data})
    assert decoded == [200 * 330]


def test_16_bit_ppm_that_pillow_would_rescale_to_8_bits_is_refused():
    arr = RNG.integers(0, 1024, (4, 5, 3), dtype=np.uint16)
    with Image.open(io.BytesIO(b"P6 5 4 1023\n" + arr.astype(">u2").tobytes())) as im:
        assert im.mode == "RGB"  # Pillow's reading: rescaled to 8 bits, silently
    with refused(r"deep\.ppm: 10-bit \(maxval 1023\) PPM is not supported"):
        load_image(b"P6 5 4 1023\n" + arr.astype(">u2").tobytes(), "deep.ppm")
    eight = arr.astype(np.uint8)
    assert np.array_equal(load_image(b"P6 5 4 255\n" + eight.tobytes(), "ok.ppm").pixels, eight)
