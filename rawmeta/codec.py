"""encode(raw, sRGB) -> payload bytes, and decode(payload, sRGB) -> raw mosaic.

Every method starts from the global prior (PRIR section); the classical baselines
(rawmeta.baselines) add one section on top of it; `neural` (rawmeta.neural) adds two: the
`local` baseline's colour maps (LOCL) and the learned latent coded on top of them (NEUR),
which the encoder leaves out of an image where it does not pay for its bits.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import rawmeta
from rawmeta import baselines, neural, prior, raw as rawio, srgb as srgbio
from rawmeta.formats.camera import CameraMeta
from rawmeta.formats.errors import BadInputError, CorruptMetadataError
from rawmeta.formats.payload import Payload
from rawmeta.metrics import bpp, psnr, psnr_of_sse, squared_error

BASELINES = ("sam", "local")
SECTION = {"sam": "SAMP", "local": "LOCL"}

METHODS = ("neural", "prior") + BASELINES  # baselines: rawmeta.baselines


def default_method() -> str:
    """neural once shipped weights exist (weights/zoo.json), else the prior."""
    from rawmeta import zoo

    return "neural" if zoo.default_model() else "prior"


@dataclass
class Prepared:
    """Everything encode derives from the inputs, computed once. The decoded JPEG and the
    raw mosaic themselves are not kept (a 48 MP pair holds 240 MB in them)."""
    meta: CameraMeta
    srgb_sha256: str           # fingerprint of the decoded JPEG
    srgb_thumb: list[int]
    srgb_pixels: int
    geometry: srgbio.Geometry
    srgb4: np.ndarray          # (4, 3, h, w) uint8: sRGB at each plane's sites
    planes: np.ndarray         # (4, h, w) float32 normalised raw


@dataclass
class EncodeResult:
    payload: bytes
    psnr: float
    bpp: float
    header: dict


def prepare(raw_path, srgb_path=None, srgb_bytes: bytes | None = None) -> Prepared:
    raw = rawio.read_raw(raw_path)
    srgb = srgbio.load_srgb(srgb_path, srgb_bytes)
    planes = rawio.normalize(rawio.pack(raw.mosaic, raw.meta.cfa), raw.meta)
    mosaic = rawio.unpack(planes, raw.meta.cfa, raw.meta.height, raw.meta.width)
    geom = srgbio.find_geometry(srgb, mosaic, source=srgb_path)
    del mosaic
    srgb4 = prior.srgb_planes(srgbio.align(srgb, geom), rawio.pack, raw.meta.cfa)
    return Prepared(raw.meta, srgbio.fingerprint(srgb), srgbio.thumbnail(srgb),
                    srgb.shape[0] * srgb.shape[1], geom, srgb4, planes)


def encode(raw_path, srgb_path=None, srgb_bytes: bytes | None = None, method: str | None = None,
           prep: Prepared | None = None, quality: float | None = None,
           target_psnr: float | None = None, model: str | None = None,
           device: str = "cpu") -> EncodeResult:
    """quality: 0..100 (neural), sample stride (sam) or block size (local); ignored by prior.
    target_psnr (neural): the lowest quality whose measured PSNR reaches it."""
    method = method or default_method()
    if method not in METHODS:
        raise BadInputError(None, f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    if method in BASELINES:
        quality = baselines.check_quality(method, quality)
    if method != "neural" and target_psnr is not None:
        raise BadInputError(None, "--target-psnr needs --method neural")
    p = prep or prepare(raw_path, srgb_path, srgb_bytes)
    params = prior.fit(p.srgb4, p.planes)
    meta = p.meta
    sections = {"PRIR": prior.to_bytes(params)}
    rebuilt = prior.predict(params, p.srgb4)
    extra = {}
    # Measure what the decoder will deliver: after rounding to the raw's integer codes.
    measure = DecodedPSNR(p.planes, meta)
    if method in BASELINES:
        sections[SECTION[method]], rebuilt = baselines.encode(method, quality, p.planes, p.srgb4,
                                                              rebuilt, meta)
    if method == "neural":  # its rate control measured the PSNR already
        coded, measured, extra = neural.encode(p, rebuilt, quality, target_psnr, model, device,
                                               measure)
        sections.update(coded)
    else:
        measured = measure(rebuilt)
    camera = meta.to_dict()
    exif = camera.pop("extra").get("exif", {})
    header = {
        "software": f"rawmeta {rawmeta.__version__}",
        "method": method,
        "geometry": p.geometry.to_dict(),
        "camera": camera,
        "srgb_sha256": p.srgb_sha256,
        "srgb_thumb": p.srgb_thumb,
        "psnr": round(measured, 4),
    }
    if method in BASELINES:
        header["quality"] = quality
    header.update(extra)
    payload = Payload(header, exif, sections).to_bytes()
    return EncodeResult(payload, header["psnr"], bpp(len(payload), p.srgb_pixels), header)


def _as_decoded(rebuilt: np.ndarray, meta: CameraMeta) -> np.ndarray:
    """Planes as the decoder delivers them: rounded to the raw's integer codes."""
    return rawio.normalize(rawio.denormalize(rebuilt, meta), meta)


