"""Synthetic raw captures for tests, the demo and (later) training: no real data needed.

`scene` draws a linear-light RGB scene with structure in every direction (so flips are
distinguishable), smooth shading, texture, saturated colours and clipped highlights.
`make_sample` turns it into a Bayer DNG through our own writer and renders the sRGB JPEG
with LibRaw (`srgb.render_jpeg`), the way a camera app would.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rawmeta.formats.camera import CameraMeta

# XYZ(D65) -> camera matrix of a typical CMOS sensor (GoPro HERO6 ColorMatrix2, published in its DNGs).
DEFAULT_MATRIX = [1.0344, -0.421, -0.062, -0.2315, 1.0625, 0.1948, 0.0093, 0.1058, 0.5541]


def scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """float32 (h, w, 3) linear RGB, mostly in [0, 1], a few highlights above."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    y /= h
    x /= w
    img = np.empty((h, w, 3), np.float32)
    for c in range(3):  # asymmetric smooth shading
        a, b, d = rng.uniform(0.05, 0.5, 3)
        img[..., c] = 0.05 + a * x + b * y * y + d * x * y
    for _ in range(12):  # coloured discs and boxes
        colour = rng.uniform(0.0, 0.9, 3)
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.04, 0.2)
        mask = ((y - cy) ** 2 + (x - cx) ** 2 < r * r) if rng.random() < 0.5 else \
            ((abs(y - cy) < r) & (abs(x - cx) < r * 0.6))
        img[mask] = colour
    img *= 1 + 0.15 * np.sin(x[..., None] * rng.uniform(20, 60)) * np.cos(y[..., None] * rng.uniform(20, 60))
    hy, hx = rng.uniform(0.1, 0.4), rng.uniform(0.6, 0.9)  # a highlight that clips
    img += 1.5 * np.exp(-((y - hy) ** 2 + (x - hx) ** 2) / 0.003)[..., None]
    return img


def mosaic(rgb: np.ndarray, cfa: str = "RGGB") -> np.ndarray:
    """Sample an (h, w, 3) image through a 2x2 Bayer pattern -> (h, w)."""
    h, w, _ = rgb.shape
    out = np.empty((h, w), rgb.dtype)
    for i, colour in enumerate(cfa):
        dy, dx = divmod(i, 2)
        out[dy::2, dx::2] = rgb[dy::2, dx::2, "RGB".index(colour)]
    return out


def synth_raw(h: int, w: int, seed: int = 0, cfa: str = "RGGB", black: int = 512,
              white: int = 16383, orientation: int = 1, noise: float = 0.002):
    """(uint16 mosaic, CameraMeta): a scene seen through a camera with grey-world-ish gains."""
    rng = np.random.default_rng(seed + 1)
    neutral = [0.5, 1.0, 0.65]  # camera response to white: green strongest
    cam = scene(h, w, seed) * np.array(neutral, np.float32) * 0.8
    m = mosaic(cam, cfa)
    m = m + rng.normal(0, noise, m.shape) + rng.normal(0, 1, m.shape) * np.sqrt(np.clip(m, 0, None) * noise * 0.05)
    data = np.clip(np.rint(m * (white - black) + black), 0, white).astype(np.uint16)
    meta = CameraMeta(width=w, height=h, cfa=cfa, black=[float(black)] * 4, white=white, bits=14,
                      as_shot_neutral=neutral, color_matrix1=DEFAULT_MATRIX, illuminant1=21,
                      make="rawmeta", model="Synthetic", unique_model="rawmeta Synthetic",
                      orientation=orientation, datetime="2026:01:01 12:00:00")
    meta.extra["exif"] = {"ISOSpeedRatings": 100, "ExposureTime": 0.01, "FNumber": 2.8}
    return data, meta


def make_sample(folder: str | os.PathLike, name: str = "sample", h: int = 256, w: int = 384,
                seed: int = 0, quality: int = 95, **kwargs) -> tuple[Path, Path]:
    """Write folder/name.dng and its LibRaw rendering folder/name.jpg; return both paths."""
    from rawmeta.formats.dng import write_dng
    from rawmeta.srgb import render_jpeg

    folder = Path(folder)
    dng, jpg = folder / f"{name}.dng", folder / f"{name}.jpg"
    data, meta = synth_raw(h, w, seed, **kwargs)
    write_dng(dng, data, meta, force=True)
    render_jpeg(dng, jpg, quality=quality)
    return dng, jpg
