"""Deterministic arithmetic coding of one latent tile with CompressAI's rANS coder.

One stream per tile holds, in order: the hyper-latent z (EntropyBottleneck tables), the
checkerboard anchors of v, then the other half, whose Gaussians depend on the decoded
anchors. The networks that choose CDFs run in float64 on the CPU (`ProbabilityPath`): the
same scale indices on every thread count and instruction set. `symbol_hash` lets the decoder
prove it decoded the symbols the encoder wrote; a mismatch is an error, never garbage.
"""
from __future__ import annotations

import copy
import hashlib
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import torch

from rawmeta.formats.errors import CorruptMetadataError
from rawmeta.network import HYPER_STRIDE, RawMetaNet, checkerboard  # imports compressai quietly
from compressai.ans import BufferedRansEncoder, RansDecoder  # noqa: E402

ENTRY = struct.Struct("<II8s")   # per tile: stream length, crc32, symbol hash
MAX_TILES = 4096


class ProbabilityPath:
    """float64 copies of the networks that pick CDFs, plus the coder's tables as lists."""

    def __init__(self, net: RawMetaNet):
        self.net = net
        plain = {"device": "cpu", "memory_format": torch.contiguous_format}  # whatever net's is
        self.mods = {name: copy.deepcopy(getattr(net, name)).to(**plain).double().eval()
                     for name in ("h_s", "side", "ep_anchor", "ctx", "ep_other")}
        self.h_a = copy.deepcopy(net.h_a).to(**plain).float().eval()  # encoder only
        eb, gc = net.entropy_bottleneck, net.gaussian_conditional
        self.z_tables = _tables(eb)
        self.y_tables = _tables(gc)
        self.z_medians = eb._get_medians().detach().double().view(1, -1, 1, 1)
        self.gc = gc
        # compressai's build_indexes loops over the table (35 s on a 12 MP latent); the same
        # index - how many of table[:-1] lie below the lower-bounded scale - by binary search
        self.table = gc.scale_table[:-1].detach().double().contiguous()
        self.scale_bound = float(gc.lower_bound_scale.bound)
        self.n_hyper = eb.channels if hasattr(eb, "channels") else eb.quantiles.shape[0]

    @torch.no_grad()
    def anchor_params(self, z_hat, side, qpos):
        m = self.mods
        b, _, h, w = side.shape
        qmap = torch.full((b, 1, h, w), qpos, dtype=torch.float64)
        hs = m["h_s"](z_hat)[..., :h, :w]
        hidden = torch.cat([hs, m["side"](torch.cat([side, qmap], 1))], 1)
        first = m["ep_anchor"][0](hidden)
        scales, means = m["ep_anchor"][1:](first).chunk(2, 1)
        return first, scales, means

    @torch.no_grad()
    def other_params(self, first, anchors_hat):
        out = self.mods["ep_other"](torch.cat([first, self.mods["ctx"](anchors_hat)], 1))
        return out.chunk(2, 1)

    def indexes(self, scales: torch.Tensor) -> torch.Tensor:
        """= GaussianConditional.build_indexes(scales), in O(log n) per element."""
        bounded = torch.clamp_min(scales.double(), self.scale_bound).contiguous()
        return torch.searchsorted(self.table, bounded).int()


def _tables(model) -> tuple:
    return (model._quantized_cdf.tolist(), model._cdf_length.reshape(-1).int().tolist(),
            model._offset.reshape(-1).int().tolist())


@dataclass
class TileStream:
    data: bytes
    symbol_hash: bytes


def symbol_hash(*arrays) -> bytes:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a, dtype="<i4").tobytes())
    return h.digest()[:8]


def _z_indexes(pp: ProbabilityPath, shape) -> list[int]:
    idx = torch.arange(shape[1]).view(1, -1, 1, 1).expand(shape)
    return idx.reshape(-1).tolist()


@torch.no_grad()
def encode_tile(pp: ProbabilityPath, v: torch.Tensor, side: torch.Tensor, qpos: float
                ) -> tuple[TileStream, torch.Tensor]:
    """v (1, M, h, w) float32, side (1, 24, h, w) float64 -> (stream, v_hat float64)."""
    z = pp.h_a(v.float()).double()
    z_sym = torch.round(z - pp.z_medians).int()
    z_hat = z_sym.double() + pp.z_medians
    enc = BufferedRansEncoder()
    enc.encode_with_indexes(z_sym.reshape(-1).tolist(), _z_indexes(pp, z.shape), *pp.z_tables)
    v = v.double()
    mask = checkerboard(v.shape[2], v.shape[3]).expand_as(v)
    first, s_a, m_a = pp.anchor_params(z_hat, side, qpos)
    sym_a = torch.round(v - m_a).int()
    enc.encode_with_indexes(sym_a[mask].tolist(), pp.indexes(s_a)[mask].tolist(), *pp.y_tables)
    anchors_hat = torch.where(mask, sym_a.double() + m_a, torch.zeros_like(v))
    s_o, m_o = pp.other_params(first, anchors_hat)
    sym_o = torch.round(v - m_o).int()
    enc.encode_with_indexes(sym_o[~mask].tolist(), pp.indexes(s_o)[~mask].tolist(), *pp.y_tables)
    v_hat = torch.where(mask, anchors_hat, sym_o.double() + m_o)
    digest = symbol_hash(z_sym.numpy(), sym_a[mask].numpy(), sym_o[~mask].numpy())
    return TileStream(enc.flush(), digest), v_hat


