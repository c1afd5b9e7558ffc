"""encode(raw, sRGB) -> payload bytes, and decode(payload, sRGB) -> raw mosaic.

The codec is the global prior today; learned methods add sections on top of it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import rawmeta
from rawmeta import baselines, prior, raw as rawio, srgb as srgbio
from rawmeta.formats.camera import CameraMeta
from rawmeta.formats.errors import BadInputError, CorruptMetadataError
from rawmeta.formats.payload import Payload
from rawmeta.metrics import bpp, psnr

BASELINES = ("sam", "local")
SECTION = {"sam": "SAMP", "local": "LOCL"}

METHODS = ("prior",) + BASELINES  # baselines: rawmeta.baselines


@dataclass
class Prepared:
    """Everything both sides derive from the inputs, computed once."""
    raw: rawio.RawImage
    srgb: np.ndarray           # decoded JPEG, as stored
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
    srgb4 = prior.srgb_planes(srgbio.align(srgb, geom), rawio.pack, raw.meta.cfa)
    return Prepared(raw, srgb, geom, srgb4, planes)


def encode(raw_path, srgb_path=None, srgb_bytes: bytes | None = None, method: str = "prior",
           prep: Prepared | None = None, quality: int | None = None) -> EncodeResult:
    """quality: sample stride (sam) or block size (local); ignored by prior."""
    if method not in METHODS:
        raise BadInputError(None, f"unknown method {method!r} (choose from {', '.join(METHODS)})")
    if method in BASELINES:
        quality = baselines.check_quality(method, quality)
    p = prep or prepare(raw_path, srgb_path, srgb_bytes)
    params = prior.fit(p.srgb4, p.planes)
    meta = p.raw.meta
    sections = {"PRIR": prior.to_bytes(params)}
    rebuilt = prior.predict(params, p.srgb4)
    if method in BASELINES:
        sections[SECTION[method]], rebuilt = baselines.encode(method, quality, p.planes, p.srgb4,
                                                              rebuilt, meta)
    # Measure what the decoder will deliver: after rounding to the raw's integer codes.
    rebuilt = rawio.normalize(rawio.denormalize(rebuilt, meta), meta)
    camera = meta.to_dict()
    exif = camera.pop("extra").get("exif", {})
    header = {
        "software": f"rawmeta {rawmeta.__version__}",
        "method": method,
        "geometry": p.geometry.to_dict(),
        "camera": camera,
        "srgb_sha256": srgbio.fingerprint(p.srgb),
        "srgb_thumb": srgbio.thumbnail(p.srgb),
        "psnr": round(_psnr_visible(rebuilt, p.planes, meta), 4),
    }
    if method in BASELINES:
        header["quality"] = quality
    payload = Payload(header, exif, sections).to_bytes()
    pixels = p.srgb.shape[0] * p.srgb.shape[1]
    return EncodeResult(payload, header["psnr"], bpp(len(payload), pixels), header)


def _psnr_visible(rebuilt: np.ndarray, planes: np.ndarray, meta: CameraMeta) -> float:
    """PSNR over the visible mosaic (packing pads odd sizes; the padding must not count)."""
    a = rawio.unpack(rebuilt, meta.cfa, meta.height, meta.width)
    b = rawio.unpack(planes, meta.cfa, meta.height, meta.width)
    return psnr(a, b)


def _check_unchanged(srgb, header, geom, srgb_path, force, warn) -> None:
    if srgb.shape[:2] != (geom.srgb_height, geom.srgb_width):
        raise BadInputError(srgb_path, f"sRGB changed since encoding: it is {srgb.shape[1]}x"
                                       f"{srgb.shape[0]}, the metadata is for {geom.srgb_width}x"
                                       f"{geom.srgb_height} (cropped or rotated?)")
    if srgbio.fingerprint(srgb) == header.get("srgb_sha256"):
        return
    drift = srgbio.thumbnail_psnr(header.get("srgb_thumb", []), srgbio.thumbnail(srgb))
    if not force:
        raise BadInputError(srgb_path, f"sRGB pixels changed since encoding (re-saved or edited?; "
                                       f"thumbnail PSNR {drift:.1f} dB); --force decodes anyway")
    if warn:
        warn(f"{srgb_path}: sRGB pixels changed since encoding (thumbnail PSNR {drift:.1f} dB); "
             "the rebuilt raw follows the changed pixels")


def decode(payload: bytes, srgb_path=None, srgb_bytes: bytes | None = None, source=None,
           force: bool = False, warn=None) -> tuple[rawio.RawImage, dict]:
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
    _check_unchanged(srgb, header, geom, srgb_path, force, warn)
    srgb4 = prior.srgb_planes(srgbio.align(srgb, geom), rawio.pack, meta.cfa)
    if "PRIR" not in p.sections:
        raise CorruptMetadataError(source, "payload has no prior section")
    rebuilt = prior.predict(prior.from_bytes(p.sections["PRIR"], source), srgb4)
    if method in BASELINES:
        quality = baselines.check_quality(method, header.get("quality"), CorruptMetadataError, source)
        if SECTION[method] not in p.sections:
            raise CorruptMetadataError(source, f"payload has no {method} section")
        rebuilt = baselines.decode(method, quality, p.sections[SECTION[method]], srgb4, rebuilt,
                                   meta, source)
    mosaic = rawio.unpack(rawio.denormalize(rebuilt, meta), meta.cfa, meta.height, meta.width)
    return rawio.RawImage(mosaic, meta), header
