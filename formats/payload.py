"""The rawmeta payload: one self-contained byte string, the same in APP11 and in `.rmeta`.

Layout (little-endian)::

    magic      8 bytes   b"\\x89RMETA\\r\\n"  (catches text-mode and truncation damage)
    major      u8        incompatible changes bump this; unknown major -> clear error
    minor      u8        compatible additions
    n          u16       number of sections (<= MAX_SECTIONS)
    n x section:
        tag    4 bytes   ASCII, e.g. b"HEAD"
        length u32
        crc32  u32       over the fixed 12-byte prefix, tag, length and bytes
        bytes  length

Section HEAD (first, mandatory) is zstd-compressed JSON: geometry, camera metadata, codec
id, sRGB fingerprint, measured PSNR. EXIF is zstd-compressed JSON of capture tags. Codec
sections (prior parameters, latent streams) are opaque here. Every size is checked before
anything is allocated.
"""
from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field

import zstandard

from .errors import CorruptMetadataError

MAGIC = b"\x89RMETA\r\n"
MAJOR = 1
MINOR = 0
MAX_SECTIONS = 4096
MAX_JSON_BYTES = 4 << 20  # decompressed HEAD / EXIF cap
_FIXED = struct.Struct("<8sBBH")
_SECTION = struct.Struct("<4sII")
SECTION_PREFIX = _SECTION.size  # bytes each section adds before its data: tag, length, crc
JSON_SECTIONS = ("HEAD", "EXIF")


@dataclass
class Payload:
    header: dict
    exif: dict = field(default_factory=dict)
    sections: dict[str, bytes] = field(default_factory=dict)  # codec data, tag -> bytes

    def to_bytes(self) -> bytes:
        parts = [("HEAD", _zjson(self.header))]
        if self.exif:
            parts.append(("EXIF", _zjson(self.exif)))
        parts += list(self.sections.items())
        fixed = _FIXED.pack(MAGIC, MAJOR, MINOR, len(parts))
        out = [fixed]
        for tag, data in parts:
            btag = tag.encode("ascii")
            if len(btag) != 4:
                raise ValueError(f"section tag must be 4 ASCII chars: {tag!r}")
            out.append(_SECTION.pack(btag, len(data), _crc(fixed, btag, data)))
            out.append(data)
        return b"".join(out)

    @classmethod
    def from_bytes(cls, data: bytes, source: str | None = None) -> "Payload":
        header, sections = parse(data, source)
        exif = _unzjson(sections.pop("EXIF"), "EXIF", source) if "EXIF" in sections else {}
        return cls(header=header, exif=exif, sections=sections)


def is_payload(data: bytes) -> bool:
    return data[: len(MAGIC)] == MAGIC


def parse(data: bytes, source: str | None = None) -> tuple[dict, dict[str, bytes]]:
    """Validate framing and CRCs; return (header dict, other sections)."""
    if len(data) < _FIXED.size or not is_payload(data):
        raise CorruptMetadataError(source, "not a rawmeta payload (bad magic)")
    _, major, minor, n = _FIXED.unpack_from(data)
    if major != MAJOR:
        raise CorruptMetadataError(
            source, f"payload format version {major}.{minor} is not supported by this "
            f"rawmeta (reads version {MAJOR}.x); upgrade rawmeta")
    if n == 0 or n > MAX_SECTIONS:
        raise CorruptMetadataError(source, f"payload declares {n} sections")
    pos = _FIXED.size
    sections: dict[str, bytes] = {}
    for i in range(n):
        if pos + _SECTION.size > len(data):
            raise CorruptMetadataError(source, f"payload truncated in section {i} header")
        btag, length, crc = _SECTION.unpack_from(data, pos)
        pos += _SECTION.size
        try:
            tag = btag.decode("ascii")
        except UnicodeDecodeError:
            raise CorruptMetadataError(source, f"payload section {i} has a bad tag") from None
        if length > len(data) - pos:
            raise CorruptMetadataError(source, f"payload truncated in section {tag}")
        body = data[pos : pos + length]
        pos += length
        if _crc(data[: _FIXED.size], btag, body) != crc:
            raise CorruptMetadataError(source, f"payload section {tag} fails its CRC check")
        if tag in sections:
            raise CorruptMetadataError(source, f"payload section {tag} appears twice")
        sections[tag] = body
    if pos != len(data):
        raise CorruptMetadataError(source, f"{len(data) - pos} stray bytes after the payload")
    if "HEAD" not in sections:
        raise CorruptMetadataError(source, "payload has no HEAD section")
    header = _unzjson(sections.pop("HEAD"), "HEAD", source)
    return header, sections


def _crc(fixed: bytes, tag: bytes, body: bytes) -> int:
    """CRC32 binding a section to its tag, length and the payload's version prefix."""
    return zlib.crc32(body, zlib.crc32(tag + struct.pack("<I", len(body)), zlib.crc32(fixed)))


def _zjson(obj: dict) -> bytes:
    raw = json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()
    return zstandard.ZstdCompressor(level=19).compress(raw)


def _unzjson(data: bytes, tag: str, source: str | None) -> dict:
    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError:
        raise CorruptMetadataError(source, f"section {tag} is not zstd data") from None
    if size < 0 or size > MAX_JSON_BYTES:
        raise CorruptMetadataError(source, f"section {tag} declares {size} bytes")
    try:
        raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_JSON_BYTES)
        obj = json.loads(raw)
    except (zstandard.ZstdError, ValueError):
        raise CorruptMetadataError(source, f"section {tag} does not decode") from None
    if not isinstance(obj, dict):
        raise CorruptMetadataError(source, f"section {tag} is not a JSON object")
    return obj
