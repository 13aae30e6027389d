"""Satellite training data: the held-out split of satellite/train and normalised band-triplet crops.

One home for two decisions that training, export calibration and ``bench/satellite_rd.py`` share:

* **Which files are held out.** A file is held out when its *scene* hashes into the held-out
  quarter (``sha1(scene_id) % 4 == 0``), so the bands and resolutions of one scene never sit on
  both sides. :func:`scene_id` drops band-group / resolution suffixes (``_10m``, ``_20m``,
  ``_60m``, ``_B1``…), keeps the ``1/2/3`` of ``mosaic_cog1..3`` and ``ms1..3``/``pan1..3`` as
  separate scenes, but makes ``panN`` and ``msN`` (same N: the same WorldView tile) one scene.
  On the 32 files of satellite/train this holds out 7 (5 scenes): Landsat ``mosaic_cog3`` and
  ``LC81390452014295LGN00_B5`` (both with nodata corners), the Sentinel-2 ``T29RKH`` tile (10, 20
  and 60 m) and the WorldView ``pan1``/``ms1`` pair — at least one scene of each sensor.

* **What the model sees.** Exactly what the codec feeds it, by calling the codec's one home of the
  band coding, :mod:`codec.format.raster`: each band mapped linearly to [0, 1] with the min and max of its
  *valid* pixels (a pixel is nodata when all its bands equal the nodata value, 0 here), bands in
  consecutive triplets, a last group of 1–2 bands padded by repeating its last band, nodata
  filled smoothly (push-pull) so it is cheap to code.

Crops are 256² (the size the aerial model was fine-tuned on), cut by the project's one sampler
(:func:`codec.training.data.random_crop`) and rejected when more than half is nodata. Files smaller
than a crop (the BigEarthNet patches: 120², 60², 20², well under 1 % of the pixels) are skipped
rather than upsampled, which would teach the model textures no sensor produces.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Sequence

import numpy as np

from codec.families.hyperprior import bands as model_bands
from codec.format import raster as bands
from codec.training.data import random_crop

NODATA = 0  # satellite/train's nodata value (its PROVENANCE.md)
HELD_OUT_QUARTER = 4  # sha1(scene id) % 4 == 0 → held out
MAX_NODATA_FRACTION = 0.5  # a training crop with more nodata than this is drawn again
SUFFIXES = (".tif", ".tiff")

_BAND_SUFFIX = re.compile(r"_(?:\d+m|B\d+A?)$")  # _10m/_20m/_60m, _B1/_B3/_B5/_B8A
_PAN_MS = re.compile(r"__(?:pan|ms)(\d+)$")  # WorldView panN and msN: one scene


def scene_id(name: str | PurePath) -> str:
    """The scene a satellite/train file belongs to (its name without extension and band/resolution
    suffix; ``panN``/``msN`` → ``panmsN``)."""
    stem = PurePath(name).name
    for suffix in SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    stem = _BAND_SUFFIX.sub("", stem)
    return _PAN_MS.sub(r"__panms\1", stem)


def held_out(name: str | PurePath) -> bool:
    """True when the file's scene is in the held-out quarter: training never reads it, the bench only it."""
    return int(hashlib.sha1(scene_id(name).encode()).hexdigest(), 16) % HELD_OUT_QUARTER == 0


def list_rasters(root: Path) -> list[Path]:
    """The TIFFs under ``root``, sorted."""
    files = [p for p in sorted(Path(root).rglob("*")) if p.suffix.lower() in SUFFIXES]
    if not files:
        raise ValueError(f"no TIFF rasters under {root}")
    return files


def split(root: Path) -> tuple[list[Path], list[Path]]:
    """(training files, held-out files) of a satellite folder."""
    files = list_rasters(root)
    return [p for p in files if not held_out(p)], [p for p in files if held_out(p)]


