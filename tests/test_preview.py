"""Report previews of rasters: bands picked by name, stretched per band, nodata marked (issue 27 item 3)."""

import numpy as np

from pipeline.preview import NODATA_RGB, display_rgb, pick_bands, stretch


def test_bands_are_picked_by_their_names_else_the_first_three():
    assert pick_bands(4, ("B02", "B03", "B04", "B08")) == [2, 1, 0]  # Sentinel-2 blue, green, red
    assert pick_bands(3, ("Blue", "Green", "Red")) == [2, 1, 0]
    assert pick_bands(7, ("coastal", "B2", "B3", "B4", "B5", "B6", "B7")) == [3, 2, 1]  # Landsat 8
    assert pick_bands(5, ("a", "b", "c", "d", "e")) == [0, 1, 2]
    assert pick_bands(5) == [0, 1, 2] and pick_bands(1) == [0] and pick_bands(2) == [0]


def test_a_16_bit_raster_is_stretched_not_saturated_and_nodata_is_marked():
    rng = np.random.default_rng(0)
    px = rng.integers(1000, 23277, (40, 50, 4)).astype(np.uint16)
    px[:5, :7] = 0  # nodata corner
    out = display_rgb(px, nodata=0, band_names=("B02", "B03", "B04", "B08"))
    assert out.shape == (40, 50, 3) and out.dtype == np.uint8
    assert (out[:5, :7] == NODATA_RGB).all()
    body = out[5:]
    assert 80 < body.mean() < 175 and (body == 255).mean() < 0.05  # spread over the range, not clipped white
    # red shown from B04 (index 2): its stretch is that band's
    assert np.array_equal(out[10:, 10:, 0], stretch(px[..., 2], px.any(-1))[10:, 10:])


def test_photos_show_as_they_are_and_one_band_as_gray():
    rgb = np.random.default_rng(1).integers(0, 256, (8, 9, 3)).astype(np.uint8)
    assert np.array_equal(display_rgb(rgb), rgb)
    one = np.random.default_rng(2).integers(0, 4000, (8, 9)).astype(np.uint16)
    g = display_rgb(one)
    assert g.shape == (8, 9, 3) and np.array_equal(g[..., 0], g[..., 2])


def test_the_bit_allocation_figure_of_a_raster_record_renders():
    import codec
    from pipeline.report_html import bit_allocation_plot

    px = np.random.default_rng(3).integers(100, 3000, (70, 90, 4)).astype(np.uint16)
    px[:10, :10] = 0
    data = codec.encode(px, None, quality=0.3, tile_size=64, nodata=0, band_names=("B02", "B03", "B04", "B08")).data
    part = bit_allocation_plot("s3://raw/scene.tif", {"bitstream": data})
    assert 'id="bit-allocation"' in part and "data:image/png;base64," in part
