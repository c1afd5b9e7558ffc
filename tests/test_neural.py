"""The neural codec with any weights (a tiny random model here): real rANS payloads, tiles,
deterministic decode across threads and instruction sets, damage detection, rate control."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rawmeta import codec, entropy, neural, zoo
from rawmeta import raw as rawio
from rawmeta.formats.errors import CorruptMetadataError, EXIT_CORRUPT
from rawmeta.formats.payload import Payload
from rawmeta.metrics import psnr
from rawmeta.network import RawMetaNet
from rawmeta.synthetic import make_sample


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A small random model whose residual is not zero (so decode really depends on it)."""
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(1)
    net = RawMetaNet(m=16, n_hyper=8, levels=3, widths=(8, 8, 16, 16))
    torch.nn.init.normal_(net.s4[-1].weight, std=0.02)
    zoo.save(net, folder / "tiny.pt")
    return folder / "tiny.pt"


@pytest.fixture(autouse=True)
def models_env(tiny_model, monkeypatch):
    monkeypatch.setenv("RAWMETA_MODELS", str(tiny_model.parent))


LATENT_PAYS = neural.latent_pays


@pytest.fixture(autouse=True)
def keep_latent(monkeypatch):
    """The random tiny model's latent never pays for its bits; these tests are about the
    latent, so the encoder keeps it (test_latent_that_does_not_pay_is_dropped checks the rule)."""
    monkeypatch.setattr(neural, "latent_pays", lambda *a: True)


@pytest.fixture(scope="session")
def big_sample(tmp_path_factory):
    """Larger than one tile (1024 sensor pixels) in both directions, odd size."""
    return make_sample(tmp_path_factory.mktemp("big"), "big", h=1090, w=1250, seed=5)


def encode(sample, model, **kw):
    dng, jpg = sample
    return codec.encode(dng, jpg, method="neural", model=str(model), **kw)


def test_roundtrip_psnr_matches_encoder(sample, tiny_model):
    dng, jpg = sample
    res = encode(sample, tiny_model, quality=60)
    image, header = codec.decode(res.payload, jpg)
    truth = rawio.read_raw(dng)
    got = psnr(rawio.normalized_mosaic(image.mosaic, image.meta),
               rawio.normalized_mosaic(truth.mosaic, truth.meta))
    assert abs(got - res.psnr) < 1e-3
    assert header["neural"]["model"] == "tiny"
    assert header["neural"]["sha256"] == zoo.sha256_file(tiny_model)
    # the network changes the result: it is not the prior
    prior_only = codec.encode(dng, jpg, method="prior")
    assert res.psnr != prior_only.psnr
    assert len(res.payload) > len(prior_only.payload)


def test_tiled_transforms_equal_whole_image(big_sample, tiny_model):
    """Halo'd tiles give the whole-image network's result (the halo covers the receptive field)."""
    dng, jpg = big_sample
    net, _, _ = zoo.load(str(tiny_model))
    p = codec.prepare(dng, jpg)
    pred = codec.prior.predict(codec.prior.fit(p.srgb4, p.planes), p.srgb4)
    inp = neural.make_inputs(p.srgb4, pred)
    H, W = inp.shape
    assert H > neural.TILE and W > neural.TILE
    cpu = torch.device("cpu")
    y_tiled = neural.analysis(net, inp, p.planes, cpu)
    x = np.pad(p.planes, ((0, 0), (0, H - inp.h), (0, W - inp.w)), mode="edge")
    with torch.no_grad():
        u = torch.from_numpy(inp.u(slice(0, H), slice(0, W)))[None]
        y_whole = net.analysis(torch.from_numpy(x)[None], u, net.features(u))[0].numpy()
        rec_whole = (u[:, 12:16] + net.synthesis(torch.from_numpy(y_whole)[None],
                                                 net.features(u)))[0].numpy()
    np.testing.assert_allclose(y_tiled, y_whole, atol=1e-4)
    rec_tiled = neural.synthesis(net, inp, y_whole, cpu)
    np.testing.assert_allclose(rec_tiled, np.clip(rec_whole[:, :inp.h, :inp.w], 0, 1), atol=1e-5)



