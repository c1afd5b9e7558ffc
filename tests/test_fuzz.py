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


# --- camera / EXIF / geometry fields carried in the payload ------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40)
                    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=10) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                    max_leaves=12)
CAMERA_KEYS = ["width", "height", "cfa", "black", "white", "bits", "as_shot_neutral",
               "color_matrix1", "illuminant1", "color_matrix2", "illuminant2", "make", "model",
               "unique_model", "orientation", "baseline_exposure", "default_crop", "datetime"]
EXIF_KEYS = ["ExposureTime", "FNumber", "ISOSpeedRatings", "FocalLength", "DateTimeOriginal",
             "Artist", "LensModel"]
GEOMETRY_KEYS = ["transform", "resample", "srgb_width", "srgb_height", "sensor_width",
                 "sensor_height", "top", "left"]


@functools.lru_cache(maxsize=1)
def _real_payload():
    """A genuine prior payload of a small generated raw, and its JPEG."""
    import tempfile
    from rawmeta import codec
    from rawmeta.synthetic import make_sample

    folder = tempfile.mkdtemp(prefix="rawmeta-fuzz-")
    dng, jpg = make_sample(folder, "f", h=64, w=96, seed=3)
    return codec.encode(dng, jpg, method="prior").payload, jpg, folder


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(["camera", "exif", "geometry"]),
                          st.sampled_from(CAMERA_KEYS + EXIF_KEYS + GEOMETRY_KEYS + [None]), JSON),
                min_size=1, max_size=4))
def test_carried_fields_give_documented_errors_or_a_valid_dng(edits):
    """Hostile values in any carried field: decode and DNG writing either succeed (and the
    DNG reads back) or raise a documented error. Never a TypeError, struct.error, ..."""
    import os
    import rawpy
    from rawmeta import codec
    from rawmeta.formats.dng import write_dng

    payload, jpg, folder = _real_payload()
    p = Payload.from_bytes(payload)
    for where, key, value in edits:
        if key is None:  # the whole record replaced (EXIF must be an object: payload checks)
            if where != "exif":
                p.header[where] = value
            continue
        target = p.exif if where == "exif" else p.header.setdefault(where, {})
        if isinstance(target, dict):
            target[key] = value
    out = os.path.join(folder, "out.dng")
    try:
        image, _ = codec.decode(p.to_bytes(), jpg)
        write_dng(out, image.mosaic, image.meta, force=True)
    except RawmetaError:
        return
    with rawpy.imread(out) as raw:
        assert raw.raw_image_visible.shape == image.mosaic.shape


@FUZZ
@given(st.one_of(st.binary(max_size=2048),
                 st.tuples(st.integers(0, len(PAYLOAD)), st.binary(max_size=64))
                 .map(lambda t: PAYLOAD[:t[0]] + t[1])))
def test_rmeta_sidecar_random_or_truncated(data):
    """A .rmeta file: random bytes, or a real payload cut anywhere with junk appended."""
    import tempfile
    from rawmeta.formats import rmeta

    with tempfile.NamedTemporaryFile(suffix=".rmeta") as f:
        f.write(data)
        f.flush()
        try:
            Payload.from_bytes(rmeta.read_sidecar(f.name))
        except RawmetaError:
            pass
