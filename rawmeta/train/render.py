"""Randomised forward renderings raw -> sRGB JPEG bytes: the photographer's JPEG is made by
software we never see, so training must see many pipelines.

- `libraw`: rawpy.postprocess on the DNG with random white balance mode, brightness,
  highlight mode, demosaic algorithm and gamma (the evaluation renders with LibRaw too);
- `camera`: a numpy camera pipeline (sensor orientation; registration finds the flip) - bilinear demosaic, white balance, camera->sRGB matrix,
  exposure, an S-shaped tone curve, local contrast (unsharp luminance), highlight clipping.
- `darktable`: darktable-cli's default pipeline (its own demosaic, exposure, filmic tone
  mapping, colour calibration), where it is installed (`darktable_available()`).
All end in Pillow JPEG at a random quality (70-98).
"""
from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from rawmeta import raw as rawio
from rawmeta.unprocess import SRGB_TO_XYZ

DEMOSAIC = ("AHD", "LINEAR", "VNG", "PPG", "DCB", "AAHD")


def jpeg_bytes(rgb: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=int(quality))
    return buf.getvalue()


def libraw(dng_path, rng: np.random.Generator, quality: int) -> bytes:
    import rawpy

    gamma = [(2.222, 4.5), (2.4, 12.92), (1.8, 4.5)][rng.choice(3, p=[0.6, 0.25, 0.15])]
    kwargs = dict(
        use_camera_wb=bool(rng.random() < 0.85),
        use_auto_wb=False,
        bright=float(np.exp(rng.uniform(np.log(0.7), np.log(1.6)))),
        no_auto_bright=bool(rng.random() < 0.2),
        highlight_mode=int(rng.choice([0, 1, 2])),
        demosaic_algorithm=rawpy.DemosaicAlgorithm[DEMOSAIC[rng.choice(len(DEMOSAIC), p=[.5, .1, .1, .1, .1, .1])]],
        gamma=gamma,
    )
    if not kwargs["use_camera_wb"]:
        kwargs["use_auto_wb"] = True
    with rawpy.imread(os.fspath(dng_path)) as raw:
        rgb = raw.postprocess(**kwargs)
    return jpeg_bytes(rgb, quality)


def darktable(dng_path, quality: int) -> bytes:
    from rawmeta.srgb import render_jpeg

    return render_jpeg(dng_path, render="darktable", quality=int(quality))


def darktable_available() -> bool:
    from rawmeta.srgb import darktable_cli

    return darktable_cli() is not None


def _demosaic(mosaic: np.ndarray, cfa: str) -> np.ndarray:
    """Bilinear demosaic of a normalised (H, W) mosaic -> (H, W, 3)."""
    from scipy.ndimage import convolve

    h, w = mosaic.shape
    out = np.zeros((h, w, 3), np.float32)
    k = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], np.float32) / 4
    for ch, colour in enumerate("RGB"):
        mask = np.zeros((h, w), np.float32)
        for i, c in enumerate(cfa):
            if c == colour:
                mask[i // 2::2, i % 2::2] = 1
        num = convolve(mosaic * mask, k, mode="mirror")
        den = convolve(mask, k, mode="mirror")
        out[..., ch] = num / den
    return out


def camera(mosaic: np.ndarray, meta, rng: np.random.Generator, quality: int) -> bytes:
    from scipy.ndimage import gaussian_filter

    x = rawio.normalized_mosaic(mosaic, meta)
    rgb = _demosaic(x, meta.cfa)
    neutral = np.array(meta.as_shot_neutral or [0.5, 1.0, 0.6], np.float32)
    wb = (1.0 / neutral) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    rgb = rgb * wb
    cam_from_xyz = np.array(meta.color_matrix1, np.float64).reshape(3, 3)
    m = cam_from_xyz @ SRGB_TO_XYZ
    m = m / m.sum(axis=1, keepdims=True)
    rgb = rgb @ np.linalg.inv(m).T.astype(np.float32)
    rgb = rgb * np.float32(2 ** rng.uniform(-0.3, 1.3))
    rgb = np.clip(rgb, 0, 1)
    srgb = np.where(rgb <= 0.0031308, rgb * 12.92, 1.055 * np.power(rgb, 1 / 2.4) - 0.055)
    s = rng.uniform(0.0, 1.0)                       # S-curve strength
    srgb = (1 - s) * srgb + s * (srgb * srgb * (3 - 2 * srgb))
    lum = srgb.mean(axis=2, keepdims=True)
    amount = rng.uniform(0.0, 0.6)                  # local contrast
    srgb = srgb + amount * (lum - gaussian_filter(lum, (rng.uniform(4, 20),) * 2 + (0,)))
    out = np.clip(np.rint(np.clip(srgb, 0, 1) * 255), 0, 255).astype(np.uint8)
    return jpeg_bytes(out, quality)
