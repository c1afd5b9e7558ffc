"""XYZ(D65) -> camera colour matrices of real Bayer cameras (DNG ColorMatrix2, as published by
Adobe in its DNG Converter and carried by dcraw/LibRaw's adobe_coeff table, /10000).
Synthetic raws draw one of these (jittered) so the model sees many sensor colour responses."""
from __future__ import annotations

import numpy as np

MATRICES = {
    "Canon EOS 5D Mark II": [4716, 603, -830, -7798, 15474, 2480, -1496, 1937, 6651],
    "Canon EOS 600D": [6461, -907, -882, -4300, 12184, 2378, -819, 1944, 5931],
    "Nikon D700": [8139, -2171, -663, -8747, 16541, 2295, -1925, 2008, 8093],
    "Nikon D7000": [8198, -2239, -724, -4871, 12389, 2798, -1043, 2050, 7181],
    "Sony ILCE-7": [5271, -712, -347, -6153, 13653, 2763, -1601, 2366, 7242],
    "Olympus E-M5": [8380, -2630, -639, -2887, 10725, 2496, -627, 1427, 5438],
    "Panasonic DMC-GH4": [7122, -2108, -512, -3155, 11201, 2231, -541, 1423, 5045],
    "GoPro HERO6 Black": [10344, -4210, -620, -2315, 10625, 1948, 93, 1058, 5541],
}


def draw_matrix(rng: np.random.Generator, jitter: float = 0.05) -> list[float]:
    """One camera's matrix, each entry jittered by up to +-jitter (relative to its row norm)."""
    name = sorted(MATRICES)[rng.integers(len(MATRICES))]
    m = np.array(MATRICES[name], np.float64).reshape(3, 3) / 10000.0
    m = m + rng.uniform(-jitter, jitter, m.shape) * np.abs(m).sum(axis=1, keepdims=True) / 3
    return [float(v) for v in m.ravel()]
