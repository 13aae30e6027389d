"""Golden corpus: small deterministic inputs encoded in every mode main supported, so that byte identity of
the encoder and bit identity of the decoder can be proven across refactors (tests/test_golden.py).

    python tests/golden/make_golden.py              # (re)writes tests/data/golden/*.tlic and golden.json
    python tests/golden/make_golden.py --add-psnr   # adds each decode's PSNR to golden.json, hashes untouched

Inputs are generated from a seed (no files), so the test can re-encode them. Each case records the sha256
of its stream, of its full decode and of one region decode.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "data" / "golden"
MODELS = {"photo": "default@2", "raster": "satellite@1", "minnen": "minnen2018@1"}


def make_input(seed: int, h: int, w: int, bands: int, dtype: str, nodata: int | None = None,
               clean_left: bool = False) -> np.ndarray:
    """A smooth, textured (h, w, bands) array (2-D for bands 0): sinusoids plus a little noise, seeded;
    ``clean_left``: no noise in the left half (easy tiles beside hard ones)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    top = 255 if dtype == "uint8" else 4095
    planes = []
    for _ in range(max(bands, 1)):
        fx, fy, ph = rng.uniform(0.02, 0.15, 2).tolist() + [rng.uniform(0, 6.28)]
        p = 0.5 + 0.3 * np.sin(fx * xx + ph) * np.cos(fy * yy) + 0.1 * np.sin(0.4 * xx * fy + yy * fx)
        noise = rng.normal(0, 0.03, (h, w))
        if clean_left:
            noise[:, : w // 2] = 0
        p += noise
        planes.append(np.clip(p, 0, 1) * top)
    out = np.rint(np.stack(planes, -1)).astype(dtype)
    if nodata is not None:
        out[: h // 3, : w // 4] = nodata  # a corner of nodata in every band
        out[out == nodata] = nodata
    return out[..., 0] if bands == 0 else out


# name: (input spec, encode kwargs, model key, region box)
CASES = {
    "v1-rgb-quality-t64": (dict(seed=1, h=96, w=160, bands=3, dtype="uint8"), dict(quality=0.5, tile_size=64), "photo"),
    "v1-rgb-psnr-t64": (dict(seed=2, h=96, w=160, bands=3, dtype="uint8"), dict(target_psnr=34.0, tile_size=64), "photo"),
    "v1-rgb-bpp-t256": (dict(seed=3, h=130, w=70, bands=3, dtype="uint8"), dict(target_bpp=0.8, tile_size=256), "photo"),
    "v1-gray-quality-t64": (dict(seed=4, h=130, w=70, bands=0, dtype="uint8"), dict(quality=0.4, tile_size=64), "photo"),
    "v1-rgba-psnr-t64": (dict(seed=5, h=96, w=160, bands=4, dtype="uint8"), dict(target_psnr=32.0, tile_size=64), "photo"),
    "v2-u16-1band-nofallback": (dict(seed=6, h=130, w=70, bands=1, dtype="uint16"),
                                dict(target_psnr=40.0, tile_size=64, lossless_fallback=False), "raster"),
    "v2-u8-1band-quality": (dict(seed=22, h=96, w=160, bands=1, dtype="uint8"), dict(quality=0.5, tile_size=64), "raster"),
    "v2-u8-2band-psnr-t256": (dict(seed=23, h=130, w=70, bands=2, dtype="uint8"), dict(target_psnr=36.0, tile_size=256), "raster"),
    "v2-u16-2band-bpp": (dict(seed=7, h=96, w=160, bands=2, dtype="uint16"), dict(target_bpp=1.0, tile_size=64), "raster"),
    "v2-u16-3band-quality": (dict(seed=8, h=96, w=160, bands=3, dtype="uint16"), dict(quality=0.6, tile_size=64), "raster"),
    "v2-u16-4band-psnr": (dict(seed=9, h=130, w=70, bands=4, dtype="uint16"), dict(target_psnr=42.0, tile_size=64), "raster"),
    "v2-u16-10band-quality-t256": (dict(seed=10, h=96, w=160, bands=10, dtype="uint16"), dict(quality=0.5, tile_size=256), "raster"),
    "v2-u8-rgb-names": (dict(seed=11, h=96, w=160, bands=3, dtype="uint8"),
                        dict(quality=0.5, tile_size=64, band_names=["red", "green", "blue"]), "raster"),
    "v2-u16-3band-nodata": (dict(seed=12, h=96, w=160, bands=3, dtype="uint16", nodata=0),
                            dict(target_psnr=40.0, tile_size=64, nodata=0, nodata_mode="pixel"), "raster"),
    "v2-u8-rgb-nodata": (dict(seed=13, h=130, w=70, bands=3, dtype="uint8", nodata=255),
                         dict(quality=0.5, tile_size=64, nodata=255, nodata_mode="pixel"), "raster"),
    "v2-u16-3band-lossless": (dict(seed=14, h=96, w=160, bands=3, dtype="uint16"), dict(lossless=True, tile_size=64), "raster"),
    "v2-u8-rgb-lossless": (dict(seed=15, h=130, w=70, bands=3, dtype="uint8"), dict(lossless=True, tile_size=64), "raster"),
    "v2-u16-3band-fallback": (dict(seed=16, h=96, w=160, bands=3, dtype="uint16", clean_left=True),
                              dict(target_psnr=23.0, tile_size=64), "raster"),
    "v2-u16-5band-bitdepth12": (dict(seed=17, h=96, w=160, bands=5, dtype="uint16"), dict(quality=0.5, tile_size=64, bit_depth=12), "raster"),
    "minnen-rgb-quality": (dict(seed=18, h=96, w=160, bands=3, dtype="uint8"), dict(quality=0.3, tile_size=64), "minnen"),
    "minnen-rgb-psnr": (dict(seed=19, h=96, w=160, bands=3, dtype="uint8"), dict(target_psnr=30.0, tile_size=64), "minnen"),
    "minnen-gray-bpp": (dict(seed=20, h=130, w=70, bands=0, dtype="uint8"), dict(target_bpp=1.0, tile_size=64), "minnen"),
    "minnen-rgba-quality": (dict(seed=21, h=130, w=70, bands=4, dtype="uint8"), dict(quality=0.3, tile_size=64), "minnen"),
}


def region_of(h: int, w: int) -> tuple[int, int, int, int]:
    """A region crossing tile borders: (x, y, w, h)."""
    return (w // 3, h // 4, w // 2, h // 2)


def sha(a) -> str:
    if isinstance(a, np.ndarray):
        a = np.ascontiguousarray(a).tobytes() + repr((a.shape, str(a.dtype))).encode()
    return hashlib.sha256(bytes(a)).hexdigest()


def encode_case(name: str):
    import codec

    spec, kwargs, model = CASES[name]
    img = make_input(**spec)
    return img, codec.encode(img, codec.load_model(MODELS[model]), **kwargs).data


def decoded_psnr(img: np.ndarray, decoded: np.ndarray) -> float:
    """PSNR of a decode against its input over every sample, peak = the inputs' top (255 or 4095): what a
    decode on another CPU must match within a tolerance where its float synthesis moves a sample or two."""
    top = 255.0 if img.dtype == np.uint8 else 4095.0
    mse = float(np.mean((np.asarray(decoded, np.float64).reshape(img.shape) - img) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(top**2 / mse)


def add_psnr() -> None:
    """Add ``decoded_psnr``/``region_psnr`` to golden.json, leaving every hash as it is."""
    import codec

    path = OUT / "golden.json"
    record = json.loads(path.read_text())
    for name, rec in record.items():
        img = make_input(**CASES[name][0])
        data = (OUT / f"{name}.tlic").read_bytes()
        x, y, w, h = rec["region"]
        rec["decoded_psnr"] = decoded_psnr(img, codec.decode(data))
        rec["region_psnr"] = decoded_psnr(img[y : y + h, x : x + w], codec.decode_region(data, tuple(rec["region"])))
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


def main() -> None:
    import codec

    OUT.mkdir(parents=True, exist_ok=True)
    record = {}
    for name in CASES:
        img, data = encode_case(name)
        (OUT / f"{name}.tlic").write_bytes(data)
        h = codec.read_header(data)
        box = region_of(img.shape[0], img.shape[1])
        record[name] = {"stream": sha(data), "decoded": sha(codec.decode(data)), "region": list(box),
                        "region_decoded": sha(codec.decode_region(data, box)), "version": h.version,
                        "model_id": h.model_id, "bytes": len(data), "bytes_change": None}
        print(name, h.version, h.model_id, len(data), flush=True)
    (OUT / "golden.json").write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    sys.exit(add_psnr() if sys.argv[1:] == ["--add-psnr"] else main())
