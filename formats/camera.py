"""Camera metadata carried from the raw, through the payload, into the rebuilt DNG."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from .errors import CorruptMetadataError

CFA_PATTERNS = ("RGGB", "GRBG", "GBRG", "BGGR")
MAX_SIDE = 1 << 16  # 65536 px: larger than any sensor; bounds allocations from untrusted headers


@dataclass
class CameraMeta:
    width: int                      # visible mosaic, sensor orientation
    height: int
    cfa: str                        # colours of the 2x2 tile in reading order, e.g. "RGGB"
    black: list[float]              # per 2x2 position, reading order
    white: int
    bits: int = 16                  # BitsPerSample of the original
    as_shot_neutral: list[float] | None = None   # DNG AsShotNeutral (R, G, B)
    color_matrix1: list[float] | None = None     # XYZ -> camera, 3x3 row-major
    illuminant1: int = 21
    color_matrix2: list[float] | None = None
    illuminant2: int | None = None
    make: str = "Unknown"
    model: str = "Unknown"
    unique_model: str = ""
    orientation: int = 1            # TIFF Orientation of the original
    baseline_exposure: float = 0.0
    default_crop: list[int] | None = None   # x, y, w, h inside the visible area
    datetime: str | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source=None) -> "CameraMeta":
        """Build from an untrusted header, checking every field the DNG writer relies on."""
        names = {f.name for f in fields(cls)}
        if not isinstance(d, dict):
            raise CorruptMetadataError(source, "camera metadata in the payload is invalid")
        try:
            meta = cls(**{k: v for k, v in d.items() if k in names and k != "extra"})
            ok = meta._valid()
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise CorruptMetadataError(source, "camera metadata in the payload is invalid")
        return meta

    def _valid(self) -> bool:
        w, h = self.width, self.height
        return (_int(w, 2, MAX_SIDE) and _int(h, 2, MAX_SIDE) and self.cfa in CFA_PATTERNS
                and _numbers(self.black, 4, 0, 65535) and _int(self.white, 1, 65535)
                and max(self.black) < self.white and _int(self.bits, 1, 16)
                and _optional(self.as_shot_neutral, lambda v: _numbers(v, 3, 1e-6, 1e6))
                and _optional(self.color_matrix1, lambda v: _numbers(v, 9, -1e4, 1e4))
                and _optional(self.color_matrix2, lambda v: _numbers(v, 9, -1e4, 1e4))
                and _int(self.illuminant1, 0, 65535)
                and _optional(self.illuminant2, lambda v: _int(v, 0, 65535))
                and all(isinstance(t, str) and len(t) <= 256
                        for t in (self.make, self.model, self.unique_model))
                and _int(self.orientation, 1, 8)
                and _numbers([self.baseline_exposure], 1, -100, 100)
                and _optional(self.datetime, lambda v: isinstance(v, str) and len(v) <= 64)
                and _optional(self.default_crop, lambda c: _crop_inside(c, w, h)))


def _int(v, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _numbers(values, count: int, lo: float, hi: float) -> bool:
    """A list of `count` finite real numbers in [lo, hi] (bools and strings are not numbers)."""
    return (isinstance(values, list) and len(values) == count
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi
                    for v in values))  # NaN fails the comparison


def _optional(value, check) -> bool:
    return value is None or check(value)


def _crop_inside(crop, w: int, h: int) -> bool:
    return (isinstance(crop, list) and len(crop) == 4 and all(_int(v, 0, MAX_SIDE) for v in crop)
            and crop[0] + crop[2] <= w and crop[1] + crop[3] <= h and crop[2] > 0 and crop[3] > 0)
