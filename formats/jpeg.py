"""Carry a payload inside a JPEG as a JUMBF box (ISO/IEC 19566-5) in APP11 segments.

This is how JPEG XT and C2PA store binary data. Each APP11 segment::

    FF EB  Le(u16, counts itself)  'JP'  En(u16 box instance)  Z(u32 packet sequence, from 1)
    then the superbox's LBox+TBox ('jumb'), then the next chunk of the superbox body.

The first packet carries the whole superbox start; later packets repeat only the 8-byte
LBox+TBox and continue the body. Our superbox holds a description box `jumd` (rawmeta UUID,
label "rawmeta") and a binary data box `bidb` with the payload.

Embedding only inserts segments: every other byte of the file, the entropy-coded scan
included, is copied unchanged, so the decoded pixels cannot change.
"""
from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from .errors import BadInputError, CorruptMetadataError

SOI, SOS, EOI = 0xD8, 0xDA, 0xD9
APP0, APP1, APP2, APP11 = 0xE0, 0xE1, 0xE2, 0xEB
RAWMETA_UUID = uuid.UUID("5f1c0a3e-7d2b-4c8e-9a41-72617765746d")  # ends in "rawmet"
LABEL = b"rawmeta"
_MAX_SEGMENT_DATA = 65535 - 2  # after the Le field
_PACKET_HEAD = struct.Struct(">2sHI")  # CI, En, Z
_BOX = struct.Struct(">I4s")
_MAX_PACKETS = 1 << 16


@dataclass
class Segment:
    marker: int
    data: bytes  # the whole segment, marker and length included

    @property
    def body(self) -> bytes:
        return self.data[4:]


