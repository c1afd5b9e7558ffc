"""JUMBF/APP11 embedding: pixels and scan untouched, survives real metadata editors."""
import io
import subprocess

import numpy as np
import pytest
from PIL import Image

from conftest import need_tool
from rawmeta.formats import jpeg
from rawmeta.formats.errors import BadInputError, CorruptMetadataError


@pytest.fixture
def photo(tmp_path):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, exif=b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x00\x00\x00\x00\x00\x00")
    return buf.getvalue()


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("size", [10, 65_000, 200_000])
def test_embed_extract_keeps_scan_and_pixels(photo, size):
    payload = np.random.default_rng(size).bytes(size)
    out = jpeg.embed(photo, payload)
    assert jpeg.extract(out) == payload
    assert jpeg.scan_bytes(out) == jpeg.scan_bytes(photo)
    assert np.array_equal(_pixels(out), _pixels(photo))
    segments, _ = jpeg.split(out)
    assert all(len(s.data) <= 65537 for s in segments)


def test_segments_are_contiguous_after_app1_before_dqt(photo):
    out = jpeg.embed(photo, b"x" * 150_000)
    markers = [s.marker for s in jpeg.split(out)[0]]
    first = markers.index(jpeg.APP11)
    n = markers.count(jpeg.APP11)
    assert markers[first : first + n] == [jpeg.APP11] * n
    assert all(m in (jpeg.APP0, jpeg.APP1, jpeg.APP2) for m in markers[:first])
    assert 0xDB in markers[first + n :]  # DQT after


def test_reembedding_replaces_instead_of_adding(photo):
    once = jpeg.embed(photo, b"a" * 100_000)
    twice = jpeg.embed(once, b"b" * 10)
    assert jpeg.extract(twice) == b"b" * 10
    assert len(twice) == len(jpeg.embed(photo, b"b" * 10))
    assert jpeg.strip(twice) == photo


def test_foreign_jumbf_box_is_left_alone(photo):
    other = bytearray(jpeg.build_segments(b"c2pa-ish", 1)[0])
    other[30:46] = b"\x11" * 16  # a different UUID: not ours
    with_other = photo[:2] + bytes(other) + photo[2:]
    out = jpeg.embed(with_other, b"ours")
    assert jpeg.extract(out) == b"ours"
    assert bytes(other) in out


def test_no_box_gives_none_and_bad_files_are_refused(photo):
    assert jpeg.extract(photo) is None
    with pytest.raises(BadInputError, match="not a JPEG"):
        jpeg.extract(b"\x89PNG\r\n\x1a\n....")
    with pytest.raises(BadInputError):
        jpeg.extract(photo[:20])


def test_missing_packet_is_corrupt(photo):
    out = jpeg.embed(photo, b"z" * 200_000)
    segments, scan = jpeg.split(out)
    app11 = [i for i, s in enumerate(segments) if s.marker == jpeg.APP11]
    del segments[app11[1]]
    broken = b"\xff\xd8" + b"".join(s.data for s in segments) + scan
    with pytest.raises(CorruptMetadataError, match="missing"):
        jpeg.extract(broken)


def _run(*cmd):
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture
def embedded(tmp_path, photo):
    payload = np.random.default_rng(1).bytes(150_000)
    path = tmp_path / "p.jpg"
    path.write_bytes(jpeg.embed(photo, payload))
    return path, payload


def test_survives_exiftool_edit(embedded):
    path, payload = embedded
    _run(need_tool("exiftool"), "-overwrite_original", "-Artist=x", str(path))
    assert b"x" in path.read_bytes() and jpeg.extract(path.read_bytes()) == payload


def test_survives_exiv2_edit(embedded):
    path, payload = embedded
    _run(need_tool("exiv2"), "-M", "set Exif.Image.Artist x", str(path))
    assert jpeg.extract(path.read_bytes()) == payload


def test_survives_jpegtran_copy_all(embedded, tmp_path):
    path, payload = embedded
    out = tmp_path / "t.jpg"
    _run(need_tool("jpegtran"), "-copy", "all", "-outfile", str(out), str(path))
    assert jpeg.extract(out.read_bytes()) == payload


def test_exiftool_all_strips_it(embedded):
    path, _ = embedded
    _run(need_tool("exiftool"), "-overwrite_original", "-all=", str(path))
    assert jpeg.extract(path.read_bytes()) is None
