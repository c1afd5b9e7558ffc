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
        """Build from an untrusted header, checking what later code relies on."""
        names = {f.name for f in fields(cls)}
        try:
            meta = cls(**{k: v for k, v in d.items() if k in names})
            ok = (isinstance(meta.width, int) and isinstance(meta.height, int)
                  and 2 <= meta.width <= MAX_SIDE and 2 <= meta.height <= MAX_SIDE
                  and meta.cfa in CFA_PATTERNS and len(meta.black) == 4
                  and 0 <= min(meta.black) and max(meta.black) < meta.white <= 65535
                  and 1 <= meta.orientation <= 8)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise CorruptMetadataError(source, "camera metadata in the payload is invalid")
        return meta
