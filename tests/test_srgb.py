"""Registering the JPEG on the sensor: flips, crops, scales, wrong pairs."""
import numpy as np
import pytest
from PIL import Image

from rawmeta import raw as rawio, srgb as srgbio
from rawmeta.formats.errors import BadInputError
from rawmeta.synthetic import scene, synth_raw


@pytest.fixture(scope="module")
def pair():
    data, meta = synth_raw(192, 256, seed=5)
    planes = rawio.normalize(rawio.pack(data, meta.cfa), meta)
    mosaic = rawio.unpack(planes, meta.cfa, 192, 256)
    rgb = np.clip(scene(192, 256, seed=5), 0, 1) ** (1 / 2.2)
    return mosaic, (rgb * 255).astype(np.uint8)


def _inverse(img, k):
    """The sRGB as a renderer would store it, if to_sensor(., k) maps it back."""
    out = img[:, ::-1] if k >= 4 else img
    return np.rot90(out, -(k % 4))


@pytest.mark.parametrize("k", range(8))
def test_all_eight_orientations_are_found(pair, k):
    mosaic, rgb = pair
    stored = np.ascontiguousarray(_inverse(rgb, k))
    g = srgbio.find_geometry(stored, mosaic)
    assert g.transform == k and not g.resample and (g.top, g.left) == (0, 0)
    assert np.array_equal(srgbio.align(stored, g), rgb)


@pytest.mark.parametrize("top,left,cut", [(0, 0, 1), (1, 1, 1), (3, 2, 6)])
def test_cropped_rendering_offset_is_found(pair, top, left, cut):
    mosaic, rgb = pair
    cropped = rgb[top : 192 - cut + top - top, left : 256 - cut]  # ends trimmed
    cropped = rgb[top : top + 192 - cut, left : left + 256 - cut]
    g = srgbio.find_geometry(np.ascontiguousarray(cropped), mosaic)
    assert (g.top, g.left) == (top, left)
    assert np.array_equal(srgbio.align(cropped, g)[top : top + 192 - cut, left : left + 256 - cut], cropped)


def test_downscaled_rendering_is_resampled(pair):
    mosaic, rgb = pair
    small = np.asarray(Image.fromarray(rgb).resize((128, 96), Image.BILINEAR))
    g = srgbio.find_geometry(small, mosaic)
    assert g.resample and srgbio.align(small, g).shape == (192, 256, 3)


def test_unrelated_image_is_refused(pair):
    mosaic, _ = pair
    other = (np.clip(scene(192, 256, seed=99), 0, 1) ** (1 / 2.2) * 255).astype(np.uint8)
    with pytest.raises(BadInputError, match="does not look like a rendering"):
        srgbio.find_geometry(other, mosaic, source="x.jpg")


def test_incompatible_size_is_refused(pair):
    mosaic, rgb = pair
    with pytest.raises(BadInputError, match="no flip, crop or uniform scale"):
        srgbio.find_geometry(np.ascontiguousarray(rgb[:100]), mosaic)


def test_fingerprint_sees_one_changed_pixel(pair):
    _, rgb = pair
    other = rgb.copy()
    other[5, 5, 1] ^= 1
    assert srgbio.fingerprint(rgb) != srgbio.fingerprint(other)


def test_png_is_not_a_jpeg(tmp_path, pair):
    path = tmp_path / "x.jpg"
    Image.fromarray(pair[1]).save(path, "PNG")
    with pytest.raises(BadInputError, match="x.jpg.*not a JPEG"):
        srgbio.load_srgb(path)


@pytest.mark.skipif(srgbio.darktable_cli() is None,
                    reason="darktable-cli not installed (apt install darktable)")
def test_darktable_rendering_registers_and_codes(tmp_path):
    """The second real renderer: darktable's default edit (its own demosaic, exposure and
    tone curve) registers to the sensor and the colour maps rebuild it well past the prior."""
    from rawmeta import codec
    from rawmeta.synthetic import make_sample

    dng, _ = make_sample(tmp_path, "dt", h=192, w=256, seed=5)
    jpg = tmp_path / "dt.jpg"
    data = srgbio.render_jpeg(dng, jpg, "darktable", quality=92)
    assert jpg.read_bytes() == data and srgbio.load_srgb(jpg).shape == (192, 256, 3)
    prep = codec.prepare(dng, jpg)
    prior = codec.encode(dng, jpg, method="prior", prep=prep)
    local = codec.encode(dng, jpg, method="local", quality=8, prep=prep)
    assert local.psnr > prior.psnr + 2


def test_darktable_render_of_a_non_raw_names_the_file(tmp_path, monkeypatch):
    bogus = tmp_path / "notes.dng"
    bogus.write_bytes(b"not a raw")
    monkeypatch.setenv("PATH", "")  # no darktable-cli on the PATH: a clear error, not a crash
    with pytest.raises(BadInputError, match="darktable-cli is not installed") as e:
        srgbio.render_jpeg(bogus, render="darktable")
    assert "notes.dng" in str(e.value)
