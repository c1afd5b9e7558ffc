"""The sRGB side: decode the JPEG exactly as the decoder will, and register it to the sensor.

The relation is one of the 8 flips/rotations, then either equal size, a crop of a few border
pixels (darktable renders 4000x3000 as 3999x2999; DNG DefaultCrop) or a uniform downscale.
`align` turns the JPEG into a uint8 image on the sensor grid (H, W, 3) that both encoder
and decoder compute identically.
"""
from __future__ import annotations

import hashlib
import io
import os
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from rawmeta.formats.errors import BadInputError, CorruptMetadataError

Image.MAX_IMAGE_PIXELS = 400_000_000  # a 400 MP sRGB is plausible; beyond is hostile
MAX_CROP_MARGIN = 16   # border pixels a renderer may cut off, per side
MIN_CORRELATION = 0.6  # below this the JPEG is not a rendering of this raw
# LibRaw settings for the sRGB a photographer keeps (the codec never sees these choices);
# "darktable" renders with darktable-cli's default pipeline instead (where it is installed).
RENDERS = {
    "libraw": dict(use_camera_wb=True),
    "libraw-linear": dict(use_camera_wb=True, no_auto_bright=True, demosaic_algorithm="LINEAR"),
    "darktable": None,
}
DARKTABLE_TIMEOUT_S = 600


def render_jpeg(raw_path, jpg_path=None, render: str = "libraw", quality: int = 95) -> bytes:
    """Render a raw to an sRGB JPEG the way a camera app would (orientation applied): LibRaw,
    or darktable-cli's default edit; Pillow writes the JPEG at `quality`. -> the JPEG bytes,
    also written to `jpg_path` when given. The one renderer used by the demo, tests, `eval`
    and `batch --render-missing`."""
    rgb = _darktable_rgb(raw_path) if render == "darktable" else _libraw_rgb(raw_path, render)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    if jpg_path is not None:
        with open(jpg_path, "wb") as f:
            f.write(buf.getvalue())
    return buf.getvalue()


def _libraw_rgb(raw_path, render: str) -> np.ndarray:
    import rawpy

    kwargs = dict(RENDERS[render])
    if "demosaic_algorithm" in kwargs:
        kwargs["demosaic_algorithm"] = rawpy.DemosaicAlgorithm[kwargs["demosaic_algorithm"]]
    try:
        with rawpy.imread(os.fspath(raw_path)) as raw:
            return raw.postprocess(**kwargs)
    except (rawpy.LibRawError, ValueError) as e:
        raise BadInputError(raw_path, f"not a raw file LibRaw can render ({type(e).__name__})") from None


def darktable_cli() -> str | None:
    """The darktable-cli executable on the PATH, if it is installed."""
    import shutil

    return shutil.which("darktable-cli")


