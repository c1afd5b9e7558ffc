"""sam and local baselines as real codec methods: real bytes, exact round trips, honest PSNR."""
from __future__ import annotations

import numpy as np
import pytest

from rawmeta import baselines, codec, raw as rawio
from rawmeta.formats.errors import BadInputError, CorruptMetadataError
from rawmeta.formats.payload import Payload
from rawmeta.synthetic import make_sample


@pytest.fixture(scope="module")
def smooth(tmp_path_factory):
    """A low-noise sample: the baselines' gain over the prior is not drowned by sensor noise."""
    folder = tmp_path_factory.mktemp("smooth")
    return make_sample(folder, "smooth", h=192, w=256, seed=5, noise=0.0002)


def _decoded_psnr(payload, jpg, dng):
    from rawmeta.batch import raw_psnr

    image, header = codec.decode(payload, jpg)
    return raw_psnr(rawio.read_raw(dng), image), header


@pytest.mark.parametrize("method,quality", [("sam", 8), ("sam", 4), ("local", 16), ("local", 8)])
def test_round_trip_matches_encode_psnr(smooth, method, quality):
    dng, jpg = smooth
    result = codec.encode(dng, jpg, method=method, quality=quality)
    decoded, header = _decoded_psnr(result.payload, jpg, dng)
    assert header["method"] == method and header["quality"] == quality
    assert decoded == pytest.approx(result.psnr, abs=1e-3)  # encode reports what decode delivers
    sections = Payload.from_bytes(result.payload).sections
    assert set(sections) == {"PRIR", codec.SECTION[method]}


def test_baselines_beat_prior_and_rate_grows_with_quality(smooth):
    dng, jpg = smooth
    prior = codec.encode(dng, jpg, method="prior")
    sam = codec.encode(dng, jpg, method="sam", quality=4)
    local16 = codec.encode(dng, jpg, method="local", quality=16)
    local8 = codec.encode(dng, jpg, method="local", quality=8)
    assert sam.psnr > prior.psnr + 0.5
    assert local8.psnr > local16.psnr > prior.psnr + 1.0
    assert len(prior.payload) < len(local16.payload) < len(local8.payload)


def test_sam_samples_are_exact(smooth):
    dng, jpg = smooth
    stride = 8
    image, _ = codec.decode(codec.encode(dng, jpg, method="sam", quality=stride).payload, jpg)
    original = rawio.read_raw(dng)
    cfa = original.meta.cfa
    got, want = rawio.pack(image.mosaic, cfa), rawio.pack(original.mosaic, cfa)
    s = baselines._sites
    ys, xs = s(got.shape[1], stride), s(got.shape[2], stride)
    # samples far from black/white clipping come back bit-exactly
    sub_want = want[:, ys][:, :, xs]
    inside = (sub_want > original.meta.black[0]) & (sub_want < original.meta.white)
    assert inside.mean() > 0.9
    assert np.array_equal(got[:, ys][:, :, xs][inside], sub_want[inside])


def test_bad_quality_is_refused(smooth):
    dng, jpg = smooth
    with pytest.raises(BadInputError):
        codec.encode(dng, jpg, method="local", quality=3)
    with pytest.raises(BadInputError):
        codec.encode(dng, jpg, method="sam", quality=1000)


def test_damaged_header_quality_is_corrupt(smooth):
    dng, jpg = smooth
    p = Payload.from_bytes(codec.encode(dng, jpg, method="local", quality=16).payload)
    p.header["quality"] = 32  # section no longer has the size this block grid needs
    with pytest.raises(CorruptMetadataError):
        codec.decode(p.to_bytes(), jpg)
    p.header["quality"] = "big"
    with pytest.raises(CorruptMetadataError):
        codec.decode(p.to_bytes(), jpg)
    del p.sections["LOCL"]
    p.header["quality"] = 16
    with pytest.raises(CorruptMetadataError):
        codec.decode(p.to_bytes(), jpg)


def test_prior_payload_unchanged_by_dispatch(smooth):
    dng, jpg = smooth
    header = Payload.from_bytes(codec.encode(dng, jpg, method="prior").payload).header
    assert header["method"] == "prior" and "quality" not in header


@pytest.mark.parametrize("method", ["prior", "local", "neural"])
def test_odd_sized_raw_encode_psnr_is_what_decode_delivers(tmp_path, method):
    """Odd sensor sizes: packing pads the planes, and the padding must not count."""
    from rawmeta import zoo

    if method == "neural" and not zoo.default_model():
        pytest.skip("no neural model installed")
    dng, jpg = make_sample(tmp_path, "odd", h=131, w=197, seed=9)
    result = codec.encode(dng, jpg, method=method, quality=16 if method == "local" else None)
    decoded, _ = _decoded_psnr(result.payload, jpg, dng)
    assert decoded == pytest.approx(result.psnr, abs=1e-3)


def _planes_and_prior(dng, jpg):
    from rawmeta import prior

    p = codec.prepare(dng, jpg)
    return p, prior.predict(prior.fit(p.srgb4, p.planes), p.srgb4)


def test_colour_map_step_trades_bits_for_accuracy(smooth):
    """Whitened coding: a coarser step costs fewer bits, and its squared error over the
    fine-step maps stays within what 13 coefficients per plane off by step/2 can do."""
    p, base = _planes_and_prior(*smooth)
    fine_sec, fine = baselines.encode("local", 8, p.planes, p.srgb4, base, p.meta, step_exp=16)
    coarse_sec, coarse = baselines.encode("local", 8, p.planes, p.srgb4, base, p.meta, step_exp=6)
    assert coarse_sec[:2] == bytes([baselines.LOCL_V2, 6]) and len(coarse_sec) < len(fine_sec)
    mse = lambda a: float(((a - p.planes) ** 2).mean())  # noqa: E731
    assert mse(fine) < mse(coarse) < mse(base)
    bound = 13 * (2.0 ** -6 / 2) ** 2
    assert float(((coarse - fine) ** 2).mean()) <= bound
    # the decoder reads the step from the section and rebuilds the encoder's planes exactly
    assert np.array_equal(baselines.decode("local", 8, coarse_sec, p.srgb4, base, p.meta), coarse)


def test_colour_map_section_versions(smooth):
    p, base = _planes_and_prior(*smooth)
    section, _ = baselines.encode("local", 16, p.planes, p.srgb4, base, p.meta)
    # version 1 (format 1.0 payloads): a bare zstd frame of raw coefficients; all zero = base
    nb = -(-base.shape[1] // 16) * -(-base.shape[2] // 16)
    v1 = baselines._pack_ints(np.zeros(52 * nb, np.int32))
    assert np.array_equal(baselines.decode("local", 16, v1, p.srgb4, base, p.meta), base)
    for bad, match in ((b"\x07" + section[1:], "unknown version"),
                       (section[:1] + b"\x03" + section[2:], "step"),
                       (section[:2], "does not decode")):
        with pytest.raises(CorruptMetadataError, match=match):
            baselines.decode("local", 16, bad, p.srgb4, base, p.meta)
