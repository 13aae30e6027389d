"""Where restored images go: never outside the output root, never two keys on one file."""

import pytest

from pipeline.restore import UnsafeKeyError, output_name, output_names


@pytest.mark.parametrize("key", ["s3://raw/../../x.png", "/../etc/passwd", "s3://raw/a/../../../x.tif", "s3://..",
                                 "..\\..\\x.png"])
def test_keys_that_climb_above_the_root_are_refused(key):
    with pytest.raises(UnsafeKeyError, match="output root|no file name"):
        output_name(key, "png")


def test_names_are_normalised_inside_the_root():
    assert output_name("s3://raw/a/./b/../x.png", "png") == "raw/a/x.png"
    assert output_name("s3://raw//a/x.JPG", "png") == "raw/a/x.JPG.png"
    assert output_name("/data/scene.tiff", "tiff") == "data/scene.tiff"


def test_distinct_keys_get_distinct_outputs():
    keys = ["s3://raw/x.png", "s3://raw/x.jpg", "/raw/x.png", "gs://raw/x.png", "s3://raw/x.jpg.png", "s3://raw/y"]
    names = output_names(keys, ["png"] * len(keys))
    assert len(set(names)) == len(keys), names
    assert names[0] == "raw/x.png" and names[1].startswith("raw/x.jpg~") and names[5] == "raw/y.png"
    assert all(n.endswith(".png") for n in names)


def test_unsafe_keys_come_back_as_errors_not_names():
    names = output_names(["s3://raw/../../x.png", "s3://raw/ok.png"], ["png", "png"])
    assert isinstance(names[0], UnsafeKeyError) and names[1] == "raw/ok.png"


def test_restored_files_carry_the_sources_icc_profile_and_orientation(tmp_path):
    import io

    import fsspec
    import numpy as np
    from PIL import Image, ImageCms

    import codec
    from pipeline.stages.restore import restore_record

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    exif = Image.Exif()
    exif[274] = 8
    pixels = np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    record = {"key": "s3://raw/x.jpg", "model_id": "default@2", "geo": None, "icc_profile": icc,
              "exif": exif.tobytes(), "bitstream": codec.encode(pixels, quality=0.5).data}
    fs = fsspec.filesystem("file")
    for fmt in ("png", "tiff"):
        out = str(tmp_path / f"x.{fmt}")
        row = restore_record(record, fs, out, fmt=fmt)
        assert row["status"] == "ok", row
        with Image.open(io.BytesIO(open(out, "rb").read())) as im:
            assert im.info.get("icc_profile") == icc
            assert im.getexif().get(274) == 8
        if fmt == "png":  # (Pillow reports a TIFF's size already transposed for orientations 5–8)
            assert Image.open(out).size == (96, 64)
        else:
            import tifffile

            assert tifffile.imread(out).shape == (64, 96, 3)