def split(jpeg: bytes, source=None) -> tuple[list[Segment], bytes]:
    """Split into the marker segments before the first SOS and the rest (SOS onwards)."""
    if jpeg[:2] != b"\xff\xd8":
        raise BadInputError(source, "not a JPEG file (no SOI marker)")
    segments, pos, n = [], 2, len(jpeg)
    while True:
        if pos >= n or jpeg[pos] != 0xFF:
            raise BadInputError(source, f"broken JPEG marker structure at byte {pos}")
        while pos < n and jpeg[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            raise BadInputError(source, "JPEG ends inside a marker")
        marker = jpeg[pos]
        start = pos - 1
        pos += 1
        if marker == SOS:
            return segments, jpeg[start:]
        if marker == EOI:
            raise BadInputError(source, "JPEG has no image data (EOI before SOS)")
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            segments.append(Segment(marker, jpeg[start:pos]))
            continue
        if pos + 2 > n:
            raise BadInputError(source, "JPEG truncated in a segment length")
        (length,) = struct.unpack_from(">H", jpeg, pos)
        if length < 2 or pos + length > n:
            raise BadInputError(source, f"JPEG segment at byte {start} overruns the file")
        segments.append(Segment(marker, b"\xff" + jpeg[start + 1 : pos + length]))
        pos += length


def _jumbf_packets(segments: list[Segment]) -> dict[int, list[tuple[int, bytes]]]:
    """APP11 JUMBF packets grouped by box instance: En -> [(Z, packet body)]."""
    groups: dict[int, list[tuple[int, bytes]]] = {}
    for seg in segments:
        body = seg.body
        if seg.marker == APP11 and len(body) >= _PACKET_HEAD.size + _BOX.size and body[:2] == b"JP":
            _, en, z = _PACKET_HEAD.unpack_from(body)
            groups.setdefault(en, []).append((z, body[_PACKET_HEAD.size :]))
    return groups


def _is_ours(first_packet: bytes) -> bool:
    """Does this superbox start with a jumd carrying our UUID and label?"""
    if len(first_packet) < 8 + 8 + 17 or first_packet[4:8] != b"jumb":
        return False
    desc = first_packet[8:]
    return desc[4:8] == b"jumd" and desc[8:24] == RAWMETA_UUID.bytes and desc[25:].startswith(LABEL + b"\0")


def _our_instance(groups) -> int | None:
    for en, packets in groups.items():
        first = [p for z, p in packets if z == 1]
        if first and _is_ours(first[0]):
            return en
    return None


def build_superbox(payload: bytes) -> bytes:
    label = LABEL + b"\0"
    jumd_body = RAWMETA_UUID.bytes + bytes([0x03]) + label  # toggles: requestable | label
    jumd = _BOX.pack(_BOX.size + len(jumd_body), b"jumd") + jumd_body
    bidb = _BOX.pack(_BOX.size + len(payload), b"bidb") + payload
    total = _BOX.size + len(jumd) + len(bidb)
    if total >= 1 << 32:
        raise ValueError("payload too large for a JUMBF box")
    return _BOX.pack(total, b"jumb") + jumd + bidb


def build_segments(payload: bytes, en: int) -> list[bytes]:
    box = build_superbox(payload)
    head, rest = box[:8], box[8:]
    chunk = _MAX_SEGMENT_DATA - 2 - _PACKET_HEAD.size - len(head)
    out = []
    for z, off in enumerate(range(0, max(len(rest), 1), chunk), start=1):
        body = _PACKET_HEAD.pack(b"JP", en, z) + head + rest[off : off + chunk]
        out.append(b"\xff\xeb" + struct.pack(">H", len(body) + 2) + body)
    return out


def _insert_index(segments: list[Segment]) -> int:
    """After the leading APP0/APP1/APP2 run, before DQT and everything else."""
    idx = 0
    for i, seg in enumerate(segments):
        if seg.marker in (APP0, APP1, APP2):
            idx = i + 1
        elif not (0xE0 <= seg.marker <= 0xEF or seg.marker == 0xFE):
            break
    return idx


def embed(jpeg: bytes, payload: bytes, source=None) -> bytes:
    """Return `jpeg` with `payload` in APP11, replacing an earlier rawmeta box."""
    segments, scan = split(jpeg, source)
    groups = _jumbf_packets(segments)
    ours = _our_instance(groups)
    if ours is not None:
        segments = [s for s in segments if not _belongs(s, ours)]
        del groups[ours]
    en = next(i for i in range(1, 1 << 16) if i not in groups)
    idx = _insert_index(segments)
    new = [s.data for s in segments[:idx]] + build_segments(payload, en) + [s.data for s in segments[idx:]]
    return b"\xff\xd8" + b"".join(new) + scan


def _belongs(seg: Segment, en: int) -> bool:
    body = seg.body
    return (seg.marker == APP11 and len(body) >= _PACKET_HEAD.size and body[:2] == b"JP"
            and _PACKET_HEAD.unpack_from(body)[1] == en)


def strip(jpeg: bytes, source=None) -> bytes:
    """Return `jpeg` without our box (unchanged if it has none)."""
    segments, scan = split(jpeg, source)
    ours = _our_instance(_jumbf_packets(segments))
    keep = [s.data for s in segments if ours is None or not _belongs(s, ours)]
    return b"\xff\xd8" + b"".join(keep) + scan


def extract(jpeg: bytes, source=None) -> bytes | None:
    """The embedded payload, None if there is no rawmeta box; corrupt boxes raise."""
    segments, _ = split(jpeg, source)
    groups = _jumbf_packets(segments)
    en = _our_instance(groups)
    if en is None:
        return None
    packets = sorted(groups[en])
    if len(packets) > _MAX_PACKETS or [z for z, _ in packets] != list(range(1, len(packets) + 1)):
        raise CorruptMetadataError(source, "rawmeta APP11 segments are missing or duplicated")
    head = packets[0][1][:8]
    if any(p[:8] != head for _, p in packets):
        raise CorruptMetadataError(source, "rawmeta APP11 segments disagree on the box header")
    box = head + b"".join(p[8:] for _, p in packets)
    (lbox,) = struct.unpack_from(">I", box)
    if lbox != len(box):
        raise CorruptMetadataError(source, f"rawmeta JUMBF box is {len(box)} bytes, declares {lbox}")
    return _find_bidb(box, source)


def _find_bidb(box: bytes, source) -> bytes:
    pos = 8
    while pos + 8 <= len(box):
        length, kind = _BOX.unpack_from(box, pos)
        if length < 8 or pos + length > len(box):
            raise CorruptMetadataError(source, "rawmeta JUMBF box has a bad child box length")
        if kind == b"bidb":
            return box[pos + 8 : pos + length]
        pos += length
    raise CorruptMetadataError(source, "rawmeta JUMBF box has no data box")


def scan_bytes(jpeg: bytes, source=None) -> bytes:
    """The SOS-onwards part: must stay byte-identical through embedding."""
    return split(jpeg, source)[1]
