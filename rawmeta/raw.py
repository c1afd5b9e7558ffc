"""Read camera raws (any LibRaw format) into a CFA mosaic plus the metadata a DNG needs.

Also packs the Bayer mosaic into 4 half-resolution planes in R, G1, G2, B order (whatever
the sensor's 2x2 phase) and back, bit-exactly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import rawpy

from rawmeta.formats.camera import CameraMeta
from rawmeta.formats.errors import BadInputError

# LibRaw's `flip` code -> TIFF Orientation (inverse of dcraw's "50132467" table)
_FLIP_TO_ORIENTATION = {0: 1, 1: 2, 3: 3, 2: 4, 4: 5, 6: 6, 7: 7, 5: 8}


@dataclass
class RawImage:
    mosaic: np.ndarray  # uint16 (H, W), visible area, sensor orientation
    meta: CameraMeta


def read_raw(path: str | os.PathLike) -> RawImage:
    path = os.fspath(path)
    try:
        raw = rawpy.imread(path)
    except (rawpy.LibRawError, OSError, ValueError) as e:
        raise BadInputError(path, f"not a raw file LibRaw can read ({type(e).__name__})") from None
    with raw:
        cfa = _bayer_pattern(raw, path)
        mosaic = np.array(raw.raw_image_visible, dtype=np.uint16, copy=True)
        pattern = raw.raw_pattern
        black = [float(raw.black_level_per_channel[pattern[y, x]]) for y in (0, 1) for x in (0, 1)]
        white = int(raw.white_level)
        if mosaic.shape[0] < 2 or mosaic.shape[1] < 2 or white <= max(black):
            raise BadInputError(path, "raw has an empty image or impossible black/white levels")
        meta = CameraMeta(
            width=mosaic.shape[1], height=mosaic.shape[0], cfa=cfa, black=black, white=white,
            bits=max(int(white).bit_length(), 8),
            as_shot_neutral=_neutral(raw.camera_whitebalance),
            color_matrix1=_matrix(raw.rgb_xyz_matrix[:3]),
            orientation=_FLIP_TO_ORIENTATION.get(raw.sizes.flip, 1),
        )
        other = raw.other
        exif = {"ISOSpeedRatings": other.iso_speed, "ExposureTime": other.shutter_speed,
                "FNumber": other.aperture, "FocalLength": other.focal_length,
                "Artist": other.artist, "LensModel": raw.lens.model}
    _read_tiff_tags(path, meta)
    meta.extra["exif"] = {k: v for k, v in exif.items() if v not in (None, "", 0, 0.0)}
    return RawImage(mosaic, meta)


def _bayer_pattern(raw, path) -> str:
    if raw.raw_type != rawpy.RawType.Flat:
        raise BadInputError(path, "unsupported raw: not a CFA mosaic (linear or Foveon data)")
    pattern = np.asarray(raw.raw_pattern)
    if pattern.shape != (2, 2):
        raise BadInputError(path, f"unsupported CFA: {pattern.shape[0]}x{pattern.shape[1]} "
                                  "pattern (X-Trans?); only 2x2 Bayer is supported")
    desc = raw.color_desc.decode("ascii", "replace")
    cfa = "".join(desc[i] for i in pattern.flatten())
    if sorted(cfa) != ["B", "G", "G", "R"]:
        raise BadInputError(path, f"unsupported CFA colours {cfa!r}; only RGB Bayer is supported")
    return cfa


def _neutral(multipliers) -> list[float] | None:
    r, g, b = (float(m) for m in multipliers[:3])
    if min(r, g, b) <= 0:
        return None
    return [g / r, 1.0, g / b]


def _matrix(m) -> list[float] | None:
    m = np.asarray(m, dtype=np.float64)
    return None if not np.any(m) else [round(float(v), 6) for v in m.flatten()]


_TIFF_TEXT = {271: "make", 272: "model", 50708: "unique_model", 306: "datetime"}


def _read_tiff_tags(path: str, meta: CameraMeta) -> None:
    """Make/model, exact DNG matrices and crop from TIFF-based raws (DNG, NEF, CR2, ARW...).

    LibRaw does not expose these; non-TIFF raws keep LibRaw's values and "Unknown" names.
    """
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            tags = {t.code: t.value for t in tif.pages[0].tags.values()}
    except Exception:  # noqa: BLE001 - any non-TIFF raw: keep what LibRaw gave
        return
    for code, name in _TIFF_TEXT.items():
        if isinstance(tags.get(code), str) and tags[code].strip():
            setattr(meta, name, tags[code].strip().rstrip("\0"))
    if 50706 not in tags:  # not a DNG: the rest is DNG-only
        return
    for code, name in ((50721, "color_matrix1"), (50722, "color_matrix2")):
        if code in tags and len(tags[code]) == 18:
            v = tags[code]
            setattr(meta, name, [v[i] / v[i + 1] for i in range(0, 18, 2)])
    if 50778 in tags:
        meta.illuminant1 = int(tags[50778])
    if 50779 in tags and meta.color_matrix2:
        meta.illuminant2 = int(tags[50779])
    if 50728 in tags and len(tags[50728]) == 6:
        v = tags[50728]
        meta.as_shot_neutral = [v[i] / v[i + 1] for i in range(0, 6, 2)]
    if 50730 in tags:
        v = tags[50730]
        meta.baseline_exposure = v[0] / v[1] if v[1] else 0.0
    if 50719 in tags and 50720 in tags:
        o, s = tags[50719], tags[50720]
        crop = [round(o[0] / o[1]), round(o[2] / o[3]), round(s[0] / s[1]), round(s[2] / s[3])]
        if crop != [0, 0, meta.width, meta.height]:
            meta.default_crop = crop


# --- packing ---------------------------------------------------------------------------

def plane_order(cfa: str) -> list[int]:
    """Indices of the 2x2 positions (reading order) that hold R, G1, G2, B."""
    greens = [i for i, c in enumerate(cfa) if c == "G"]
    return [cfa.index("R"), greens[0], greens[1], cfa.index("B")]


def pack(mosaic: np.ndarray, cfa: str) -> np.ndarray:
    """(H, W) mosaic -> (4, ceil(H/2), ceil(W/2)) planes R, G1, G2, B (odd edges replicated)."""
    h, w = mosaic.shape
    padded = np.pad(mosaic, ((0, h % 2), (0, w % 2)), mode="edge")
    sites = [padded[y::2, x::2] for y in (0, 1) for x in (0, 1)]
    return np.stack([sites[i] for i in plane_order(cfa)])


def unpack(planes: np.ndarray, cfa: str, height: int, width: int) -> np.ndarray:
    """Inverse of `pack`."""
    _, ph, pw = planes.shape
    out = np.empty((2 * ph, 2 * pw), dtype=planes.dtype)
    for plane, site in zip(planes, plane_order(cfa)):
        out[site // 2 :: 2, site % 2 :: 2] = plane
    return out[:height, :width]


def black_planes(meta: CameraMeta) -> np.ndarray:
    """Per-plane black level in R, G1, G2, B order, shape (4, 1, 1)."""
    return np.array([meta.black[i] for i in plane_order(meta.cfa)], dtype=np.float32)[:, None, None]


def normalize(planes: np.ndarray, meta: CameraMeta) -> np.ndarray:
    """uint16 planes -> float32 in [0, 1]: (x - black) / (white - black), clipped."""
    black = black_planes(meta)
    out = np.empty(planes.shape, np.float32)
    for c in range(len(planes)):  # plane by plane: temporaries a quarter of the image
        out[c] = (planes[c].astype(np.float32) - black[c]) / (meta.white - black[c])
    return np.clip(out, 0.0, 1.0, out=out)


def normalized_mosaic(mosaic: np.ndarray, meta: CameraMeta) -> np.ndarray:
    """(x - black) / (white - black) on the visible (H, W) mosaic, per-site black level,
    clipped to [0, 1]: what every raw PSNR is measured on (DESIGN.md "Measuring")."""
    return unpack(normalize(pack(mosaic, meta.cfa), meta), meta.cfa, meta.height, meta.width)


def denormalize(planes: np.ndarray, meta: CameraMeta) -> np.ndarray:
    black = black_planes(meta)
    out = np.empty(planes.shape, np.uint16)
    for c in range(len(planes)):  # plane by plane: temporaries a quarter of the image
        v = np.clip(planes[c], 0.0, 1.0) * (meta.white - black[c]) + black[c]
        out[c] = np.rint(v)
    return out