def read_raster(path: Path) -> np.ndarray:
    """A raster as (H, W, B) with its own dtype: tifffile gives (H, W) for one band, (H, W, B) for
    pixel-interleaved files and (B, H, W) for planar ones (moved to the back)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        a = page.asarray()
        planar = page.planarconfig == tifffile.PLANARCONFIG.SEPARATE and a.ndim == 3
    if a.ndim == 2:
        return a[:, :, None]
    if planar:
        return np.moveaxis(a, 0, -1)
    if a.ndim != 3:
        raise ValueError(f"{path}: expected a 2-D or 3-D raster, got shape {a.shape}")
    return a


def valid_mask(raster: np.ndarray, nodata: int | None = NODATA) -> np.ndarray:
    """(H, W) bool: a pixel is valid unless all its bands equal ``nodata`` (:func:`codec.format.raster.valid_mask`)."""
    valid = bands.valid_mask(raster, nodata)
    return np.ones(raster.shape[:2], bool) if valid is None else valid


def band_groups(n_bands: int) -> list[tuple[int, ...]]:
    """The codec's band groups (:func:`codec.format.raster.band_groups`): consecutive triplets, a short last one padded."""
    return [tuple(g) for g in bands.band_groups(n_bands)]


def normalised_groups(raster: np.ndarray, nodata: int | None = NODATA) -> tuple[list[np.ndarray], np.ndarray]:
    """(one float32 (H, W, 3) image in [0, 1] per band group, the (H, W) valid mask): what the codec feeds
    the model (:func:`codec.format.raster.describe` and :func:`codec.families.hyperprior.bands.normalised`, the raster taken as one tile)."""
    h, w, _ = raster.shape
    # the pixel rule: training crops and weights are per pixel (as the models were trained; issue 26 left it)
    info, (valid,) = bands.describe(raster, [(0, 0, w, h)], nodata=nodata, nodata_mode="pixel")
    images = [model_bands.normalised(raster, info, g, valid) for g in info.groups]
    return images, (np.ones((h, w), bool) if valid is None else valid)


@dataclass
class TripletImage:
    """One band triplet of one training raster, with its validity as a 4th channel (so one crop cuts both)."""

    source: str
    bands: tuple[int, int, int]
    data: np.ndarray  # (H, W, 4) float32: three normalised bands + valid (1.0/0.0)


def load_triplets(files: Sequence[Path], min_size: int) -> list[TripletImage]:
    """Every band triplet of every file at least ``min_size`` on each side; held-out files are refused."""
    bad = [str(p) for p in files if held_out(p)]
    if bad:
        raise ValueError(f"held-out satellite files must not be trained on: {', '.join(bad)}")
    out = []
    for path in files:
        raster = read_raster(path)
        if min(raster.shape[:2]) < min_size:
            continue
        images, valid = normalised_groups(raster)
        for g, im in zip(band_groups(raster.shape[2]), images):
            out.append(TripletImage(path.name, g, np.concatenate([im, valid.astype(np.float32)[:, :, None]], axis=2)))
    if not out:
        raise ValueError(f"no satellite training raster is at least {min_size}×{min_size}")
    return out


def training_triplets(root: Path, min_size: int = 256) -> list[TripletImage]:
    """The non-held-out triplets of a satellite folder (what the model fine-tunes on)."""
    train_files, _ = split(root)
    return load_triplets(train_files, min_size)


def crop_batch(images: Sequence[TripletImage], n: int, size: int, rng: np.random.Generator,
               flip: bool = True, tries: int = 20) -> np.ndarray:
    """``n`` float32 crops (n, size, size, 3) in [0, 1], each from a triplet drawn uniformly (with
    replacement), with at most half nodata (drawn again up to ``tries`` times, then the most valid
    one is kept). Nodata inside a crop is already filled with the band's valid mean."""
    out = np.empty((n, size, size, 3), np.float32)
    for i in range(n):
        im = images[rng.integers(len(images))].data
        best, best_valid = None, -1.0
        for _ in range(tries):
            c = random_crop(im, size, rng, flip)
            frac = float(c[:, :, 3].mean())
            if frac > best_valid:
                best, best_valid = c, frac
            if 1.0 - frac <= MAX_NODATA_FRACTION:
                break
        out[i] = best[:, :, :3]
    return out


def to_tensor(crops: np.ndarray):
    """float crops (N, H, W, 3) → tensor (N, 3, H, W), what the model trains on."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).contiguous()


def calibration_batch(root: Path, n: int = 16, size: int = 256, seed: int = 0):
    """Training triplet crops (unflipped, mostly valid) that set a satellite model's integer
    hyper-synthesis ranges at export: never a held-out scene (:func:`codec.training.export.calibration_batch`'s
    counterpart for rasters)."""
    return to_tensor(crop_batch(training_triplets(root, size), n, size, np.random.default_rng(seed), flip=False))
