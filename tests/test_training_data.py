"""The one random-crop sampler (codec.training.data) and the shape of the training code."""

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from codec.training.data import crop_batch, random_crop, to_tensor


def coordinates(h: int, w: int, tag: int = 7) -> np.ndarray:
    """An image whose pixels say where they are and which image they are: (row, column, tag)."""
    yy, xx = np.mgrid[:h, :w]
    return np.stack([yy, xx, np.full_like(yy, tag)], axis=-1).astype(np.uint8)


def orientation(c: np.ndarray) -> tuple[bool, bool]:
    """(mirrored left-right, upside-down) of a crop of :func:`coordinates`."""
    return bool(c[0, 0, 1] > c[0, -1, 1]), bool(c[0, 0, 0] > c[-1, 0, 0])


def test_a_crop_is_a_window_of_the_image_in_one_of_four_orientations():
    im, seen = coordinates(50, 70), set()
    rng = np.random.default_rng(0)
    for _ in range(200):
        c = random_crop(im, 16, rng)
        assert c.shape == (16, 16, 3)
        lr, ud = orientation(c)
        seen.add((lr, ud))
        w = c[::-1 if ud else 1, ::-1 if lr else 1]
        y, x = int(w[0, 0, 0]), int(w[0, 0, 1])
        assert np.array_equal(w, im[y : y + 16, x : x + 16])
    assert seen == {(False, False), (True, False), (False, True), (True, True)}


def test_without_flips_crops_keep_their_orientation():
    rng = np.random.default_rng(1)
    assert all(orientation(random_crop(coordinates(40, 40), 8, rng, flip=False)) == (False, False) for _ in range(50))


def test_the_draw_order_is_top_left_then_the_two_flips():
    """The order every caller's numbers depend on (training, calibration, the Ray job's crops)."""
    im = coordinates(30, 40)
    c = random_crop(im, 10, np.random.default_rng(5))
    rng = np.random.default_rng(5)
    y, x = rng.integers(21), rng.integers(31)
    want = im[y : y + 10, x : x + 10]
    want = want[:, ::-1] if rng.random() < 0.5 else want
    want = want[::-1] if rng.random() < 0.5 else want
    assert np.array_equal(c, want)


def test_batches_are_deterministic_per_seed_and_skip_small_images():
    images = [coordinates(40, 60, tag=1), coordinates(10, 10, tag=2), coordinates(64, 33, tag=3)]
    a = crop_batch(images, 12, 24, np.random.default_rng(3))
    assert a.shape == (12, 24, 24, 3) and a.dtype == np.uint8
    assert np.array_equal(a, crop_batch(images, 12, 24, np.random.default_rng(3)))
    assert not np.array_equal(a, crop_batch(images, 12, 24, np.random.default_rng(4)))
    assert {int(t) for t in np.unique(a[..., 2])} == {1, 3}  # never the 10×10 image; both others
    with pytest.raises(ValueError, match="at least 24"):
        crop_batch([coordinates(10, 10)], 2, 24, np.random.default_rng(0))
    with pytest.raises(ValueError, match="does not fit"):
        random_crop(coordinates(10, 30), 24, np.random.default_rng(0))


def test_to_tensor_is_channels_first_in_unit_range():
    x = to_tensor(crop_batch([coordinates(40, 40)], 3, 16, np.random.default_rng(0)))
    assert x.shape == (3, 3, 16, 16) and x.dtype == torch.float32
    assert torch.all(x[:, 2] == 7 / 255)


FILES = [Path(__file__).parents[1] / "codec" / p for p in
         ("training/data.py", "training/train.py", "training/export.py", "training/evaluate.py", "registry.py")]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_functions_stay_short(path):
    long = [f"{n.name} ({n.end_lineno - n.lineno + 1} lines)" for n in ast.walk(ast.parse(path.read_text()))
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 60]
    assert not long, f"{path.name}: functions over 60 lines: {', '.join(long)}"
