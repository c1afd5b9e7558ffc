"""Quality measures (DESIGN.md "Measuring"): raw-domain PSNR/SSIM, sRGB PSNR/CIEDE2000, bpp,
and the edit-aware render that compares raws the way an editor would see them.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np

EDIT_EV = 2.0                       # +2 EV push
EDIT_WB_SHIFT = (1.25, 1.0, 0.8)    # multipliers on the camera's R, G, B gains: a warmer edit
_CHUNK_PIXELS = 1 << 20             # CIEDE2000 in slices: bounded memory on 100 MP images


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """PSNR in dB between two arrays on [0, peak]; inf when identical."""
    return psnr_of_sse(squared_error(a, b), np.asarray(a).size, peak)


def squared_error(a: np.ndarray, b: np.ndarray) -> float:
    """Sum of squared differences, in float64 over blocks of rows: no whole-image float64
    copy is made (48 MP raws). float32 `a`: differences taken in float32, like the codec."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"squared_error: shapes differ, {a.shape} vs {b.shape}")
    sse = 0.0
    for sa, sb in zip(_row_blocks(a), _row_blocks(b)):
        d = (sa - sb.astype(np.float32)).astype(np.float64) if a.dtype == np.float32 \
            else sa.astype(np.float64) - sb.astype(np.float64)
        d = d.ravel()
        sse += float(np.dot(d, d))  # float64 dot: pairwise-accurate, no squared copy
    return sse


def psnr_of_sse(sse: float, count: int, peak: float = 1.0) -> float:
    mse = sse / max(count, 1)
    return float("inf") if mse == 0 else 10.0 * np.log10(peak * peak / mse)


def _row_blocks(a: np.ndarray, rows: int = 256):
    a3 = a.reshape((-1,) + a.shape[-2:]) if a.ndim >= 2 else a.reshape(1, 1, -1)
    for plane in a3:
        for r in range(0, plane.shape[0], rows):
            yield plane[r:r + rows]


def bpp(payload_bytes: int, pixels: int) -> float:
    """Bits per sRGB pixel: every payload byte, header included."""
    return 8.0 * payload_bytes / pixels


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 1.0) -> float:
    """Mean SSIM (scikit-image, 7x7 uniform window) of two 2-D images, e.g. CFA mosaics."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(np.asarray(a, np.float32), np.asarray(b, np.float32),
                                       data_range=data_range))


def ciede2000(a: np.ndarray, b: np.ndarray) -> float:
    """Mean CIEDE2000 between two sRGB images (uint8 or floats in [0, 1]), via CIELAB D65."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    a, b = np.asarray(a).reshape(-1, 3), np.asarray(b).reshape(-1, 3)
    n = len(a)
    differ = np.any(a != b, axis=1)  # equal pixels add exactly 0: skip the costly part
    a, b = _unit_rgb(a[differ]), _unit_rgb(b[differ])
    total = 0.0
    for i in range(0, len(a), _CHUNK_PIXELS):
        sa, sb = a[i : i + _CHUNK_PIXELS], b[i : i + _CHUNK_PIXELS]
        total += float(deltaE_ciede2000(rgb2lab(sa), rgb2lab(sb)).sum())
    return total / n


def _unit_rgb(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    return x / 255.0 if x.dtype == np.uint8 else x.astype(np.float64)


def edit_render(mosaic: np.ndarray, meta, ev: float = EDIT_EV,
                wb_shift=EDIT_WB_SHIFT) -> np.ndarray:
    """Render a raw mosaic as an editor would after pushing exposure and changing the white
    balance: LibRaw (AHD demosaic, camera matrix, sRGB gamma, no auto-brightening, no
    flip) on a temporary DNG written with our writer, so original and rebuilt raws go through
    the identical pipeline. -> uint8 (H', W', 3)."""
    import rawpy

    from rawmeta.formats.dng import write_dng

    neutral = meta.as_shot_neutral or [0.5, 1.0, 0.65]
    gains = [s / n for s, n in zip(wb_shift, neutral)]
    with tempfile.TemporaryDirectory(prefix="rawmeta-edit-") as tmp:
        path = os.path.join(tmp, "edit.dng")
        write_dng(path, mosaic, meta, compress=False)
        with rawpy.imread(path) as raw:
            return raw.postprocess(user_wb=[gains[0], gains[1], gains[2], gains[1]],
                                   exp_shift=2.0 ** ev, no_auto_bright=True, user_flip=0,
                                   output_bps=8)


def edit_error(original: np.ndarray, rebuilt: np.ndarray, meta,
               reference: np.ndarray | None = None) -> dict:
    """Edit-aware error of a rebuilt mosaic: sRGB PSNR (peak 255) and mean CIEDE2000 between
    the edited renders. `reference` is the original's render when already computed."""
    ref = edit_render(original, meta) if reference is None else reference
    out = edit_render(rebuilt, meta)
    return {"edit_psnr": psnr(ref, out, 255.0), "edit_de2000": ciede2000(ref, out)}
