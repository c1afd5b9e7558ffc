"""Quality measures on the normalised raw (DESIGN.md "Measuring")."""
from __future__ import annotations

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """PSNR in dB between two arrays on [0, peak]; inf when identical."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(peak * peak / mse)


def bpp(payload_bytes: int, pixels: int) -> float:
    """Bits per sRGB pixel: every payload byte, header included."""
    return 8.0 * payload_bytes / pixels
