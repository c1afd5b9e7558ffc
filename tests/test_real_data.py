"""The shared real raws (skipped without ../shared): LibRaw-rendered JPEG q95 -> encode -> DNG."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import shared_raw
from rawmeta import raw as rawio
from rawmeta.metrics import psnr
from rawmeta.srgb import render_jpeg


@pytest.mark.parametrize("name", ["Hero6_GOPR0024.dng", "Fusion_GPFR7066.dng", "Nikon_DSC1339_crop.dng"])
def test_prior_round_trip_on_real_raw(tmp_path, name):
    src = shared_raw(name)
    jpg, out = tmp_path / "x.jpg", tmp_path / "x_rec.dng"
    render_jpeg(src, jpg, quality=95)
    run = lambda *a: subprocess.run([sys.executable, "-m", "rawmeta.cli.main", *map(str, a)],  # noqa: E731
                                    capture_output=True, text=True)
    enc = run("encode", src, jpg, "--json")
    assert enc.returncode == 0, enc.stderr
    rec = json.loads(enc.stdout)
    print(f"{name}: {rec['payload_bytes']} bytes, {rec['bpp']:.5f} bpp, PSNR {rec['psnr']:.2f} dB")
    assert rec["psnr"] >= 33.0
    dec = run("decode", jpg, "-o", out)
    assert dec.returncode == 0, dec.stderr
    a, b = rawio.read_raw(src), rawio.read_raw(out)
    assert b.mosaic.shape == a.mosaic.shape
    assert (b.meta.cfa, b.meta.black, b.meta.white, b.meta.orientation) == \
        (a.meta.cfa, a.meta.black, a.meta.white, a.meta.orientation)
    assert (b.meta.make, b.meta.model) == (a.meta.make, a.meta.model)
    assert np.allclose(b.meta.as_shot_neutral, a.meta.as_shot_neutral, atol=1e-4)
    assert psnr(rawio.normalized_mosaic(a.mosaic, a.meta), rawio.normalized_mosaic(b.mosaic, a.meta)) == pytest.approx(rec["psnr"], abs=1e-3)
