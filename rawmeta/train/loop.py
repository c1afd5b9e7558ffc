"""Rate-distortion training, resumable, on CPU.

loss = mean over the batch of  bpp_i / lambda(q_i) + 255^2 * MSE_i
(the usual bpp + lambda * 255^2 * MSE divided by each sample's lambda: the same optimum per
sample, but a 1000x lambda range no longer lets the high-lambda samples drown the rate
gradient of the low ones), MSE_i weighted by eps / (prior MSE_i + eps), eps = 1e-4 (40 dB):
patches where the sRGB lost everything (prior at 16-25 dB: blown highlights) would otherwise
outweigh ordinary patches 10^3-10^4 to one and the model would learn nothing else.
q_i is drawn uniformly over the model's continuous level range and lambda(q) interpolated
geometrically between the config's per-level lambdas: one model covers the whole rate range
(its gain vectors learn what each level should spend). bpp counts y and z bits per sensor
pixel (4 per packed pixel). The EntropyBottleneck's quantiles get CompressAI's aux loss.
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from rawmeta.network import RawMetaNet, side_features
from rawmeta.neural import ladder, level_of

PATCH_EPS = 1e-4
EDIT_FLOOR = 1e-3  # keeps the square root's slope finite at black
DEFAULTS = {
    "name": "n1",
    "runs": "runs",
    "steps": 6000,
    "batch": 8,
    "crop": 128,
    "lr": 3e-4,
    "lr_final": 3e-5,
    "lambdas": [0.2, 0.8, 3.0, 12.0, 50.0, 200.0],
    "seed": 0,
    "threads": 2,
    "checkpoint_every": 100,
    "init": None,    # a weights file to start from (its matching parameters; new ones keep init)
    "cache": None,   # patch cache name (default: the run's name)
    "edit_weight": 0.0,  # weight of the shadow-sensitive (square-root) distortion term
    "log_every": 20,
    "model": {"m": 64, "n_hyper": 32, "levels": 6},
    "data": {"photo_dirs": ["bsds500-train", "mcmaster"], "hero6_renders": 12, "per_hero6": 48,
             "per_photo": 2, "seed": 0, "local_base": False},
}


def load_config(path: str | os.PathLike | None) -> dict:
    cfg = json.loads(json.dumps(DEFAULTS))
    if path:
        user = json.loads(Path(path).read_text())
        for k, v in user.items():
            cfg[k] = {**cfg[k], **v} if isinstance(cfg.get(k), dict) else v
    if len(cfg["lambdas"]) != cfg["model"]["levels"]:
        raise ValueError("config: one lambda per model level")
    return cfg


def run_dir(cfg: dict) -> Path:
    return Path(cfg["runs"]) / cfg["name"]


class Batches:
    """Random crops of the patch cache, with side features computed as the codec does."""

    def __init__(self, cache: dict, batch: int, crop: int, rng: np.random.Generator):
        self.c, self.batch, self.crop, self.rng = cache, batch, crop, rng

    def next(self):
        n, _, p, _ = self.c["srgb"].shape
        idx = self.rng.integers(0, n, self.batch)
        oy, ox = self.rng.integers(0, p - self.crop + 1, 2) // 8 * 8 if p > self.crop else (0, 0)
        sl = (idx, slice(None), slice(oy, oy + self.crop), slice(ox, ox + self.crop))
        srgb = self.c["srgb"][sl]
        raw = torch.from_numpy(self.c["raw"][sl].astype(np.float32))
        pred = torch.from_numpy(self.c["prior"][sl].astype(np.float32))
        u = torch.cat([torch.from_numpy(srgb.astype(np.float32) / 255), pred], 1)
        side = torch.from_numpy(np.stack([side_features(s) for s in srgb]).astype(np.float32))
        return raw, u, side, torch.from_numpy(self.c["quality"][idx])


def lambdas_at(cfg: dict, q: torch.Tensor) -> torch.Tensor:
    logs = torch.log(torch.tensor(cfg["lambdas"], dtype=torch.float32))
    lo = q.floor().long().clamp(max=len(logs) - 2)
    t = q - lo
    return torch.exp(logs[lo] * (1 - t) + logs[lo + 1] * t)


def rd_loss(net, raw, u, side, q, lam, edit_weight: float = 0.0):
    """edit_weight adds the MSE of square roots (a gamma-2 tone curve): an error in the
    shadows counts ~1/(4x) times more, as it does once an edit brightens them."""
    raw_hat, y_lik, z_lik = net(raw, u, side, q)
    pixels = 4 * raw.shape[2] * raw.shape[3]
    bits = (-torch.log2(y_lik)).sum((1, 2, 3)) + (-torch.log2(z_lik)).sum((1, 2, 3))
    bpp = bits / pixels
    mse = ((raw_hat - raw) ** 2).mean((1, 2, 3))
    prior_mse = ((u[:, 12:16] - raw) ** 2).mean((1, 2, 3))
    weight = PATCH_EPS / (prior_mse + PATCH_EPS)
    distortion = mse
    if edit_weight:
        root = lambda t: torch.sqrt(t.clamp(0, 1) + EDIT_FLOOR)  # noqa: E731
        distortion = mse + edit_weight * ((root(raw_hat) - root(raw)) ** 2).mean((1, 2, 3))
    loss = (bpp / lam + 255 ** 2 * weight * distortion).mean()
    return loss, bpp, mse


def gain_db(u, raw, mse) -> torch.Tensor:
    """Per sample: dB gained over the prior alone (u's last 4 channels)."""
    prior_mse = ((u[:, 12:16] - raw) ** 2).mean((1, 2, 3))
    return 10 * torch.log10(prior_mse.clamp_min(1e-12) / mse.detach().clamp_min(1e-12))


def _save(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(cfg: dict, log=print) -> Path:
    from rawmeta.train.data import build_cache, load_cache
    from rawmeta.evaluate import SHARED_RAW

    torch.set_num_threads(cfg["threads"])
    out = run_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    cache_path = out.parent / f"cache-{cfg['cache'] or cfg['name']}.npz"
    if not cache_path.exists():
        build_cache(cache_path, SHARED_RAW.parent, log=log, workers=cfg["threads"], **cfg["data"])
    cache = load_cache(cache_path)
    log(f"train: {len(cache['srgb'])} patches, config {json.dumps(cfg)}")
    torch.manual_seed(cfg["seed"])
    net = RawMetaNet(**cfg["model"])
    if cfg["init"] and not (out / "checkpoint.pt").exists():
        log(f"train: starting from {cfg['init']}: {_warm_start(net, cfg['init'])}")
    main_params = [p for n, p in net.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [p for n, p in net.named_parameters() if n.endswith(".quantiles")]
    opt = torch.optim.Adam(main_params, lr=cfg["lr"])
    aux_opt = torch.optim.Adam(aux_params, lr=1e-3)
    step, ckpt = 0, out / "checkpoint.pt"
    rng = np.random.default_rng(cfg["seed"])
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        aux_opt.load_state_dict(state["aux_opt"])
        step = state["step"]
        rng = np.random.default_rng([cfg["seed"], step])
        torch.manual_seed(cfg["seed"] + step)
        log(f"train: resumed at step {step}")
    batches = Batches(cache, cfg["batch"], cfg["crop"], rng)
    levels = cfg["model"]["levels"]
    stats, t0 = [], time.time()
    while step < cfg["steps"]:
        lr = _lr(cfg, step)
        for g in opt.param_groups:
            g["lr"] = lr
        raw, u, side, user_q = batches.next()
        q = torch.rand(raw.shape[0]) * (levels - 1)
        # a patch whose base came from neural.ladder(user quality) trains at that latent level
        for i in (user_q >= 0).nonzero().flatten().tolist():
            q[i] = level_of(net, ladder(float(user_q[i])).latent_quality)
        loss, bpp, mse = rd_loss(net, raw, u, side, q, lambdas_at(cfg, q), cfg["edit_weight"])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(main_params, 1.0)
        opt.step()
        aux = net.entropy_bottleneck.loss()
        aux_opt.zero_grad()
        aux.backward()
        aux_opt.step()
        step += 1
        gain = gain_db(u, raw, mse)
        stats.append((float(loss.detach()), float(bpp.detach().mean()), float(mse.detach().mean()),
                      *_by_half(q, bpp.detach(), gain, levels)))
        if step % cfg["log_every"] == 0:
            s = np.array(stats)
            log(f"step {step} lr {lr:.2e} loss {s[:, 0].mean():.4f} bpp {s[:, 1].mean():.4f} "
                f"psnr {_db(s[:, 2].mean()):.2f} | low-q bpp {np.nanmean(s[:, 3]):.4f} "
                f"+{np.nanmean(s[:, 4]):.2f} dB | high-q bpp {np.nanmean(s[:, 5]):.4f} "
                f"+{np.nanmean(s[:, 6]):.2f} dB over prior (mean of patches) | aux {float(aux):.1f} "
                f"{(time.time() - t0) / len(stats):.2f} s/step")
            stats, t0 = [], time.time()
        if step % cfg["checkpoint_every"] == 0 or step == cfg["steps"]:
            _save(ckpt, {"model": net.state_dict(), "opt": opt.state_dict(),
                         "aux_opt": aux_opt.state_dict(), "step": step, "config": cfg})
    return ckpt


def _warm_start(net: RawMetaNet, path: str) -> str:
    """Copy every parameter of a weights file whose name and shape match (not its CDF tables,
    which export recomputes)."""
    from rawmeta.zoo import CDF_BUFFERS

    blob = torch.load(path, map_location="cpu", weights_only=True)
    own = net.state_dict()
    take = {k: v for k, v in blob["state_dict"].items()
            if k in own and own[k].shape == v.shape and not k.endswith(CDF_BUFFERS)}
    net.load_state_dict(take, strict=False)
    return f"{len(take)} of {len(own)} tensors"


def _by_half(q, bpp, gain, levels):
    """Mean bpp and dB over the prior for the low and the high half of the quality range."""
    low = q < (levels - 1) / 2
    pick = lambda t, m: float(t[m].mean()) if m.any() else float("nan")  # noqa: E731
    return pick(bpp, low), pick(gain, low), pick(bpp, ~low), pick(gain, ~low)


def _db(mse: float) -> float:
    return 10 * math.log10(1 / mse) if mse > 0 else float("inf")


def _lr(cfg: dict, step: int) -> float:
    """Cosine from lr to lr_final over the run (the run's length is part of its config)."""
    t = min(step / max(cfg["steps"], 1), 1.0)
    return cfg["lr_final"] + 0.5 * (cfg["lr"] - cfg["lr_final"]) * (1 + math.cos(math.pi * t))


def _settle_quantiles(net: RawMetaNet, steps: int = 4000) -> float:
    """Fit the EntropyBottleneck's quantiles (its coding range) to its learned density.
    CompressAI's aux loss does not depend on data, so this runs at export in seconds; during
    training the quantiles lag behind a moving density."""
    eb = net.entropy_bottleneck
    opt = torch.optim.Adam([eb.quantiles], lr=1e-2)
    for _ in range(steps):
        loss = eb.loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(eb.loss().detach())


def export(cfg: dict, model_id: str, weights_dir: Path, make_default: bool = True) -> str:
    """Checkpoint -> weights_dir/<id>.pt (with CDF tables) + its entry in zoo.json."""
    from rawmeta import zoo

    state = torch.load(run_dir(cfg) / "checkpoint.pt", map_location="cpu", weights_only=False)
    net = RawMetaNet(**state["config"]["model"])
    net.load_state_dict(state["model"])
    _settle_quantiles(net)
    path = Path(weights_dir) / f"{model_id}.pt"
    digest = zoo.save(net.eval(), path, {"trained_steps": state["step"], "run": cfg["name"]})
    reg_path = Path(weights_dir) / "zoo.json"
    reg = json.loads(reg_path.read_text()) if reg_path.exists() else {"default": None, "models": {}}
    reg["models"][model_id] = {"file": path.name, "sha256": digest}
    if make_default:
        reg["default"] = model_id
    reg_path.write_text(json.dumps(reg, indent=2) + "\n")
    return digest
