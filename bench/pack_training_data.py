#!/usr/bin/env python3
"""Pack ../shared/data/train-natural for the GPU machine under the 64 MiB tree limit:
JPEG sources are copied byte for byte, lossless ones re-encoded as JPEG q92 4:4:4 (about 42 dB: far above the rates trained for)."""
import shutil, sys
from pathlib import Path
from PIL import Image
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
q = int(sys.argv[3]) if len(sys.argv) > 3 else 92
total = 0
for p in sorted(src.rglob("*")):
    if p.suffix.lower() not in {".png", ".jpg", ".jpeg"}:
        continue
    out = dst / p.relative_to(src)
    out.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix.lower() in {".jpg", ".jpeg"}:
        shutil.copy(p, out)
    else:
        out = out.with_suffix(".jpg")
        Image.open(p).convert("RGB").save(out, quality=q, subsampling=0)
    total += out.stat().st_size
print(f"{total/2**20:.1f} MiB")
