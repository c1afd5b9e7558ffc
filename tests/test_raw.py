"""Raw reading and 2x2 packing."""
import numpy as np
import pytest
import tifffile

from rawmeta import raw as rawio
from rawmeta.formats.dng import write_dng
from rawmeta.formats.errors import BadInputError
from rawmeta.synthetic import synth_raw


@pytest.mark.parametrize("cfa", ["RGGB", "GRBG", "GBRG", "BGGR"])
@pytest.mark.parametrize("shape", [(6, 8), (7, 9), (2, 3)])
def test_pack_unpack_is_exact_and_colour_ordered(cfa, shape):
    rng = np.random.default_rng(0)
    m = rng.integers(0, 65535, shape, dtype=np.uint16)
    planes = rawio.pack(m, cfa)
    assert np.array_equal(rawio.unpack(planes, cfa, *shape), m)
    sites = {c: [] for c in "RGB"}
    for i, c in enumerate(cfa):
        sites[c].append(m[i // 2 :: 2, i % 2 :: 2][0, 0])
    assert planes[0, 0, 0] == sites["R"][0] and planes[3, 0, 0] == sites["B"][0]
    assert sorted([planes[1, 0, 0], planes[2, 0, 0]]) == sorted(sites["G"])


@pytest.mark.parametrize("cfa", ["RGGB", "BGGR"])
def test_read_back_our_dng(tmp_path, cfa):
    data, meta = synth_raw(64, 96, seed=1, cfa=cfa, orientation=6)
    write_dng(tmp_path / "a.dng", data, meta)
    r = rawio.read_raw(tmp_path / "a.dng")
    assert np.array_equal(r.mosaic, data)
    assert (r.meta.cfa, r.meta.white, r.meta.orientation) == (cfa, meta.white, 6)
    assert r.meta.black == meta.black
    assert r.meta.make == "rawmeta" and r.meta.model == "Synthetic"
    assert np.allclose(r.meta.as_shot_neutral, meta.as_shot_neutral, atol=1e-4)
    assert np.allclose(r.meta.color_matrix1, meta.color_matrix1, atol=1e-4)


def test_normalize_denormalize_round_trip():
    data, meta = synth_raw(32, 32, seed=2)
    planes = rawio.pack(data, meta.cfa)
    back = rawio.denormalize(rawio.normalize(planes, meta), meta)
    assert np.array_equal(back, np.clip(planes, meta.black[0], meta.white))


def test_not_a_raw_is_refused(tmp_path):
    path = tmp_path / "notes.dng"
    path.write_text("hello")
    with pytest.raises(BadInputError, match="notes.dng.*not a raw"):
        rawio.read_raw(path)


def test_linear_dng_is_unsupported(tmp_path):
    path = tmp_path / "linear.dng"
    rgb = np.random.default_rng(0).integers(0, 4000, (32, 48, 3), dtype=np.uint16)
    tags = [(50706, "B", 4, (1, 4, 0, 0), True), (50708, "s", 0, "x", True),
            (50721, "2i", 9, (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1), True)]
    tifffile.imwrite(path, rgb, photometric=34892, extratags=tags)
    with pytest.raises(BadInputError, match="linear.dng.*(unsupported|not a raw)"):
        rawio.read_raw(path)
