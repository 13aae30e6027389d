"""Is the learned reconstruction worth it as the near-lossless coder's prediction? (issue 23 item 4)

    python bench/nearlossless_prediction.py [N]     # N even CIL train tiles (never evaluated), default 8

Per 256² tile and E in 1, 2, 4, 8: the prediction-free methods of codec.tilecoders.nearlossless (GRID: grid
indices through JPEG XL lossless per band; JOINT: the same as one colour image; JPEG-LS near-lossless; "best":
the coder's own pick, encode_within), against the learned tile at quality 0.25/0.5/0.75/1 (its bytes less ~200
header bytes) plus its residual quantised with step 2E+1, the indices coded by JPEG XL lossless as one colour
image ("pred+jxl") or at their order-0 entropy ("pred+H0", a context-free lower bound); the best quality per
tile and E is kept. Every reconstruction is checked within ±E. Writes
bench/results/nearlossless_prediction.log.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import codec  # noqa: E402
from codec.images.imageio import read_image  # noqa: E402
from codec.tilecoders import TileContext, nearlossless as nl  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "aerial" / "train" / "cil_roads"
BOUNDS = (1, 2, 4, 8)
QUALITIES = (0.25, 0.5, 0.75, 1.0)


def order0_bytes(q: np.ndarray) -> float:
    total = 0.0
    for b in range(q.shape[2]):
        _, c = np.unique(q[..., b], return_counts=True)
        total += -(c * np.log2(c / c.sum())).sum() / 8
    return total


def predicted(tile: np.ndarray, pred: np.ndarray, e: int) -> tuple[int, float]:
    """(JPEG XL bytes, order-0 bytes) of the residual of ``tile`` around ``pred`` quantised with step 2e+1."""
    res = tile.astype(np.int64) - pred.astype(np.int64)
    q = np.sign(res) * ((np.abs(res) + e) // (2 * e + 1))
    assert np.abs(np.clip(pred + q * (2 * e + 1), 0, 255) - tile).max() <= e
    off = q - q.min()
    return len(nl._jxl_joint(off.astype(np.uint8 if off.max() < 256 else np.uint16))), order0_bytes(q)


def main(n: int) -> None:
    files = sorted(DATA.glob("*.png"))[0::2][:n]
    if not files:
        print(f"no tiles under {DATA}: skipped")
        return
    lines, sums = [], {e: np.zeros(6) for e in BOUNDS}
    for f in files:
        tile = np.ascontiguousarray(read_image(f)[:256, :256, :3])
        ctx = TileContext(256, 256, 3, "uint8")
        preds = [(len(r.data) - 200, codec.decode(r.data)) for r in (codec.encode(tile, quality=q) for q in QUALITIES)]
        for e in BOUNDS:
            grid = len(nl.encode_method(tile, ctx, e, nl.GRID))
            joint = len(nl.encode_method(tile, ctx, e, nl.GRID_JOINT))
            jls = len(nl.encode_method(tile, ctx, e, nl.JPEGLS))
            best = len(nl.encode_within(tile, ctx, e).payload)
            both = [(lb + j, lb + h) for lb, p in preds for j, h in [predicted(tile, p, e)]]
            pj, ph = min(b[0] for b in both), min(b[1] for b in both)
            sums[e] += [grid, joint, jls, best, pj, ph]
            lines.append(f"{f.name} E={e}: grid {grid} joint {joint} jpegls {jls} best {best} pred+jxl {pj} "
                         f"pred+H0 {ph:.0f}")
            print(lines[-1], flush=True)
    for e in BOUNDS:
        g, jt, j, b, pj, ph = sums[e]
        lines.append(f"E={e}: bytes vs the coder's pick (best): pred+jxl {pj / b:.3f}, pred+H0 {ph / b:.3f}; "
                     f"grid {g / b:.3f}, joint {jt / b:.3f}, JPEG-LS {j / b:.3f}")
        print(lines[-1])
    out = Path(__file__).resolve().parent / "results" / "nearlossless_prediction.log"
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8)