def _ints(values: list) -> torch.Tensor:
    return torch.from_numpy(np.array(values, dtype=np.int32))  # 2.5x faster than torch.tensor


def _read_guard(zshape, m: int, h: int, w: int) -> int:
    """Zero bytes appended before decoding. CompressAI's rANS decoder does not check the end
    of its buffer: a damaged stream (or a hostile one with a valid CRC) would read past it.
    Each symbol reads at most one 32-bit word plus its bypass bits, and zeros end a bypass
    run, so 8 bytes per symbol keep every read inside the buffer."""
    symbols = int(np.prod(zshape)) + m * h * w
    return 8 * symbols + 64


@torch.no_grad()
def decode_tile(pp: ProbabilityPath, stream: TileStream, side: torch.Tensor, qpos: float,
                m: int, source=None, tile: int = 0) -> torch.Tensor:
    """-> v_hat (1, M, h, w) float64; raises CorruptMetadataError on a symbol-hash mismatch."""
    _, _, h, w = side.shape
    zh, zw = -(-h // HYPER_STRIDE), -(-w // HYPER_STRIDE)
    zshape = (1, pp.n_hyper, zh, zw)
    dec = RansDecoder()
    dec.set_stream(stream.data + bytes(_read_guard(zshape, m, h, w)))
    z_sym = _ints(dec.decode_stream(_z_indexes(pp, zshape), *pp.z_tables)).view(zshape)
    z_hat = z_sym.double() + pp.z_medians
    mask = checkerboard(h, w).expand(1, m, h, w)
    first, s_a, m_a = pp.anchor_params(z_hat, side, qpos)
    sym_a = torch.zeros((1, m, h, w), dtype=torch.int32)
    sym_a[mask] = _ints(dec.decode_stream(pp.indexes(s_a)[mask].tolist(), *pp.y_tables))
    anchors_hat = torch.where(mask, sym_a.double() + m_a, torch.zeros(1, m, h, w, dtype=torch.float64))
    s_o, m_o = pp.other_params(first, anchors_hat)
    sym_o = torch.zeros((1, m, h, w), dtype=torch.int32)
    sym_o[~mask] = _ints(dec.decode_stream(pp.indexes(s_o)[~mask].tolist(), *pp.y_tables))
    digest = symbol_hash(z_sym.numpy(), sym_a[mask].numpy(), sym_o[~mask].numpy())
    if digest != stream.symbol_hash:
        raise CorruptMetadataError(source, f"latent tile {tile} decoded to different symbols than "
                                           "were encoded (damaged stream or a non-deterministic "
                                           "platform); refusing to write a wrong raw")
    return torch.where(mask, anchors_hat, sym_o.double() + m_o)


# --- the section that holds all tile streams -------------------------------------------

def pack_streams(streams: list[TileStream]) -> bytes:
    table = b"".join(ENTRY.pack(len(s.data), zlib.crc32(s.data), s.symbol_hash) for s in streams)
    return table + b"".join(s.data for s in streams)


def unpack_streams(section: bytes, count: int, source=None) -> list[TileStream]:
    if not 0 < count <= MAX_TILES:
        raise CorruptMetadataError(source, f"tile count {count} out of range")
    head = ENTRY.size * count
    if len(section) < head:
        raise CorruptMetadataError(source, "neural section shorter than its tile table")
    entries = [ENTRY.unpack_from(section, i * ENTRY.size) for i in range(count)]
    if head + sum(e[0] for e in entries) != len(section):
        raise CorruptMetadataError(source, "neural section length disagrees with its tile table")
    out, pos = [], head
    for i, (length, crc, digest) in enumerate(entries):
        data = section[pos:pos + length]
        pos += length
        if zlib.crc32(data) != crc:
            raise CorruptMetadataError(source, f"latent tile {i} is damaged (CRC mismatch)")
        out.append(TileStream(data, digest))
    return out