def _darktable_rgb(raw_path) -> np.ndarray:
    """darktable-cli's default pipeline to an 8-bit PNG in a private config and an in-memory
    library (the user's darktable settings and database are never read or touched)."""
    import subprocess
    import tempfile

    exe = darktable_cli()
    if exe is None:
        raise BadInputError(raw_path, "cannot render with darktable: darktable-cli is not installed")
    with tempfile.TemporaryDirectory(prefix="rawmeta-dt-") as tmp:
        out = os.path.join(tmp, "render.png")
        cmd = [exe, os.fspath(raw_path), out, "--core", "--configdir", os.path.join(tmp, "cfg"),
               "--library", ":memory:"]
        try:
            subprocess.run(cmd, capture_output=True, timeout=DARKTABLE_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise BadInputError(raw_path, "darktable-cli did not finish rendering") from None
        if not os.path.exists(out):
            raise BadInputError(raw_path, "darktable-cli could not render it")
        with Image.open(out) as im:
            return np.asarray(im.convert("RGB"))


def load_srgb(path: str | os.PathLike | None = None, data: bytes | None = None) -> np.ndarray:
    """Decode a JPEG to uint8 RGB (H, W, 3); EXIF orientation is deliberately not applied."""
    src = path if path is not None else "<sRGB>"
    try:
        if data is None:
            with open(path, "rb") as f:
                data = f.read()
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "JPEG":
                raise BadInputError(src, f"not a JPEG file ({im.format or 'unknown'} image)")
            return np.asarray(im.convert("RGB"))
    except OSError as e:
        if isinstance(e, FileNotFoundError):
            raise BadInputError(src, "no such file") from None
        raise BadInputError(src, "not a JPEG file (cannot decode it)") from None
    except Image.DecompressionBombError:
        raise BadInputError(src, "image is implausibly large") from None


def fingerprint(pixels: np.ndarray) -> str:
    """sha256 of the decoded pixels and their shape: tells if the JPEG changed since encoding."""
    h = hashlib.sha256(str(pixels.shape).encode())
    h.update(np.ascontiguousarray(pixels).tobytes())
    return h.hexdigest()


THUMB = 16


def thumbnail(pixels: np.ndarray) -> list[int]:
    """16x16 mean luminance, uint8: lets a decoder say how far a changed JPEG has drifted."""
    small = _shrink(_luma(pixels), (THUMB, THUMB))
    return [int(v) for v in np.clip(np.rint(small), 0, 255).astype(np.uint8).flatten()]


def thumbnail_psnr(a: list[int], b: list[int]) -> float:
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mse = float(np.mean((x - y) ** 2)) if x.shape == y.shape else float("inf")
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# --- the 8 flips / rotations -------------------------------------------------------------

def to_sensor(img: np.ndarray, k: int) -> np.ndarray:
    """Transform k (0..7): rotate k%4 quarter turns, then mirror left-right if k >= 4."""
    out = np.rot90(img, k % 4)
    return out[:, ::-1] if k >= 4 else out


@dataclass
class Geometry:
    transform: int          # to_sensor(srgb, transform) has sensor orientation
    srgb_height: int        # as stored in the JPEG
    srgb_width: int
    sensor_height: int
    sensor_width: int
    top: int = 0            # crop: where the transformed sRGB sits on the sensor
    left: int = 0
    resample: bool = False  # True: uniform scale to the sensor size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, source=None) -> "Geometry":
        if not isinstance(d, dict):
            raise CorruptMetadataError(source, "geometry in the payload is invalid")
        try:
            g = cls(**d)
            ints = (g.transform, g.srgb_height, g.srgb_width, g.sensor_height, g.sensor_width,
                    g.top, g.left)
            ok = (all(isinstance(v, int) and not isinstance(v, bool) for v in ints)
                  and 0 <= g.transform < 8 and isinstance(g.resample, bool)
                  and all(0 < v <= 1 << 16 for v in ints[1:5])
                  and 0 <= g.top <= 1 << 16 and 0 <= g.left <= 1 << 16)
        except TypeError:
            ok = False
        if not ok:
            raise CorruptMetadataError(source, "geometry in the payload is invalid")
        return g


def _luma(img: np.ndarray) -> np.ndarray:
    """(R + 2G + B) / 4 as float32; integer sums (exact, and 4x faster than a float matmul)."""
    s = img[..., 0].astype(np.uint16)
    s += img[..., 1]
    s += img[..., 1]
    s += img[..., 2]
    out = s.astype(np.float32)
    out *= np.float32(0.25)  # in place: one float copy of a 48 MP image is 192 MB
    return out


def _shrink(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float 2-D image to (h, w) with area averaging (Pillow, deterministic)."""
    src = np.ascontiguousarray(img, dtype=np.float32)  # no copy of a contiguous float32 image
    return np.asarray(Image.fromarray(src, "F").resize(size[::-1], Image.BOX))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    a = a - a.mean()
    b = b - b.mean()
    d = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / d) if d > 0 else 0.0


def sensor_luma(mosaic: np.ndarray, stride: int = 2) -> np.ndarray:
    """Gamma-ish luminance of a normalised mosaic: the mean of each 2x2 window (which holds
    all four colours whatever the phase), square-rooted to be comparable with sRGB.
    stride 2 gives half resolution; stride 1 every window (full resolution, shifted 0.5 px).
    """
    m = mosaic
    if stride == 2:
        h, w = m.shape[0] // 2 * 2, m.shape[1] // 2 * 2
        box = m[:h, :w].reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    else:
        box = (m[:-1, :-1] + m[1:, :-1] + m[:-1, 1:] + m[1:, 1:]) * 0.25
    return np.sqrt(np.clip(box, 0, 1))


def find_geometry(srgb: np.ndarray, mosaic: np.ndarray, source=None) -> Geometry:
    """Find how the JPEG maps onto the normalised (H, W) mosaic, or raise BadInputError."""
    H, W = mosaic.shape
    proxy = sensor_luma(mosaic)
    small = (max(8, proxy.shape[0] // 8), max(8, proxy.shape[1] // 8))
    proxy_small = _shrink(proxy, small)
    luma = _luma(srgb)
    luma /= np.float32(255.0)
    shrunk = {}  # box averaging commutes with flips and quarter turns: shrink once per shape
    best = None
    for k in range(8):
        h, w = to_sensor(luma, k).shape
        if not _size_compatible(h, w, H, W):
            continue
        turned = k % 2 == 1
        if turned not in shrunk:
            shrunk[turned] = _shrink(luma, small[::-1] if turned else small)
        score = _corr(to_sensor(shrunk[turned], k), proxy_small)
        if best is None or score > best[0]:
            best = (score, k)
    if best is None:
        raise BadInputError(source, f"sRGB is {srgb.shape[1]}x{srgb.shape[0]}, the raw is {W}x{H}: "
                                    "no flip, crop or uniform scale relates them")
    score, k = best
    if score < MIN_CORRELATION:
        raise BadInputError(source, f"sRGB does not look like a rendering of this raw "
                                    f"(correlation {score:.2f})")
    h, w = to_sensor(luma, k).shape
    geom = Geometry(k, srgb.shape[0], srgb.shape[1], H, W)
    if (h, w) == (H, W):
        return geom
    if _is_crop(h, w, H, W):
        geom.top, geom.left = _crop_offset(to_sensor(luma, k), mosaic)
        return geom
    geom.resample = True
    return geom


def _is_crop(h: int, w: int, H: int, W: int) -> bool:
    return h <= H and w <= W and H - h <= 2 * MAX_CROP_MARGIN and W - w <= 2 * MAX_CROP_MARGIN


def _size_compatible(h: int, w: int, H: int, W: int) -> bool:
    if _is_crop(h, w, H, W):
        return True
    return h <= H and w <= W and abs(h / H - w / W) <= 0.01 * max(h / H, w / W) + 1.0 / min(h, w)


def _crop_offset(t: np.ndarray, mosaic: np.ndarray) -> tuple[int, int]:
    """Integer offset of a cropped rendering on the sensor, by correlation on a central patch."""
    full = sensor_luma(mosaic, stride=1)
    tb = (t[:-1, :-1] + t[1:, :-1] + t[:-1, 1:] + t[1:, 1:]) * 0.25  # same 2x2 box as `full`
    (H, W), (h, w) = full.shape, tb.shape
    ph, pw = min(h, 384), min(w, 384)
    y0, x0 = (h - ph) // 2, (w - pw) // 2
    patch = tb[y0 : y0 + ph, x0 : x0 + pw]
    scores = [(_corr(patch, full[y0 + dy : y0 + dy + ph, x0 + dx : x0 + dx + pw]), dy, dx)
              for dy in range(H - h + 1) for dx in range(W - w + 1)]
    _, dy, dx = max(scores)
    return dy, dx


def align(srgb: np.ndarray, geom: Geometry) -> np.ndarray:
    """The JPEG on the sensor grid: uint8 (H, W, 3), identical in encoder and decoder."""
    if srgb.shape[:2] != (geom.srgb_height, geom.srgb_width):
        raise BadInputError(None, f"sRGB is {srgb.shape[1]}x{srgb.shape[0]}, the metadata "
                                  f"expects {geom.srgb_width}x{geom.srgb_height}")
    t = np.ascontiguousarray(to_sensor(srgb, geom.transform))
    H, W = geom.sensor_height, geom.sensor_width
    if geom.resample:
        return np.asarray(Image.fromarray(t).resize((W, H), Image.BILINEAR))
    h, w = t.shape[:2]
    pad = ((geom.top, H - h - geom.top), (geom.left, W - w - geom.left), (0, 0))
    if min(min(p) for p in pad) < 0:
        raise CorruptMetadataError(None, "geometry places the sRGB outside the sensor")
    return np.pad(t, pad, mode="edge") if any(map(any, pad)) else t