@pytest.mark.parametrize("config", [{}, {"m": 16, "n_hyper": 8, "levels": 3,
                                        "widths": (8, 8, 16, 16)}])
def test_halos_cover_the_receptive_fields(config):
    """Which inputs one latent cell / one cell of output pixels depends on (by gradient),
    relative to that cell: they must lie within ANALYSIS_HALO / SYNTHESIS_HALO."""
    from rawmeta.network import ANALYSIS_HALO, STRIDE, SYNTHESIS_HALO

    torch.manual_seed(0)
    net = RawMetaNet(**config)
    torch.nn.init.normal_(net.s4[-1].weight, std=0.1)  # zero at init: nothing would flow
    size, cell = 256, 16
    u = torch.rand(1, 16, size, size, requires_grad=True)
    x = torch.rand(1, 4, size, size, requires_grad=True)
    y = torch.randn(1, net.m, size // STRIDE, size // STRIDE, requires_grad=True)
    lo, hi = cell * STRIDE, (cell + 1) * STRIDE - 1  # the cell's pixel rows and columns

    def reach(t, scale=1):
        rows = t.grad.abs().sum((0, 1)).nonzero()
        return lo - rows.min().item() * scale, rows.max().item() * scale + scale - 1 - hi

    net.analysis(x, u, net.features(u))[0, :, cell, cell].sum().backward()
    assert max(*reach(u), *reach(x)) <= ANALYSIS_HALO
    u.grad = None
    net.synthesis(y, net.features(u))[0, :, lo:hi + 1, lo:hi + 1].sum().backward()
    assert max(*reach(u), *reach(y, STRIDE)) <= SYNTHESIS_HALO
    assert ANALYSIS_HALO % STRIDE == 0 and SYNTHESIS_HALO % STRIDE == 0

def test_multi_tile_payload(big_sample, tiny_model):
    dng, jpg = big_sample
    res = encode(big_sample, tiny_model, quality=100)
    assert res.header["neural"]["tiles"] == 4
    image, _ = codec.decode(res.payload, jpg)
    truth = rawio.read_raw(dng)
    got = psnr(rawio.normalized_mosaic(image.mosaic, image.meta),
               rawio.normalized_mosaic(truth.mosaic, truth.meta))
    assert abs(got - res.psnr) < 1e-3



def test_threaded_coding_equals_coding_in_order(big_sample, tiny_model):
    """The worker-thread coder (tiles handed over by the analysis) gives the same streams and
    latent as coding the finished latent tile by tile on the calling thread."""
    net, _, _ = zoo.load(str(tiny_model))
    p = codec.prepare(*big_sample)
    inp = neural.make_inputs(p.srgb4, codec.prior.predict(codec.prior.fit(p.srgb4, p.planes),
                                                          p.srgb4))
    cpu, pp = torch.device("cpu"), neural._probability_path(net)
    y = neural.analysis(net, inp, p.planes, cpu)
    in_order = neural.LatentCoder(pp, inp.side, net, 70.0, threaded=False)
    for box in in_order.boxes:
        in_order.add(*box, y[:, box[0]:box[1], box[2]:box[3]])
    streams, y_hat = in_order.result(), in_order.y_hat
    coder = neural.LatentCoder(pp, inp.side, net, 70.0)
    neural.analysis(net, inp, p.planes, cpu, sink=coder.add)
    assert len(streams) == 4 and coder.result() == streams
    np.testing.assert_array_equal(coder.y_hat, y_hat)
    decoder = neural.LatentDecoder(pp, streams, inp.side, net, 70.0)
    np.testing.assert_array_equal(decoder.wait_all(), y_hat)

_DECODE = """
import hashlib, sys, torch
torch.set_num_threads(int(sys.argv[3]))
from rawmeta import codec
image, _ = codec.decode(open(sys.argv[1], 'rb').read(), sys.argv[2])
print(hashlib.sha256(image.mosaic.tobytes()).hexdigest())
"""


@pytest.mark.parametrize("threads,capability", [(1, None), (2, None), (2, "default")])
def test_decode_bit_identical_across_threads_and_isa(big_sample, tiny_model, tmp_path, threads,
                                                      capability):
    dng, jpg = big_sample
    res = encode(big_sample, tiny_model, quality=80)
    (tmp_path / "p.rmeta").write_bytes(res.payload)
    image, _ = codec.decode(res.payload, jpg)
    here = hashlib.sha256(image.mosaic.tobytes()).hexdigest()
    env = dict(os.environ, RAWMETA_MODELS=str(tiny_model.parent))
    if capability:
        env["ATEN_CPU_CAPABILITY"] = capability
    out = subprocess.run([sys.executable, "-c", _DECODE, str(tmp_path / "p.rmeta"), str(jpg),
                          str(threads)], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == here


def test_scale_indexes_equal_compressai(tiny_model):
    net, _, _ = zoo.load(str(tiny_model))
    pp = entropy.ProbabilityPath(net)
    torch.manual_seed(0)
    scales = torch.cat([torch.exp(torch.randn(5000, dtype=torch.float64) * 2),
                        pp.table, pp.table + 1e-12, torch.tensor([0.0, -1.0, 1e9], dtype=torch.float64)])
    assert torch.equal(pp.indexes(scales), net.gaussian_conditional.build_indexes(scales).int())


def _neur(payload: bytes) -> tuple[Payload, bytes]:
    p = Payload.from_bytes(payload)
    return p, p.sections["NEUR"]


def test_flipped_byte_in_tile_stream_is_corrupt_metadata(sample, tiny_model):
    _, jpg = sample
    p, section = _neur(encode(sample, tiny_model, quality=60).payload)
    table = entropy.ENTRY.size * p.header["neural"]["tiles"]
    bad = bytearray(section)
    bad[table + len(section[table:]) // 2] ^= 0x10
    with pytest.raises(CorruptMetadataError, match="tile 0 is damaged"):
        entropy.unpack_streams(bytes(bad), p.header["neural"]["tiles"])
    # the whole payload, re-sealed with valid section CRCs: still refused, by the tile CRC
    resealed = Payload(p.header, p.exif, {**p.sections, "NEUR": bytes(bad)}).to_bytes()
    with pytest.raises(CorruptMetadataError, match="damaged"):
        codec.decode(resealed, jpg)
    # and as raw bytes on disk: the payload's own CRC catches it
    raw_bad = bytearray(encode(sample, tiny_model, quality=60).payload)
    raw_bad[len(raw_bad) - 20] ^= 0x01
    with pytest.raises(CorruptMetadataError):
        codec.decode(bytes(raw_bad), jpg)


def test_symbol_hash_mismatch_is_refused(sample, tiny_model):
    _, jpg = sample
    p, section = _neur(encode(sample, tiny_model, quality=60).payload)
    bad = bytearray(section)
    bad[8] ^= 0xFF  # first byte of tile 0's symbol hash (after length and CRC)
    resealed = Payload(p.header, p.exif, {**p.sections, "NEUR": bytes(bad)}).to_bytes()
    with pytest.raises(CorruptMetadataError, match="different symbols"):
        codec.decode(resealed, jpg)


def test_unknown_model_is_named(sample, tiny_model, tmp_path):
    _, jpg = sample
    p, _ = _neur(encode(sample, tiny_model, quality=60).payload)
    header = json.loads(json.dumps(p.header))
    header["neural"]["model"] = "rawmeta-future-9"
    payload = Payload(header, p.exif, p.sections).to_bytes()
    (tmp_path / "x.rmeta").write_bytes(payload)
    res = subprocess.run([sys.executable, "-m", "rawmeta.cli.main", "decode", str(jpg), "-o",
                          str(tmp_path / "x.dng"), "--meta", str(tmp_path / "x.rmeta")],
                         capture_output=True, text=True)
    assert res.returncode == EXIT_CORRUPT
    assert "rawmeta-future-9" in res.stderr and "not installed" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.dng").exists()


def test_changed_weights_are_refused(sample, tiny_model, tmp_path):
    _, jpg = sample
    p, _ = _neur(encode(sample, tiny_model, quality=60).payload)
    header = json.loads(json.dumps(p.header))
    header["neural"]["sha256"] = "0" * 64
    with pytest.raises(CorruptMetadataError, match="sha256"):
        codec.decode(Payload(header, p.exif, p.sections).to_bytes(), jpg)


def test_target_psnr_search_finds_the_lowest_quality():
    """Bisection on a monotone PSNR(quality) (a trained model's: see the model card)."""
    tried = []

    def attempt(q):
        tried.append(q)
        return f"streams@{q}", 40 + q / 10
    q, (streams, got) = neural._search(attempt, 45.0)
    assert got >= 45.0 and streams == f"streams@{q}"
    assert 50 <= q <= 50 + 100 / 2 ** 7
    assert all(t < 50 for t in tried if t < q)  # nothing lower that reached it was skipped
    q, (_, got) = neural._search(attempt, 99.0)  # unreachable -> the best quality tried
    assert q == 100 and got == 50


def test_target_psnr_encode_reaches_and_records_target(sample, tiny_model):
    target = encode(sample, tiny_model, quality=0).psnr - 1e-4
    res = encode(sample, tiny_model, target_psnr=target)
    assert res.psnr >= target
    assert res.header["neural"]["target_psnr"] == target
    image, _ = codec.decode(res.payload, sample[1])  # the measured PSNR is what decode gives
    truth = rawio.read_raw(sample[0])
    got = psnr(rawio.normalized_mosaic(image.mosaic, image.meta),
               rawio.normalized_mosaic(truth.mosaic, truth.meta))
    assert abs(got - res.psnr) < 1e-3
    unreachable = encode(sample, tiny_model, target_psnr=99.0)  # -> the best quality tried
    assert unreachable.psnr >= encode(sample, tiny_model, quality=100).psnr


def test_quality_out_of_range_is_bad_input(sample, tiny_model):
    from rawmeta.formats.errors import BadInputError
    with pytest.raises(BadInputError, match="0..100"):
        encode(sample, tiny_model, quality=101)


def test_cli_encode_decode_neural(sample, tiny_model, tmp_path):
    dng, jpg = sample
    cmd = [sys.executable, "-m", "rawmeta.cli.main"]
    res = subprocess.run(cmd + ["encode", str(dng), str(jpg), "--method", "neural", "--model",
                                str(tiny_model), "--quality", "37.5", "--json"],
                         capture_output=True, text=True, check=True)
    rec = json.loads(res.stdout)
    assert rec["method"] == "neural" and rec["quality"] == 37.5 and rec["model"] == "tiny"
    assert res.stderr == ""  # quiet: no library warnings
    res = subprocess.run(cmd + ["decode", str(jpg), "-o", str(tmp_path / "o.dng"), "--json"],
                         capture_output=True, text=True, check=True)
    assert json.loads(res.stdout)["encode_psnr"] == rec["psnr"]
    info = subprocess.run(cmd + ["info", str(jpg), "--json"], capture_output=True, text=True,
                          check=True)
    assert json.loads(info.stdout)["model"] == "tiny"


def test_latent_refines_the_local_colour_maps(sample, tiny_model):
    """The payload carries the local base (LOCL) the latent refines, with the block and the
    latent quality the ladder chose; both rise with the user quality."""
    low, high = (encode(sample, tiny_model, quality=q) for q in (0, 100))
    for res, q in ((low, 0), (high, 100)):
        info = res.header["neural"]
        rung = neural.ladder(q)
        assert (info["base_block"], info["latent_quality"]) == (rung.block, rung.latent_quality)
        assert Payload.from_bytes(res.payload).sections["LOCL"][:2] == bytes([2, rung.step_exp])
        assert set(Payload.from_bytes(res.payload).sections) == {"PRIR", "LOCL", "NEUR"}
    assert low.header["neural"]["base_block"] > high.header["neural"]["base_block"]
    assert len(high.payload) > len(low.payload)
    # the base is part of the result: without it the same latent decodes elsewhere
    local = codec.encode(*sample, method="local", quality=high.header["neural"]["base_block"])
    assert high.psnr != local.psnr


@pytest.mark.parametrize("change,match", [
    (lambda h, s: s.pop("LOCL"), "no local base section"),
    (lambda h, s: h["neural"].update(base_block=2), "local quality 2 outside"),
    (lambda h, s: h["neural"].update(latent_quality=-1), "neural quality -1"),
])
def test_damaged_base_fields_are_corrupt_metadata(sample, tiny_model, change, match):
    p = Payload.from_bytes(encode(sample, tiny_model, quality=50).payload)
    header, sections = json.loads(json.dumps(p.header)), dict(p.sections)
    change(header, sections)
    with pytest.raises(CorruptMetadataError, match=match):
        codec.decode(Payload(header, p.exif, sections).to_bytes(), sample[1])


def test_latent_pays_rule():
    assert LATENT_PAYS(1.0, 100, 1_000_000)             # 1 dB for 0.0009 bpp
    assert not LATENT_PAYS(-0.1, 10, 1_000_000)         # a loss never pays
    assert not LATENT_PAYS(0.05, 10_000, 100_000)       # 0.05 dB for 0.8 bpp
    from rawmeta.formats.payload import SECTION_PREFIX

    bpp = 8 * (1000 + SECTION_PREFIX) / 1e6
    assert LATENT_PAYS(neural.LATENT_MIN_SLOPE * bpp * 1.01, 1000, 1_000_000)
    assert not LATENT_PAYS(neural.LATENT_MIN_SLOPE * bpp * 0.99, 1000, 1_000_000)


def test_latent_that_does_not_pay_is_dropped(sample, tiny_model, monkeypatch, tmp_path):
    """The random model's residual only adds error: the payload carries the colour maps
    alone, says so, reports their PSNR, and decodes without the model."""
    monkeypatch.setattr(neural, "latent_pays", LATENT_PAYS)
    dng, jpg = sample
    res = encode(sample, tiny_model, quality=50)
    info = res.header["neural"]
    assert info["latent"] is False and "tiles" not in info
    assert set(Payload.from_bytes(res.payload).sections) == {"PRIR", "LOCL"}
    rung = neural.ladder(50)
    maps = codec.encode(dng, jpg, method="local", quality=rung.block)
    monkeypatch.setenv("RAWMETA_MODELS", str(tmp_path))  # no model installed at all
    image, _ = codec.decode(res.payload, jpg)
    truth = rawio.read_raw(dng)
    got = psnr(rawio.normalized_mosaic(image.mosaic, image.meta),
               rawio.normalized_mosaic(truth.mosaic, truth.meta))
    assert abs(got - res.psnr) < 1e-3
    if rung.step_exp == 7:  # the local method's own step: the very same maps
        assert abs(res.psnr - maps.psnr) < 1e-3


def test_forced_decode_of_a_changed_jpeg_drops_only_the_latent(sample, tiny_model, tmp_path):
    from PIL import Image

    dng, jpg = sample
    res = encode(sample, tiny_model, quality=50)
    assert "NEUR" in Payload.from_bytes(res.payload).sections
    changed = tmp_path / "changed.jpg"
    Image.open(jpg).save(changed, quality=80)
    warnings: list[str] = []
    image, _ = codec.decode(res.payload, changed, force=True, warn=warnings.append)
    assert any("colour maps alone" in w for w in warnings)
    assert image.mosaic.shape == rawio.read_raw(dng).mosaic.shape