class DecodedPSNR:
    """The PSNR the decoder will deliver (after rounding to the raw's integer codes), to 4
    decimals: from whole rebuilt planes, or accumulated tile by tile (no whole-image copy)."""

    def __init__(self, planes: np.ndarray, meta: CameraMeta):
        self.planes, self.meta = planes, meta

    def __call__(self, rebuilt: np.ndarray) -> float:
        acc = self.accumulator()
        if acc is None:  # odd size: compare the visible mosaics
            a = rawio.unpack(_as_decoded(rebuilt, self.meta), self.meta.cfa, self.meta.height,
                             self.meta.width)
            b = rawio.unpack(self.planes, self.meta.cfa, self.meta.height, self.meta.width)
            return round(psnr(a, b), 4)
        band = 512
        for r in range(0, self.planes.shape[1], band):
            acc.add(slice(r, r + band), slice(None), rebuilt[:, r:r + band])
        return acc.result()

    def accumulator(self) -> "_SquaredError | None":
        """None for odd sizes: packing pads them, and the padding must not count."""
        if self.meta.height % 2 or self.meta.width % 2:
            return None
        return _SquaredError(self.planes, self.meta)


class _SquaredError:
    def __init__(self, planes: np.ndarray, meta: CameraMeta):
        self.planes, self.meta, self.sse = planes, meta, 0.0

    def add(self, ys: slice, xs: slice, tile: np.ndarray) -> None:
        self.sse += squared_error(_as_decoded(tile, self.meta), self.planes[:, ys, xs])

    def result(self) -> float:
        return round(psnr_of_sse(self.sse, self.planes.size), 4)


def _check_unchanged(srgb, header, geom, srgb_path, force, warn) -> bool:
    """True when the pixels are those encoded; a changed JPEG is refused unless `force`."""
    if srgb.shape[:2] != (geom.srgb_height, geom.srgb_width):
        raise BadInputError(srgb_path, f"sRGB changed since encoding: it is {srgb.shape[1]}x"
                                       f"{srgb.shape[0]}, the metadata is for {geom.srgb_width}x"
                                       f"{geom.srgb_height} (cropped or rotated?)")
    if srgbio.fingerprint(srgb) == header.get("srgb_sha256"):
        return True
    drift = srgbio.thumbnail_psnr(header.get("srgb_thumb", []), srgbio.thumbnail(srgb))
    if not force:
        raise BadInputError(srgb_path, f"sRGB pixels changed since encoding (re-saved or edited?; "
                                       f"thumbnail PSNR {drift:.1f} dB); --force decodes anyway")
    if warn:
        warn(f"{srgb_path}: sRGB pixels changed since encoding (thumbnail PSNR {drift:.1f} dB); "
             "the rebuilt raw follows the changed pixels")
    return False


def decode(payload: bytes, srgb_path=None, srgb_bytes: bytes | None = None, source=None,
           force: bool = False, warn=None, device: str = "cpu") -> tuple[rawio.RawImage, dict]:
    """Rebuild the raw mosaic from a payload and the JPEG it was made for.

    A JPEG whose pixels changed since encoding is refused unless `force`; then `warn(msg)`
    is told how far it drifted.
    """
    p = Payload.from_bytes(payload, source)
    header = p.header
    method = header.get("method")
    if method not in METHODS:
        raise CorruptMetadataError(source, f"payload uses codec {method!r}, which this rawmeta "
                                           f"does not know (knows {', '.join(METHODS)})")
    meta = CameraMeta.from_dict(header.get("camera", {}), source)
    meta.extra["exif"] = p.exif
    geom = srgbio.Geometry.from_dict(header.get("geometry", {}), source)
    if (geom.sensor_height, geom.sensor_width) != (meta.height, meta.width):
        raise CorruptMetadataError(source, "geometry and camera sizes disagree")
    srgb = srgbio.load_srgb(srgb_path, srgb_bytes)
    unchanged = _check_unchanged(srgb, header, geom, srgb_path, force, warn)
    srgb4 = prior.srgb_planes(srgbio.align(srgb, geom), rawio.pack, meta.cfa)
    del srgb  # 144 MB at 48 MP; only its planes are needed from here on
    if "PRIR" not in p.sections:
        raise CorruptMetadataError(source, "payload has no prior section")
    rebuilt = prior.predict(prior.from_bytes(p.sections["PRIR"], source), srgb4)
    if method in BASELINES:
        quality = baselines.check_quality(method, header.get("quality"), CorruptMetadataError, source)
        if SECTION[method] not in p.sections:
            raise CorruptMetadataError(source, f"payload has no {method} section")
        rebuilt = baselines.decode(method, quality, p.sections[SECTION[method]], srgb4, rebuilt,
                                   meta, source)
    if method == "neural":
        rebuilt = neural.base_of(p.sections, header, srgb4, rebuilt, meta, source)
        if neural.has_latent(header):  # else the encoder found the colour maps enough
            rebuilt = _add_latent(p.sections, header, srgb4, rebuilt, unchanged, device, source,
                                  srgb_path, warn)
    mosaic = rawio.unpack(rawio.denormalize(rebuilt, meta), meta.cfa, meta.height, meta.width)
    return rawio.RawImage(mosaic, meta), header


def _add_latent(sections, header, srgb4, base, unchanged, device, source, srgb_path, warn):
    if "NEUR" not in sections:
        raise CorruptMetadataError(source, "payload has no neural section")
    if unchanged:
        return neural.decode(sections["NEUR"], header, srgb4, base, device, source)
    if warn:  # its entropy model reads the exact pixels: the latent cannot decode
        warn(f"{srgb_path}: the learned latent only decodes against the original pixels; "
             "rebuilt from the colour maps alone (a dB or two lower)")
    return base
