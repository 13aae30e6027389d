"""Issue 22: the ground floor and the format import no torch; THE raster rule decides model choice too."""

import subprocess
import sys

import numpy as np

from codec.format.raster import is_raster


def test_reading_a_header_imports_no_torch():
    code = ("import sys, codec, codec.format.container as c, codec.options, codec.results, codec.tilecoders, codec.families\n"
            "data = open('tests/data/golden/v1-rgb-quality-t64.tlic','rb').read()\n"
            "h = codec.format.container.read_header(data); assert h.width == 160\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_the_raster_rule():
    assert not is_raster("uint8", 3) and not is_raster("uint8", 1) and not is_raster("uint8", 4)
    assert is_raster("uint16", 3) and is_raster("uint8", 2)
    assert is_raster("uint8", 3, band_names=("r", "g", "b")) and is_raster("uint8", 3, lossless=True)
    assert is_raster("uint8", 3, nodata=0) and is_raster("uint8", 3, bit_depth=6)


def test_model_choice_follows_the_rule_for_named_bands_and_lossless():
    """The bug of issue 22: an 8-bit RGB GeoTIFF with band descriptions, or a --lossless run, got the photo model."""
    from codec.images.imageio import LoadedImage

    rgb = np.zeros((8, 8, 3), np.uint8)
    assert LoadedImage(rgb, band_names=("r", "g", "b")).is_raster
    assert LoadedImage(rgb).codes_as_raster(lossless=True) and not LoadedImage(rgb).is_raster
