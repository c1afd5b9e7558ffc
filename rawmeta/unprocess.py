"""Turn sRGB photos into plausible Bayer raws (after Brooks et al., "Unprocessing Images for
Learned Raw Denoising", CVPR 2019): inverse tone curve, inverse sRGB gamma, inverse colour
matrix, inverse white balance and brightness, mosaic, shot + read noise, 14-bit codes.

Deterministic: the same photo, seed and index give the same raw, bit for bit. Shared by the
evaluation harness (`rawmeta eval --synthetic`) and, later, training.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rawmeta.formats.camera import CameraMeta
from rawmeta.synthetic import DEFAULT_MATRIX, mosaic

PHOTO_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".ppm")
# linear sRGB -> XYZ (D65), IEC 61966-2-1
SRGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                        [0.2126729, 0.7151522, 0.0721750],
                        [0.0193339, 0.1191920, 0.9503041]])
BLACK, WHITE = 512, 16383


@dataclass
class Capture:
    """The random camera settings drawn for one photo."""
    red_gain: float
    blue_gain: float
    brightness: float   # divides the image: darker raws than the rendered photo
    shot: float         # noise variance per unit signal
    read: float         # noise variance floor


BROOKS_SHOT = (1e-4, 1.2e-2)   # Brooks et al.'s range: denoising-grade noise
CAMERA_SHOT = (1e-5, 4e-4)     # ISO 100-1600-like: the GoPro samples sit near 8e-5


def draw_capture(rng: np.random.Generator, shot_range: tuple = BROOKS_SHOT) -> Capture:
    """Brooks et al.'s distributions for gains and noise levels (shot noise log-uniform in
    shot_range; read noise follows it)."""
    shot = float(np.exp(rng.uniform(np.log(shot_range[0]), np.log(shot_range[1]))))
    log_read = 2.18 * np.log(shot) + 1.20 + rng.normal(0.0, 0.26)
    return Capture(red_gain=float(rng.uniform(1.9, 2.4)), blue_gain=float(rng.uniform(1.5, 1.9)),
                   brightness=float(1.0 / rng.normal(0.8, 0.1)), shot=shot,
                   read=float(np.exp(log_read)))


def rgb_to_camera(xyz_to_cam=DEFAULT_MATRIX) -> np.ndarray:
    """linear sRGB -> camera RGB, rows normalised so white stays white (as LibRaw assumes)."""
    m = np.asarray(xyz_to_cam, np.float64).reshape(3, 3) @ SRGB_TO_XYZ
    return m / m.sum(axis=1, keepdims=True)


def unprocess(srgb: np.ndarray, cap: Capture, rng: np.random.Generator, cfa: str = "RGGB",
              xyz_to_cam=DEFAULT_MATRIX) -> tuple[np.ndarray, CameraMeta]:
    """uint8 (H, W, 3) photo -> (uint16 Bayer mosaic, CameraMeta); H, W cut to even."""
    h, w = srgb.shape[0] // 2 * 2, srgb.shape[1] // 2 * 2
    x = srgb[:h, :w, :3].astype(np.float64) / 255.0
    x = 0.5 - np.sin(np.arcsin(np.clip(1.0 - 2.0 * x, -1, 1)) / 3.0)  # inverse smoothstep tone
    x = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)  # inverse sRGB gamma
    x = x @ rgb_to_camera(xyz_to_cam).T
    x = _invert_gains(x, cap)
    m = mosaic(np.clip(x, 0.0, 1.0), cfa)
    m = m + rng.normal(0.0, 1.0, m.shape) * np.sqrt(cap.shot * m + cap.read)
    codes = np.clip(np.rint(m * (WHITE - BLACK) + BLACK), 0, WHITE).astype(np.uint16)
    meta = CameraMeta(width=w, height=h, cfa=cfa, black=[float(BLACK)] * 4, white=WHITE, bits=14,
                      as_shot_neutral=[1.0 / cap.red_gain, 1.0, 1.0 / cap.blue_gain],
                      color_matrix1=[float(v) for v in np.ravel(xyz_to_cam)], illuminant1=21,
                      make="rawmeta", model="Unprocessed", unique_model="rawmeta Unprocessed")
    return codes, meta


def _invert_gains(x: np.ndarray, cap: Capture) -> np.ndarray:
    """Divide out white balance and brightness, easing off near white so that saturated
    highlights stay neutral instead of turning into impossible coloured raw values."""
    inv = np.array([1.0 / cap.red_gain, 1.0, 1.0 / cap.blue_gain]) / cap.brightness
    gray = x.mean(axis=-1, keepdims=True)
    mask = (np.clip(gray - 0.9, 0.0, None) / 0.1) ** 2
    return x * np.maximum(mask + (1.0 - mask) * inv, inv)


def load_photo(path: str | os.PathLike) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def list_photos(folder: str | os.PathLike, limit: int | None = None) -> list[Path]:
    photos = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    return photos[:limit] if limit else photos


def unprocess_folder(src: str | os.PathLike, dst: str | os.PathLike, seed: int = 0,
                     limit: int | None = None) -> list[Path]:
    """Write dst/<stem>.dng for each photo in src (sorted, first `limit`); return the paths.
    Photo i uses the generator seeded with (seed, i): adding photos changes no earlier raw."""
    from rawmeta.formats.dng import write_dng

    out = []
    Path(dst).mkdir(parents=True, exist_ok=True)
    for i, photo in enumerate(list_photos(src, limit)):
        rng = np.random.default_rng([seed, i])
        codes, meta = unprocess(load_photo(photo), draw_capture(rng), rng)
        path = Path(dst) / f"{photo.stem}.dng"
        write_dng(path, codes, meta, force=True)
        out.append(path)
    return out
