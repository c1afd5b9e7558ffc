"""Quality measures against known values (scikit-image does SSIM and CIEDE2000)."""
from __future__ import annotations

import numpy as np
import pytest

from rawmeta import metrics
from rawmeta.synthetic import synth_raw


def test_psnr_known_value():
    a = np.zeros((10, 10))
    b = np.full((10, 10), 0.1)  # MSE 0.01 -> 20 dB
    assert metrics.psnr(a, b) == pytest.approx(20.0)
    assert metrics.psnr(a, a) == float("inf")
    assert metrics.psnr(np.zeros(4), np.full(4, 25.5), peak=255.0) == pytest.approx(20.0)


def test_bpp_counts_every_byte():
    assert metrics.bpp(1000, 8000) == pytest.approx(1.0)


def test_ssim_identical_and_degraded():
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, (64, 64)).astype(np.float32)
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    noisy = np.clip(a + rng.normal(0, 0.1, a.shape), 0, 1)
    assert 0.3 < metrics.ssim(a, noisy) < 0.99


def test_ssim_constant_offset_known_value():
    # Constant images: SSIM reduces to the luminance term (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1)
    a, b = np.full((16, 16), 0.5), np.full((16, 16), 0.6)
    c1 = (0.01 * 1.0) ** 2
    expected = (2 * 0.5 * 0.6 + c1) / (0.25 + 0.36 + c1)
    assert metrics.ssim(a, b) == pytest.approx(expected, rel=1e-5)


def test_ciede2000_known_pairs():
    assert metrics.ciede2000(np.zeros((2, 2, 3), np.uint8), np.zeros((2, 2, 3), np.uint8)) == 0.0
    # black vs white: L* 0 vs 100, CIEDE2000 = 100 exactly (lightness only, SL = 1 at L'=50)
    black = np.zeros((1, 1, 3), np.uint8)
    white = np.full((1, 1, 3), 255, np.uint8)
    assert metrics.ciede2000(black, white) == pytest.approx(100.0, abs=1e-3)
    # the mean over pixels: one identical pixel, one black/white pair -> 50
    a = np.concatenate([black, black], axis=1)
    b = np.concatenate([black, white], axis=1)
    assert metrics.ciede2000(a, b) == pytest.approx(50.0, abs=1e-3)


def test_ciede2000_chunks_agree(monkeypatch):
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 256, (2, 40, 30, 3), dtype=np.uint8)
    whole = metrics.ciede2000(a, b)
    monkeypatch.setattr(metrics, "_CHUNK_PIXELS", 7)
    assert metrics.ciede2000(a, b) == pytest.approx(whole, rel=1e-9)


def test_edit_render_is_brighter_and_shows_raw_changes():
    mosaic, meta = synth_raw(64, 96, seed=2)
    base = metrics.edit_render(mosaic, meta, ev=0.0)
    pushed = metrics.edit_render(mosaic, meta)
    assert pushed.shape == base.shape == (64, 96, 3)
    assert pushed.mean() > base.mean() + 20  # +2 EV really pushes
    same = metrics.edit_error(mosaic, mosaic, meta)
    assert same["edit_psnr"] == float("inf") and same["edit_de2000"] == 0.0
    darker = (mosaic.astype(np.int32) - 200).clip(0).astype(np.uint16)
    worse = metrics.edit_error(mosaic, darker, meta)
    assert worse["edit_psnr"] < 40 and worse["edit_de2000"] > 0.5
