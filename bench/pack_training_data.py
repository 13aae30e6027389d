#!/usr/bin/env python3
"""Pack training folders for the GPU machine under the device tool's 64 MiB tree limit.

    python bench/pack_training_data.py ../shared/data/train-natural .gpu/data [QUALITY]

JPEG sources are copied byte for byte; every other image (``codec.training.data.list_images``,
which also refuses Kodak) is re-encoded as JPEG 4:4:4 at QUALITY (default 92, about
42 dB: far above the rates trained for).
"""

import shutil
import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from codec.training.data import list_images  # noqa: E402

src, dst = Path(sys.argv[1]), Path(sys.argv[2])
quality = int(sys.argv[3]) if len(sys.argv) > 3 else 92
total = 0
for p in list_images([src]):
    out = (dst / p.relative_to(src)).with_suffix(".jpg")
    out.parent.mkdir(parents=True, exist_ok=True)
    if p.suffix.lower() in {".jpg", ".jpeg"}:
        shutil.copy(p, out)
    else:
        Image.open(p).convert("RGB").save(out, quality=quality, subsampling=0)
    total += out.stat().st_size
print(f"{total / 2**20:.1f} MiB")
