"""Property-based fuzzing of the parsers: hostile bytes give documented errors only."""
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from PIL import Image

from rawmeta.formats import jpeg
from rawmeta.formats.errors import RawmetaError
from rawmeta.formats.payload import Payload

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


PHOTO = _jpeg()
PAYLOAD = Payload({"method": "prior", "geometry": {"transform": 1}}, {"ISO": 100},
                  {"PRIR": bytes(384), "T000": bytes(range(256)) * 400}).to_bytes()
EMBEDDED = jpeg.embed(PHOTO, PAYLOAD)


def _parses_or_documented_error(fn, data):
    try:
        fn(data)
    except RawmetaError:
        pass


@FUZZ
@given(st.binary(max_size=4096))
def test_payload_random_bytes(data):
    _parses_or_documented_error(Payload.from_bytes, data)
    _parses_or_documented_error(Payload.from_bytes, PAYLOAD[:12] + data)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(PAYLOAD) - 1), st.integers(1, 255)), min_size=1, max_size=8))
def test_payload_flipped_bytes_never_pass(flips):
    data = bytearray(PAYLOAD)
    for pos, mask in flips:
        data[pos] ^= mask
    if bytes(data) == PAYLOAD:
        return
    with pytest.raises(RawmetaError):
        Payload.from_bytes(bytes(data))


@FUZZ
@given(st.binary(max_size=2048))
def test_jpeg_random_bytes(data):
    _parses_or_documented_error(jpeg.extract, b"\xff\xd8" + data)
    _parses_or_documented_error(jpeg.extract, data)


@FUZZ
@given(st.integers(0, len(EMBEDDED)), st.binary(max_size=64))
def test_jpeg_truncated_or_spliced(cut, junk):
    _parses_or_documented_error(jpeg.extract, EMBEDDED[:cut])
    _parses_or_documented_error(jpeg.extract, EMBEDDED[:cut] + junk + EMBEDDED[cut:])


@FUZZ
@given(st.randoms(use_true_random=False), st.integers(0, 3))
def test_app11_reordered_or_duplicated(rng, dup):
    segments, scan = jpeg.split(EMBEDDED)
    app11 = [s for s in segments if s.marker == jpeg.APP11]
    others = [s for s in segments if s.marker != jpeg.APP11]
    shuffled = app11[:]
    rng.shuffle(shuffled)
    shuffled += [rng.choice(app11)] * dup
    data = b"\xff\xd8" + b"".join(s.data for s in others[:1] + shuffled + others[1:]) + scan
    try:
        got = jpeg.extract(data)
    except RawmetaError:
        assert dup > 0  # duplicates are refused; pure reordering must work
        return
    assert got == PAYLOAD and dup == 0
