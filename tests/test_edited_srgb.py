"""A JPEG edited after encoding: decode refuses it; --force decodes what can be decoded.

The fingerprint is a hash of the decoded pixels, so any edit that changes a pixel is caught,
whatever tool made it. Same-size edits decode with --force (a neural payload then falls back
to its colour maps: its latent only decodes against the exact pixels); a change of size
(rotation by 90 degrees, crop) cannot be mapped onto the sensor and stays refused.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import need_tool
from rawmeta import codec, neural
from rawmeta.formats.errors import BadInputError
from rawmeta.synthetic import make_sample


def _pillow(quality):
    def edit(src: Path, dst: Path):
        Image.open(src).save(dst, quality=quality)
    return edit


def _paint(src: Path, dst: Path):
    img = np.array(Image.open(src))
    img[40:48, 60:68] = 255  # a small white square: 64 pixels of 35,840
    Image.fromarray(img).save(dst, quality=98)


def _transpose(op):
    def edit(src: Path, dst: Path):
        Image.open(src).transpose(op).save(dst, quality=98)
    return edit


def _crop(src: Path, dst: Path):
    img = Image.open(src)
    img.crop((8, 8, img.width - 8, img.height - 8)).save(dst, quality=98)


def _jpegtran(src: Path, dst: Path):  # lossless DCT-domain rotation
    subprocess.run([need_tool("jpegtran"), "-rotate", "180", "-outfile", str(dst), str(src)],
                   check=True)


def _imagemagick(src: Path, dst: Path):
    exe = need_tool("convert")
    version = subprocess.run([exe, "-version"], capture_output=True, text=True).stdout
    if "ImageMagick" not in version:
        pytest.skip(f"{exe} is not ImageMagick (CI installs it via .ci/run)")
    subprocess.run([exe, str(src), "-quality", "92", str(dst)], check=True)


SAME_SIZE = {"pillow-q80": _pillow(80), "pillow-q98": _pillow(98), "painted": _paint,
             "rotated-180": _transpose(Image.Transpose.ROTATE_180), "jpegtran-180": _jpegtran,
             "imagemagick-q92": _imagemagick}
NEW_SIZE = {"rotated-90": _transpose(Image.Transpose.ROTATE_90), "cropped": _crop}


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("edited")
    dng, jpg = make_sample(folder, "e", h=160, w=224, seed=11)
    return codec.encode(dng, jpg), jpg


@pytest.mark.parametrize("name", list(SAME_SIZE) + list(NEW_SIZE))
def test_edited_jpeg_is_refused(encoded, tmp_path, name):
    res, jpg = encoded
    edited = tmp_path / "edited.jpg"
    {**SAME_SIZE, **NEW_SIZE}[name](jpg, edited)
    with pytest.raises(BadInputError, match="changed since encoding") as err:
        codec.decode(res.payload, edited)
    assert str(edited) in str(err.value)


@pytest.mark.parametrize("name", list(SAME_SIZE))
def test_force_decodes_same_size_edits_and_says_how_far_off(encoded, tmp_path, name):
    res, jpg = encoded
    edited = tmp_path / "edited.jpg"
    SAME_SIZE[name](jpg, edited)
    warnings: list[str] = []
    image, header = codec.decode(res.payload, edited, force=True, warn=warnings.append)
    assert image.mosaic.shape == (160, 224)
    assert any("thumbnail PSNR" in w for w in warnings)
    if header["method"] == "neural" and neural.has_latent(header):
        assert any("colour maps alone" in w for w in warnings)


@pytest.mark.parametrize("name", list(NEW_SIZE))
def test_force_cannot_decode_a_resized_jpeg(encoded, tmp_path, name):
    res, jpg = encoded
    edited = tmp_path / "edited.jpg"
    NEW_SIZE[name](jpg, edited)
    with pytest.raises(BadInputError, match="cropped or rotated"):
        codec.decode(res.payload, edited, force=True, warn=lambda _: None)


def test_unedited_jpeg_decodes_silently(encoded):
    res, jpg = encoded
    warnings: list[str] = []
    image, _ = codec.decode(res.payload, jpg, warn=warnings.append)
    assert warnings == [] and image.mosaic.shape == (160, 224)
