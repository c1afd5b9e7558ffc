"""Write a CFA DNG 1.4 with tifffile: the tag set LibRaw, the Adobe DNG SDK and exiftool need.

Lossless JPEG (LJ92, SOF3) tiles by default through imagecodecs; uncompressed on request.
"""
from __future__ import annotations

import os
from fractions import Fraction
from typing import BinaryIO

import numpy as np
import tifffile

from .atomic import write_atomic
from .camera import CameraMeta

DNG_VERSION = (1, 4, 0, 0)
DNG_BACKWARD_VERSION = (1, 1, 0, 0)
_CFA_CODE = {"R": 0, "G": 1, "B": 2}
# A generic XYZ(D65) -> linear sRGB matrix: used only when the raw carried no colour matrix,
# because the Adobe SDK refuses a CFA DNG without ColorMatrix1.
_FALLBACK_MATRIX = [3.2406, -1.5372, -0.4986, -0.9689, 1.8758, 0.0415, 0.0557, -0.2040, 1.0570]
TILE = 256


def _srational(values, denom=10000):
    out = []
    for v in values:
        f = Fraction(float(v)).limit_denominator(denom)
        out += [f.numerator, f.denominator]
    return tuple(out)


def _rational(values, denom=1000000):
    return _srational(values, denom)


def dng_tags(meta: CameraMeta) -> list[tuple]:
    """extratags for tifffile: (code, dtype, count, value, writeonce)."""
    h, w = meta.height, meta.width
    crop = meta.default_crop or [0, 0, w, h]
    matrix1 = meta.color_matrix1 or _FALLBACK_MATRIX
    tags = [
        (50706, "B", 4, DNG_VERSION, True),
        (50707, "B", 4, DNG_BACKWARD_VERSION, True),
        (50708, "s", 0, _ascii(meta.unique_model or f"{meta.make} {meta.model}"), True),
        (271, "s", 0, _ascii(meta.make), True),
        (272, "s", 0, _ascii(meta.model), True),
        (274, "H", 1, (meta.orientation,), True),
        (305, "s", 0, "rawmeta", True),
        (33421, "H", 2, (2, 2), True),
        (33422, "B", 4, tuple(_CFA_CODE[c] for c in meta.cfa), True),
        (50710, "B", 3, (0, 1, 2), True),
        (50711, "H", 1, (1,), True),
        (50713, "H", 2, (2, 2), True),
        (50714, "2I", 4, _rational(meta.black, 256), True),
        (50717, "I", 1, (int(meta.white),), True),
        (50719, "2I", 2, _rational(crop[:2], 1), True),
        (50720, "2I", 2, _rational(crop[2:], 1), True),
        (50721, "2i", 9, _srational(matrix1), True),
        (50778, "H", 1, (int(meta.illuminant1),), True),
        (50730, "2i", 1, _srational([meta.baseline_exposure], 100), True),
        (50829, "I", 4, (0, 0, h, w), True),
    ]
    if meta.color_matrix2 and meta.illuminant2:
        tags += [(50722, "2i", 9, _srational(meta.color_matrix2), True),
                 (50779, "H", 1, (int(meta.illuminant2),), True)]
    if meta.as_shot_neutral:
        tags.append((50728, "2I", 3, _rational(meta.as_shot_neutral), True))
    if meta.datetime:
        tags.append((306, "s", 0, _ascii(meta.datetime), True))
    tags += _exif_tags(meta.extra.get("exif", {}))
    return tags


# TIFF/EP allows these capture tags in IFD0, which LibRaw and exiftool read.
_EXIF_TAGS = {"ExposureTime": (33434, "2I"), "FNumber": (33437, "2I"),
              "ISOSpeedRatings": (34855, "H"), "FocalLength": (37386, "2I"),
              "DateTimeOriginal": (36867, "s"), "Artist": (315, "s"), "LensModel": (42036, "s")}


def _exif_tags(exif: dict) -> list[tuple]:
    """Capture tags from the payload's EXIF record. Informational: a value the tag's TIFF
    type cannot hold (ISO above 65535, a string where a number belongs) is left out."""
    out = []
    for name, (code, dtype) in _EXIF_TAGS.items():
        value = exif.get(name)
        if dtype == "s" and isinstance(value, str) and 0 < len(value) <= 256:
            out.append((code, "s", 0, _ascii(value), True))
        elif dtype == "H" and isinstance(value, int) and not isinstance(value, bool) \
                and 0 < value <= 65535:
            out.append((code, "H", 1, (value,), True))
        elif dtype == "2I" and isinstance(value, (int, float)) and not isinstance(value, bool) \
                and 0 < value < 40000:  # rational with denominator up to 1e5 fits 32 bits
            out.append((code, "2I", 1, _rational([value], 100000), True))
    return out


def _ascii(text: str) -> bytes:
    """TIFF ASCII: 7-bit, no NUL inside (tifffile would refuse or truncate)."""
    return text.encode("ascii", "replace").replace(b"\0", b"?")


def _tile(shape: tuple[int, int]) -> tuple[int, int]:
    """TILE x TILE, shrunk to a multiple of 16 no larger than the image: LibRaw misreads
    LJ92 tiles larger than the image (partial tiles at the far edges are fine)."""
    return tuple(max(16, min(TILE, n // 16 * 16)) for n in shape)


def write_dng(path: str | os.PathLike, mosaic: np.ndarray, meta: CameraMeta,
              compress: bool = True, force: bool = False) -> None:
    """Write `mosaic` (uint16, sensor orientation) as a DNG, atomically."""
    if mosaic.dtype != np.uint16 or mosaic.shape != (meta.height, meta.width):
        raise ValueError(f"mosaic {mosaic.shape} {mosaic.dtype} does not match the metadata")

    def _write(f: BinaryIO) -> None:
        kwargs = {}
        if compress:
            kwargs = dict(compression="jpeg", compressionargs={"lossless": True, "bitspersample": 16},
                          maxworkers=os.cpu_count() or 1)  # LJ92 tiles compress in parallel
        tifffile.imwrite(f, mosaic, photometric="cfa", tile=_tile(mosaic.shape), subfiletype=0,
                         extratags=dng_tags(meta), software=False, metadata=None, **kwargs)

    write_atomic(path, _write, force=force)
