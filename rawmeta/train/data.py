"""The training patch cache: (sRGB at plane sites, true raw planes, prior prediction) triples.

Sources (DESIGN.md / shared data README: FUSION and the Nikon crop are never used here):
- the training raw `Hero6_GOPR0024.dng`, rendered `hero6_renders` ways (LibRaw and camera
  pipelines, random options and JPEG quality);
- photos unprocessed into raws (`rawmeta.unprocess`: inverse tone, gamma, a real camera's
  matrix, white balance, brightness, any of the four Bayer phases, Poisson-Gaussian noise),
  each rendered by a random forward pipeline. Noise is camera-like (CAMERA_SHOT), not
  Brooks et al.'s denoising range: noise the sRGB cannot predict only teaches the model to
  waste bits (the GoPro samples' noise floor is ~50 dB). `kodak24` is kept out: it is the synthetic
  evaluation set.
Every example goes through the encoder's own path (`codec.prepare`: DNG -> registration ->
planes) and gets the per-image prior fit, so training sees exactly what encode sees.
Deterministic: example i uses the generator seeded with (seed, i).
"""
from __future__ import annotations

import os
import tempfile
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from rawmeta import baselines, codec, prior
from rawmeta.neural import ladder
from rawmeta.formats.camera import CFA_PATTERNS
from rawmeta.train import cameras, render
from rawmeta.unprocess import CAMERA_SHOT, draw_capture, list_photos, load_photo, unprocess

PATCH = 128  # half-resolution pixels


def _examples(shared: Path, photo_dirs: list[str], hero6_renders: int) -> list[tuple]:
    jobs = [("hero6", str(shared / "raw" / "Hero6_GOPR0024.dng"), i) for i in range(hero6_renders)]
    for d in photo_dirs:
        jobs += [("photo", str(p), 0) for p in list_photos(shared / "srgb" / d)]
    return jobs


def _render(dng: Path, mosaic, meta, rng, quality: int, darktable: bool = False) -> bytes:
    """LibRaw 70% and the numpy camera 30%; with `darktable` (config data.darktable, where
    darktable-cli is installed) a quarter of the examples are darktable's instead."""
    if darktable and rng.random() < 0.25 and render.darktable_available():
        return render.darktable(dng, quality)
    if rng.random() < 0.7:
        return render.libraw(dng, rng, quality)
    return render.camera(mosaic, meta, rng, quality)


def _make(args) -> tuple[np.ndarray, ...]:
    """One example -> patches (srgb12 uint8, raw float16, base float16), each (n, C, P, P),
    and the user quality (n,) whose base it is (-1: the global prior alone)."""
    index, (kind, path, _), seed, per_hero6, per_photo, local_base, darktable = args
    from rawmeta.formats.dng import write_dng
    from rawmeta.raw import read_raw

    rng = np.random.default_rng([seed, index])
    quality = int(rng.integers(70, 99))
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "hero6":
            dng = Path(path)
            raw = read_raw(dng)
            mosaic, meta = raw.mosaic, raw.meta
            count = per_hero6
        else:
            dng = Path(tmp) / "x.dng"
            cfa = CFA_PATTERNS[rng.integers(4)]
            mosaic, meta = unprocess(load_photo(path), draw_capture(rng, CAMERA_SHOT), rng, cfa=cfa,
                                     xyz_to_cam=cameras.draw_matrix(rng))
            write_dng(dng, mosaic, meta, force=True)
            count = per_photo
        jpg = _render(dng, mosaic, meta, rng, quality, darktable)
        try:
            p = codec.prepare(dng, srgb_bytes=jpg)
        except Exception as e:  # a rendering registration rejects is not a training example
            print(f"skip {path}: {e}", flush=True)
            return None
    pred = prior.predict(prior.fit(p.srgb4, p.planes), p.srgb4)
    quality = -1.0
    if local_base:  # what the codec refines: the local colour maps of a random quality
        quality = float(rng.uniform(0, 100))
        rung = ladder(quality)
        _, pred = baselines.encode("local", rung.block, p.planes, p.srgb4, pred, p.meta,
                                   rung.step_exp)
    _, _, h, w = p.srgb4.shape
    s12 = p.srgb4.reshape(12, h, w)
    out = ([], [], [], [])
    for _ in range(count):
        if h < PATCH or w < PATCH:
            break
        y, x = rng.integers(0, h - PATCH + 1), rng.integers(0, w - PATCH + 1)
        sl = (slice(None), slice(y, y + PATCH), slice(x, x + PATCH))
        out[0].append(s12[sl])
        out[1].append(p.planes[sl].astype(np.float16))
        out[2].append(pred[sl].astype(np.float16))
        out[3].append(quality)
    return tuple(np.stack(a) for a in out[:3]) + (np.array(out[3], np.float32),) if out[0] else None


def build_cache(path: Path, shared: Path, photo_dirs=("bsds500-train", "mcmaster"),
                hero6_renders: int = 12, per_hero6: int = 48, per_photo: int = 2, seed: int = 0,
                local_base: bool = False, darktable: bool = False, workers: int = 2,
                log=print) -> Path:
    """Write the patch cache (npz) to `path` atomically; return it. local_base: each example's
    base is the `local` colour maps at a random quality (as `neural.ladder` codes them);
    darktable: a quarter of the renderings by darktable-cli where it is installed."""
    jobs = _examples(Path(shared), list(photo_dirs), hero6_renders)
    args = [(i, job, seed, per_hero6, per_photo, local_base, darktable)
            for i, job in enumerate(jobs)]
    parts = []
    with get_context("spawn").Pool(workers) as pool:  # rawpy + OpenMP: no fork
        for n, res in enumerate(pool.imap(_make, args, chunksize=4)):
            if res is not None:
                parts.append(res)
            if n % 50 == 0:
                log(f"cache: {n + 1}/{len(args)} examples")
    srgb, raw, pred, quality = (np.concatenate([p[k] for p in parts]) for k in range(4))
    tmp = Path(str(path) + ".tmp.npz")
    np.savez(tmp, srgb=srgb, raw=raw, prior=pred, quality=quality)
    os.replace(tmp, path)
    log(f"cache: {len(srgb)} patches of {PATCH}x{PATCH} -> {path}")
    return Path(path)


def load_cache(path: Path) -> dict:
    with np.load(path) as z:
        cache = {k: z[k] for k in ("srgb", "raw", "prior")}
        cache["quality"] = z["quality"] if "quality" in z else np.full(len(cache["srgb"]), -1.0)
    return cache
