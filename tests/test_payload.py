import struct

import pytest
import zstandard

from rawmeta.formats import payload as pl
from rawmeta.formats.errors import CorruptMetadataError
from rawmeta.formats.payload import Payload


def _sample() -> Payload:
    return Payload({"method": "prior", "psnr": 40.5, "geometry": {"transform": 4}},
                   {"ISOSpeedRatings": 100}, {"PRIR": bytes(range(256)) * 3, "T000": b"\x00\x01"})


def test_round_trip_keeps_everything():
    p = _sample()
    q = Payload.from_bytes(p.to_bytes())
    assert q.header == p.header and q.exif == p.exif and q.sections == p.sections


def test_every_single_bit_flip_is_detected():
    data = _sample().to_bytes()
    for i in range(len(data)):
        for bit in (0, 5):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(CorruptMetadataError):
                Payload.from_bytes(bytes(bad), "x.rmeta")


def test_every_truncation_is_detected():
    data = _sample().to_bytes()
    for n in range(len(data)):
        with pytest.raises(CorruptMetadataError):
            Payload.from_bytes(data[:n])


def test_unknown_major_version_names_both_versions():
    data = bytearray(_sample().to_bytes())
    data[8] = pl.MAJOR + 1
    with pytest.raises(CorruptMetadataError, match=rf"version {pl.MAJOR + 1}\.0.*reads version {pl.MAJOR}"):
        Payload.from_bytes(bytes(data))


def _framed(sections: list[tuple[bytes, bytes]]) -> bytes:
    fixed = struct.pack("<8sBBH", pl.MAGIC, pl.MAJOR, 0, len(sections))
    out = [fixed]
    for tag, body in sections:
        out.append(struct.pack("<4sII", tag, len(body), pl._crc(fixed, tag, body)) + body)
    return b"".join(out)


def test_zstd_bomb_is_refused_before_decompressing():
    bomb = zstandard.ZstdCompressor().compress(b" " * (pl.MAX_JSON_BYTES + 1))
    with pytest.raises(CorruptMetadataError, match="declares"):
        Payload.from_bytes(_framed([(b"HEAD", bomb)]))


def test_missing_head_and_duplicate_sections_are_refused():
    head = zstandard.ZstdCompressor().compress(b"{}")
    with pytest.raises(CorruptMetadataError, match="no HEAD"):
        Payload.from_bytes(_framed([(b"PRIR", b"x")]))
    with pytest.raises(CorruptMetadataError, match="twice"):
        Payload.from_bytes(_framed([(b"HEAD", head), (b"HEAD", head)]))


def test_section_count_is_bounded():
    data = struct.pack("<8sBBH", pl.MAGIC, pl.MAJOR, 0, 65535)
    with pytest.raises(CorruptMetadataError, match="sections"):
        Payload.from_bytes(data)
