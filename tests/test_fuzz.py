"""Property-based fuzzing of the parsers: hostile bytes give documented errors only."""
import functools
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


# --- the neural section: tile table and rANS streams ------------------------------------

@functools.lru_cache(maxsize=1)
def _tiny_probability_path():
    import torch
    from rawmeta import entropy
    from rawmeta.network import RawMetaNet

    torch.manual_seed(0)
    net = RawMetaNet(m=8, n_hyper=4, levels=2, widths=(4, 4, 4, 4)).eval()
    net.entropy_bottleneck.update(force=True)
    net.gaussian_conditional.update_scale_table(net.gaussian_conditional.scale_table, force=True)
    return entropy.ProbabilityPath(net)


@FUZZ
@given(st.binary(max_size=2048), st.integers(min_value=-2, max_value=5000))
def test_neural_section_random_bytes(data, count):
    from rawmeta import entropy
    _parses_or_documented_error(lambda d: entropy.unpack_streams(d, count), data)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=512), st.binary(min_size=8, max_size=8))
def test_tile_stream_garbage_is_refused_not_crashed(data, digest):
    """A stream with a valid CRC but hostile contents: rANS decodes garbage symbols (reads
    stay in the zero-padded buffer) and the symbol hash refuses them."""
    import torch
    from rawmeta import entropy

    pp = _tiny_probability_path()
    side = torch.zeros(1, 24, 6, 5, dtype=torch.float64)
    try:
        entropy.decode_tile(pp, entropy.TileStream(data, digest), side, 0.5, 8)
    except RawmetaError as e:
        assert "different symbols" in str(e)
