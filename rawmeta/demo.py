"""`make demo`: encode and decode one sample raw, print bytes, bpp and PSNR.

Uses the shared Nikon crop when ../shared/data is there, else a generated scene.
Everything goes to ./demo_out/.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from rawmeta import raw as rawio
from rawmeta.metrics import psnr
from rawmeta.evaluate import SHARED_RAW
from rawmeta.srgb import render_jpeg
from rawmeta.synthetic import make_sample

SHARED = SHARED_RAW / "Nikon_DSC1339_crop.dng"


def main() -> int:
    out = Path("demo_out")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    if SHARED.exists():
        dng, jpg = SHARED.resolve(), out / "sample.jpg"
        render_jpeg(dng, jpg, quality=95)
        print(f"sample: {dng} (rendered with LibRaw to {jpg}, JPEG q95)")
    else:
        dng, jpg = make_sample(out, "sample", h=768, w=1024, seed=7)
        print(f"sample: generated scene {dng} (no ../shared/data here)")
    rebuilt = out / "sample_rec.dng"
    for cmd in (["encode", str(dng), str(jpg)], ["info", str(jpg)], ["decode", str(jpg), "-o", str(rebuilt)]):
        print("$ rawmeta " + " ".join(cmd), flush=True)
        subprocess.run([sys.executable, "-m", "rawmeta.cli.main", *cmd], check=True)
    a, b = rawio.read_raw(dng), rawio.read_raw(rebuilt)
    pixels = np.asarray(a.mosaic.shape).prod()
    quality = psnr(rawio.normalized_mosaic(a.mosaic, a.meta), rawio.normalized_mosaic(b.mosaic, a.meta))
    print(f"rebuilt DNG read back by LibRaw: PSNR {quality:.2f} dB over {pixels} "
          f"raw pixels; JPEG now {jpg.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
