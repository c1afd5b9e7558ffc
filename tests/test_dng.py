"""The DNG we write opens in LibRaw, the Adobe DNG SDK and exiftool."""
import json
import subprocess
import sys

import numpy as np
import pytest
import rawpy

from conftest import need_tool
from rawmeta.formats.dng import write_dng
from rawmeta.synthetic import synth_raw


@pytest.fixture(params=[True, False], ids=["lj92", "uncompressed"])
def dng(request, tmp_path):
    data, meta = synth_raw(200, 300, seed=4, cfa="GRBG", orientation=2)
    path = tmp_path / "out.dng"
    write_dng(path, data, meta, compress=request.param)
    return path, data, meta


def test_rawpy_reads_mosaic_and_renders(dng):
    path, data, meta = dng
    with rawpy.imread(str(path)) as r:
        assert np.array_equal(r.raw_image_visible, data)
        assert r.sizes.flip == 1  # Orientation 2 -> LibRaw's mirror code
        assert list(r.black_level_per_channel) == [512] * 4 and r.white_level == meta.white
        rgb = r.postprocess()
    assert rgb.shape == (200, 300, 3) and rgb.std() > 5


def test_adobe_dng_sdk_validates(dng):
    pytest.importorskip("dngpy")
    path, data, _ = dng
    # The SDK prints its diagnostics from C: run it in a subprocess to see them.
    code = ("import dngpy, sys; d = dngpy.Dng(sys.argv[1]); p = d.raw_pixels; "
            "print('SHAPE', p.shape[0], p.shape[1], int(p.sum()))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log
    assert "*** Error" not in log
    assert f"SHAPE 200 300 {int(data.astype(np.int64).sum())}" in log


def test_exiftool_reads_camera_fields(dng):
    exiftool = need_tool("exiftool")
    path, _, _ = dng
    out = subprocess.run([exiftool, "-j", "-n", "-Make", "-Model", "-Orientation", "-ISO",
                          "-CFAPattern2", str(path)], capture_output=True, text=True, check=True)
    tags = json.loads(out.stdout)[0]
    assert tags["Make"] == "rawmeta" and tags["Model"] == "Synthetic"
    assert tags["Orientation"] == 2 and tags["ISO"] == 100
