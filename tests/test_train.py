"""`rawmeta train` on a tiny generated patch cache: steps run, checkpoints resume, export
writes a loadable weights file and its registry entry; the loss terms behave."""
import json

import numpy as np
import pytest
import torch

from rawmeta import zoo
from rawmeta.network import RawMetaNet
from rawmeta.train import loop
from rawmeta.train.data import load_cache

TINY = {"m": 16, "n_hyper": 8, "levels": 3, "widths": [8, 8, 16, 16]}


def _cache(path, n=6, p=64, with_quality=True):
    rng = np.random.default_rng(0)
    srgb = rng.integers(0, 256, (n, 12, p, p), dtype=np.uint8)
    raw = (srgb[:, ::3].astype(np.float32) / 255) ** 2.2
    prior = np.clip(raw + rng.normal(0, 0.01, raw.shape), 0, 1)
    arrays = {"srgb": srgb, "raw": raw.astype(np.float16), "prior": prior.astype(np.float16)}
    if with_quality:
        arrays["quality"] = np.array([-1, 0, 25, 50, 75, 100][:n], np.float32)
    np.savez(path, **arrays)


@pytest.fixture
def cfg(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    _cache(runs / "cache-tiny.npz")
    return loop.load_config(None) | {"name": "tiny", "runs": str(runs), "steps": 3, "batch": 2,
                                     "crop": 32, "lambdas": [1.0, 10.0, 100.0], "threads": 1,
                                     "checkpoint_every": 2, "model": TINY}


def test_train_resume_and_export(cfg, tmp_path):
    logs = []
    ckpt = loop.train(cfg, log=logs.append)
    assert torch.load(ckpt, weights_only=False)["step"] == 3
    loop.train(cfg | {"steps": 5}, log=logs.append)
    assert any("resumed at step 3" in line for line in logs)
    assert torch.load(ckpt, weights_only=False)["step"] == 5
    weights = tmp_path / "weights"
    weights.mkdir()
    digest = loop.export(cfg, "tiny-export", weights)
    reg = json.loads((weights / "zoo.json").read_text())
    assert reg["default"] == "tiny-export"
    assert reg["models"]["tiny-export"]["sha256"] == digest == zoo.sha256_file(weights / "tiny-export.pt")
    net, _, _ = zoo.load(str(weights / "tiny-export.pt"))
    assert net.m == TINY["m"]


def test_warm_start_copies_matching_tensors(cfg, tmp_path):
    torch.manual_seed(5)
    source = RawMetaNet(**TINY)
    zoo.save(source, tmp_path / "src.pt")
    torch.manual_seed(6)
    net = RawMetaNet(**TINY)
    loop._warm_start(net, str(tmp_path / "src.pt"))
    assert torch.equal(net.a1[0].weight, source.a1[0].weight)
    assert torch.equal(net.entropy_bottleneck.quantiles, source.entropy_bottleneck.quantiles)


def test_cache_without_quality_means_prior_bases(tmp_path):
    _cache(tmp_path / "old.npz", with_quality=False)
    assert (load_cache(tmp_path / "old.npz")["quality"] == -1).all()


def test_edit_weight_adds_a_shadow_term():
    torch.manual_seed(0)
    net = RawMetaNet(**TINY)
    torch.nn.init.normal_(net.s4[-1].weight, std=0.05)
    raw = torch.rand(2, 4, 32, 32) * 0.05  # dark patches: where the term matters
    u = torch.cat([torch.rand(2, 12, 32, 32), raw + 0.01], 1)
    side = torch.rand(2, 24, 4, 4)
    q, lam = torch.tensor([0.5, 1.5]), torch.tensor([1.0, 10.0])
    torch.manual_seed(1)
    plain, bpp, mse = loop.rd_loss(net, raw, u, side, q, lam)
    torch.manual_seed(1)
    edit, bpp2, mse2 = loop.rd_loss(net, raw, u, side, q, lam, edit_weight=0.05)
    assert torch.equal(mse, mse2) and torch.equal(bpp, bpp2)
    assert edit > plain


class _Draws:
    """An rng whose random() returns the given draws in turn (records how many were used)."""

    def __init__(self, *draws):
        self.draws, self.used = list(draws), 0

    def random(self):
        self.used += 1
        return self.draws.pop(0)


def test_darktable_renders_a_quarter_only_when_asked(monkeypatch):
    from rawmeta.train import data, render

    calls = []
    monkeypatch.setattr(render, "darktable_available", lambda: True)
    monkeypatch.setattr(render, "darktable", lambda dng, q: calls.append("darktable") or b"d")
    monkeypatch.setattr(render, "libraw", lambda dng, rng, q: calls.append("libraw") or b"l")
    monkeypatch.setattr(render, "camera", lambda m, meta, rng, q: calls.append("camera") or b"c")
    assert data._render("x.dng", None, None, _Draws(0.1), 90, darktable=True) == b"d"
    assert data._render("x.dng", None, None, _Draws(0.3, 0.5), 90, darktable=True) == b"l"
    # without darktable the draws are the ones earlier caches were built with
    plain = _Draws(0.8)
    assert data._render("x.dng", None, None, plain, 90) == b"c" and plain.used == 1
    monkeypatch.setattr(render, "darktable_available", lambda: False)
    assert data._render("x.dng", None, None, _Draws(0.1, 0.5), 90, darktable=True) == b"l"
    assert calls == ["darktable", "libraw", "camera", "libraw"]
