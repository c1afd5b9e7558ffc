"""The neural method of `rawmeta.codec`: tiled transforms, rate control, the NEUR section.

Memory stays bounded by the tile, not the image: the analysis and synthesis run on
TILE x TILE half-resolution tiles plus a halo (results equal the whole-image network's),
and the latent is coded in independent tiles of TILE / STRIDE cells, one rANS stream each.
Only the latent (1/256 of the pixels x M channels) is held for the whole image.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from rawmeta.formats.errors import BadInputError, CorruptMetadataError

TILE = 512            # half-resolution pixels per tile side (1024 sensor pixels)
QUALITY_MAX = 100.0   # user scale 0..100 -> the model's levels 0..levels-1
DEFAULT_QUALITY = 50.0
SECTION = "NEUR"


def preload() -> None:
    """Import torch, compressai and the network on a background thread. The import (~2.5 s
    here) then overlaps with reading the raw and the JPEG; the first real use simply waits
    on Python's import lock until it is complete."""
    import threading

    def run():
        try:
            import rawmeta.entropy  # noqa: F401  (torch, compressai, rawmeta.network)
        except Exception:  # the same import on the main thread reports the problem
            pass
    threading.Thread(target=run, name="rawmeta-preload", daemon=True).start()


def _torch():
    import torch
    return torch


def resolve_device(device: str):
    torch = _torch()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise BadInputError(None, "--device cuda: no CUDA device is available")
    return torch.device(device)


@dataclass
class Inputs:
    """What both sides compute from the JPEG and the prior. The arrays are the caller's own
    (no whole-image copies: windows past the edge are edge-padded on the fly up to the
    latent stride), and the network's float input is built per tile."""
    srgb12: np.ndarray   # uint8 (12, h, w): the sRGB at each plane's sites
    prior: np.ndarray    # float32 (4, h, w)
    side: np.ndarray     # float64 (24, H/8, W/8) of the padded extent
    h: int
    w: int

    @property
    def shape(self) -> tuple[int, int]:
        """The padded extent (multiples of the latent stride) the tiles cover."""
        from rawmeta.network import STRIDE

        return self.h + (-self.h) % STRIDE, self.w + (-self.w) % STRIDE

    def u(self, ys: slice, xs: slice) -> np.ndarray:
        """float32 (16, ...) network input of a window: sRGB / 255, prior."""
        out = np.empty((16, ys.stop - ys.start, xs.stop - xs.start), np.float32)
        np.divide(window(self.srgb12, ys, xs, self.h, self.w), np.float32(255), out=out[:12])
        out[12:] = window(self.prior, ys, xs, self.h, self.w)
        return out


def window(a: np.ndarray, ys: slice, xs: slice, h: int, w: int) -> np.ndarray:
    """a[:, ys, xs] of the (.., h, w) array `a` edge-padded to infinity (= np.pad 'edge')."""
    if ys.stop <= h and xs.stop <= w:
        return a[:, ys, xs]
    rows = np.minimum(np.arange(ys.start, ys.stop), h - 1)
    cols = np.minimum(np.arange(xs.start, xs.stop), w - 1)
    return a[:, rows[:, None], cols[None, :]]


def make_inputs(srgb4: np.ndarray, prior_pred: np.ndarray) -> Inputs:
    from rawmeta.network import STRIDE, side_features

    _, _, h, w = srgb4.shape
    s12 = srgb4.reshape(12, h, w)
    prior = prior_pred.astype(np.float32, copy=False)
    H, W = h + (-h) % STRIDE, w + (-w) % STRIDE
    band = 64 * STRIDE  # block statistics band by band: no padded copy of the whole sRGB
    side = np.concatenate([side_features(window(s12, slice(y, min(y + band, H)), slice(0, W), h, w))
                           for y in range(0, H, band)], 1)
    return Inputs(s12, prior, side, h, w)


def _tiles(n: int, size: int):
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def _nhwc(t, device):
    return t.to(device).contiguous(memory_format=_torch().channels_last)


def place(net, device):
    """The transforms run channels-last: oneDNN's convolutions are ~30% faster that way on
    this CPU (measured on a 512-pixel tile: 0.28 s -> 0.20 s)."""
    return net.to(device, memory_format=_torch().channels_last)


def _run_tiled(fn, inp: Inputs, out_stride: int, out_channels: int, device, halo: int,
               extra=None, sink=None):
    """Run fn(u_tile, extra_tile) over halo'd tiles; returns the stitched float32 output, or
    with `sink` hands each tile's output to sink(y0, y1, x0, x1, tile) and keeps nothing.
    out_stride: input pixels per output pixel (8 for the analysis, 1 for the synthesis).
    extra(ys, xs) -> the array to pass alongside u for that window (or None)."""
    torch = _torch()
    H, W = inp.shape
    s = out_stride
    out = None if sink else np.empty((out_channels, H // s, W // s), np.float32)
    for y0, y1 in _tiles(H, TILE):
        for x0, x1 in _tiles(W, TILE):
            a0, a1 = max(0, y0 - halo), min(H, y1 + halo)
            b0, b1 = max(0, x0 - halo), min(W, x1 + halo)
            win = (slice(a0, a1), slice(b0, b1))
            ut = _nhwc(torch.from_numpy(inp.u(*win))[None], device)
            et = None if extra is None else _nhwc(torch.from_numpy(extra(*win))[None], device)
            with torch.no_grad():
                res = fn(ut, et)[0].float().cpu().numpy()
            tile = res[:, (y0 - a0) // s:(y1 - a0) // s, (x0 - b0) // s:(x1 - b0) // s]
            if sink:
                sink(y0 // s, y1 // s, x0 // s, x1 // s, tile)
            else:
                out[:, y0 // s:y1 // s, x0 // s:x1 // s] = tile
    return out


def analysis(net, inp: Inputs, planes: np.ndarray, device, sink=None) -> np.ndarray | None:
    """Encoder: the latent y (M, H/8, W/8) of the whole image, tile by tile; with `sink`,
    each tile goes to sink(y0, y1, x0, x1, tile) (latent coordinates) instead."""
    from rawmeta.network import ANALYSIS_HALO, STRIDE

    H, W = inp.shape

    def raw_window(ys: slice, xs: slice) -> np.ndarray:  # edge-padded like the inputs
        return window(planes, ys, xs, inp.h, inp.w).astype(np.float32)

    def fn(u, x):
        return net.analysis(x, u, net.features(u))
    return _run_tiled(fn, inp, STRIDE, net.m, device, ANALYSIS_HALO, extra=raw_window, sink=sink)


def synthesis(net, inp: Inputs, y_hat, device, sink=None) -> np.ndarray | None:
    """Both sides: rebuilt planes (4, h, w) float32 in [0, 1] from the decoded latent (an
    array, or a LatentCoder/LatentDecoder still producing it); with `sink`, each tile's
    clipped planes go to sink(ys, xs, tile) instead (nothing is kept)."""
    from rawmeta.network import STRIDE, SYNTHESIS_HALO

    def latent_window(ys: slice, xs: slice) -> np.ndarray:
        ys = slice(ys.start // STRIDE, ys.stop // STRIDE)
        xs = slice(xs.start // STRIDE, xs.stop // STRIDE)
        if isinstance(y_hat, _LatentTiles):
            return y_hat.window(ys, xs)
        return y_hat[:, ys, xs]

    def fn(u, y):
        return u[:, 12:16] + net.synthesis(y, net.features(u))

    def visible(y0, y1, x0, x1, tile):  # the padding past the image edge is not delivered
        y1, x1 = min(y1, inp.h), min(x1, inp.w)
        tile = tile[:, :y1 - y0, :x1 - x0]
        sink(slice(y0, y1), slice(x0, x1), np.clip(tile, 0.0, 1.0, out=tile))

    if sink:
        _run_tiled(fn, inp, 1, 4, device, SYNTHESIS_HALO, extra=latent_window, sink=visible)
        return None
    out = _run_tiled(fn, inp, 1, 4, device, SYNTHESIS_HALO, extra=latent_window)[:, :inp.h, :inp.w]
    return np.clip(out, 0.0, 1.0, out=out)


def _measured(net, inp: Inputs, y_hat: np.ndarray, device, measure) -> float:
    """The PSNR the decoder will deliver (measure: codec.DecodedPSNR): tile by tile when it
    can accumulate (no whole-image rebuilt planes on the encoder), else from whole planes."""
    acc = measure.accumulator()
    if acc is None:
        return measure(synthesis(net, inp, y_hat, device))
    synthesis(net, inp, y_hat, device, sink=acc.add)
    return acc.result()


def gains(net, q_level: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel gain and inverse gain at a continuous level, in float64 with math.exp
    (scalar libm: no SIMD variant that could differ between instruction sets)."""
    lo = min(int(math.floor(q_level)), net.levels - 2)
    t = q_level - lo
    lg = net.log_gain.detach().double().numpy()
    lig = net.log_igain.detach().double().numpy()
    g = [math.exp(lg[lo, c] * (1 - t) + lg[lo + 1, c] * t) for c in range(net.m)]
    ig = [math.exp(lig[lo, c] * (1 - t) + lig[lo + 1, c] * t) for c in range(net.m)]
    return np.array(g), np.array(ig)


def level_of(net, quality: float) -> float:
    return float(quality) / QUALITY_MAX * (net.levels - 1)


def latent_boxes(h8: int, w8: int) -> list[tuple[int, int, int, int]]:
    """The latent coding tiles (y0, y1, x0, x1), in stream order."""
    lt = TILE // 8
    return [(a, b, c, d) for a, b in _tiles(h8, lt) for c, d in _tiles(w8, lt)]


class _LatentTiles:
    """The quantised latent y_hat (M, H/8, W/8), produced tile by tile by `_tile(i, item)`,
    on a worker thread when `threaded`: the rANS coder and the float64 probability path are
    partly single-threaded, so they overlap the main thread's convolutions (HERO6 12 MP,
    analysis + coding + synthesis: 4.8 -> 3.9 s). `window` waits for the tiles it needs.
    Every tile is coded on its own: the streams and y_hat are the same threaded or not."""

    def __init__(self, pp, side: np.ndarray, net, quality: float, threaded: bool):
        import queue
        import threading

        self.pp, self.side, self.net = pp, side, net
        level = level_of(net, quality)
        self.g, self.ig = gains(net, level)
        self.qpos = level / (net.levels - 1)
        self.boxes = latent_boxes(*side.shape[1:])
        self.y_hat = np.empty((net.m, *side.shape[1:]), np.float32)
        self.done = [threading.Event() for _ in self.boxes]
        self.error: BaseException | None = None
        self._queue = queue.SimpleQueue() if threaded else None
        if threaded:
            threading.Thread(target=self._work, name="rawmeta-latent", daemon=True).start()

    def _submit(self, i: int, item) -> None:
        if self._queue is None:
            self._tile(i, item)
        else:
            self._queue.put((i, item))

    def close(self) -> None:
        """Let the worker end (also after an error on the main thread)."""
        if self._queue is not None:
            self._queue.put(None)

    def _work(self) -> None:
        try:
            while (job := self._queue.get()) is not None:
                self._tile(*job)
        except BaseException as exc:  # re-raised on the main thread by window()/wait_all()
            self.error = exc
            for event in self.done:
                event.set()

    def _side(self, box):
        y0, y1, x0, x1 = box
        return _torch().from_numpy(np.ascontiguousarray(self.side[:, y0:y1, x0:x1]))[None]

    def _store(self, i: int, v_hat) -> None:
        y0, y1, x0, x1 = self.boxes[i]
        self.y_hat[:, y0:y1, x0:x1] = v_hat[0].numpy() * self.ig[:, None, None]
        self.done[i].set()

    def _wait(self, indexes) -> None:
        for i in indexes:
            self.done[i].wait()
        if self.error is not None:
            raise self.error

    def window(self, ys: slice, xs: slice) -> np.ndarray:
        """y_hat[:, ys, xs] once every tile it overlaps is done."""
        self._wait(i for i, (y0, y1, x0, x1) in enumerate(self.boxes)
                   if y0 < ys.stop and ys.start < y1 and x0 < xs.stop and xs.start < x1)
        return self.y_hat[:, ys, xs]

    def wait_all(self) -> np.ndarray:
        self._wait(range(len(self.boxes)))
        self.close()
        return self.y_hat


class LatentCoder(_LatentTiles):
    """Encoder: `add` takes the analysis' latent tiles in stream order (an analysis sink)."""

    def __init__(self, pp, side, net, quality, threaded: bool = True):
        super().__init__(pp, side, net, quality, threaded)
        self.streams: list = [None] * len(self.boxes)
        self._next = 0

    def add(self, y0: int, y1: int, x0: int, x1: int, y_tile: np.ndarray) -> None:
        if (y0, y1, x0, x1) != self.boxes[self._next]:
            raise AssertionError("analysis tiles and latent tiles must coincide")
        self._submit(self._next, np.array(y_tile, np.float32))
        self._next += 1

    def _tile(self, i: int, y_tile: np.ndarray) -> None:
        from rawmeta import entropy

        v = _torch().from_numpy(y_tile.astype(np.float64) * self.g[:, None, None])[None]
        self.streams[i], v_hat = entropy.encode_tile(self.pp, v, self._side(self.boxes[i]),
                                                     self.qpos)
        self._store(i, v_hat)

    def result(self) -> list:
        self.wait_all()
        return self.streams


class LatentDecoder(_LatentTiles):
    """Decoder: every tile stream is decoded in order as soon as it is constructed."""

    def __init__(self, pp, streams, side, net, quality, source=None, threaded: bool = True):
        super().__init__(pp, side, net, quality, threaded)
        if len(self.boxes) != len(streams):
            self.close()
            raise CorruptMetadataError(source, f"{len(streams)} latent tiles for a grid of "
                                               f"{len(self.boxes)}")
        self.source = source
        for i, stream in enumerate(streams):
            self._submit(i, stream)

    def _tile(self, i: int, stream) -> None:
        from rawmeta import entropy

        v_hat = entropy.decode_tile(self.pp, stream, self._side(self.boxes[i]), self.qpos,
                                    self.net.m, self.source, i)
        self._store(i, v_hat)


def tile_count(h: int, w: int) -> int:
    from rawmeta.network import STRIDE

    H8, W8 = -(-h // STRIDE), -(-w // STRIDE)
    return len(_tiles(H8, TILE // 8)) * len(_tiles(W8, TILE // 8))


# --- the codec method ------------------------------------------------------------------

def _probability_path(net):
    from rawmeta.entropy import ProbabilityPath

    if not hasattr(net, "_pp"):
        net._pp = ProbabilityPath(net)
    return net._pp


def check_quality(quality, error=BadInputError, source=None) -> float:
    q = DEFAULT_QUALITY if quality is None else quality
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 <= q <= QUALITY_MAX:
        raise error(source, f"neural quality {q!r} outside 0..{QUALITY_MAX:g}")
    return float(q)


BASE_BLOCK_MAX = 32    # the local base's block at quality 0 (packed pixels) ...
BASE_OCTAVES = 3       # ... halving 3 times up to quality BASE_FINE_FROM (block 4)
BASE_STEP_EXP = 7      # colour-map quantiser step 2^-7 ...
BASE_FINE_FROM = 90    # ... and 2^-8 above this quality
LATENT_QUALITY = 0.0   # the latent's rate level on every rung (see `ladder`)


class Rung(NamedTuple):
    block: int             # local colour-map block (packed pixels)
    step_exp: int          # its quantiser step, 2^-step_exp
    latent_quality: float  # 0..100 on the model's rate levels


def ladder(quality: float) -> Rung:
    """User quality 0..100 -> how the neural method spends its bits.

    The latent is coded on top of the `local` baseline's per-block affine colour maps rather
    than the global prior alone: the maps, coded in each block's whitened sRGB feature basis,
    are an exact, cheap description of everything the sRGB can explain linearly, block by
    block; the latent adds what that misses. Rate rises with finer blocks (32 -> 4 packed
    pixels up to quality 90) and then a finer map quantiser. The latent stays at its lowest
    rate level: on HERO6 (the training raw) at block 8 its quality 25 / 50 levels add 0.08 /
    0.11 dB for 0.005 / 0.021 bpp (15 / 5 dB per bpp), where block 8 -> 6 maps buy ~80.
    The header records the block and latent quality and the section its step, so decoders
    do not depend on this ladder."""
    octaves = BASE_OCTAVES * min(quality, BASE_FINE_FROM) / BASE_FINE_FROM
    block = int(round(BASE_BLOCK_MAX * 2.0 ** -octaves))
    step = BASE_STEP_EXP + (quality > BASE_FINE_FROM)
    return Rung(block, step, LATENT_QUALITY)


def encode(p, prior_pred: np.ndarray, quality, target_psnr, model, device, measure):
    """-> (sections {LOCL[, NEUR]}, measured PSNR, header fields). measure(rebuilt) -> PSNR the
    decoder will deliver (codec.DecodedPSNR); with target_psnr the quality is bisected on
    measured PSNR."""
    from rawmeta import baselines, entropy, zoo

    net, model_id, digest = zoo.load(model or zoo.default_model() or _no_model())
    dev = resolve_device(device)
    place(net, dev)
    pp = _probability_path(net)

    def attempt(q):  # -> (sections, measured PSNR, rung, latent kept)
        rung = ladder(q)
        local, base = baselines.encode("local", rung.block, p.planes, p.srgb4, prior_pred, p.meta,
                                       rung.step_exp)
        maps_psnr = measure(base)
        inp = make_inputs(p.srgb4, base)
        del base
        coder = LatentCoder(pp, inp.side, net, rung.latent_quality)
        try:  # analysis, coding and synthesis overlap
            analysis(net, inp, p.planes, dev, sink=coder.add)
            measured = _measured(net, inp, coder, dev, measure)
            streams = coder.result()
        finally:
            coder.close()
        neur = entropy.pack_streams(streams)
        if not latent_pays(measured - maps_psnr, len(neur), p.srgb_pixels):
            return {"LOCL": local}, maps_psnr, rung, False
        return {"LOCL": local, "NEUR": neur}, measured, rung, True

    if target_psnr is None:
        q = check_quality(quality)
        sections, measured, rung, latent = attempt(q)
    else:
        q, (sections, measured, rung, latent) = _search(attempt, float(target_psnr))
    info = {"model": model_id, "sha256": digest, "quality": round(q, 4),
            "latent_quality": round(rung.latent_quality, 4), "base_block": rung.block,
            "latent": latent}
    if latent:
        info["tiles"] = tile_count(*p.planes.shape[1:])
    if target_psnr is not None:
        info["target_psnr"] = float(target_psnr)
    return sections, measured, {"neural": info}


LATENT_MIN_SLOPE = 40.0  # dB per bpp the latent must buy to be kept


def latent_pays(gain_db: float, section_bytes: int, srgb_pixels: int) -> bool:
    """Rate-distortion choice per image: keep the latent only if its PSNR gain over the
    colour maps is worth its bits at the exchange rate the map ladder itself offers near its
    top (HERO6, the training raw: blocks 5 -> 4 buy ~40 dB per bpp). Where the maps already
    explain all but the sensor noise, the latent's bits buy less than finer maps would (or
    nothing), and the payload carries the maps alone."""
    from rawmeta.formats.payload import SECTION_PREFIX

    bpp = 8 * (section_bytes + SECTION_PREFIX) / srgb_pixels
    return gain_db > 0 and gain_db >= LATENT_MIN_SLOPE * bpp


def has_latent(header: dict) -> bool:
    """False only for payloads whose encoder measured the latent not worth its bits."""
    info = header.get("neural")
    return not (isinstance(info, dict) and info.get("latent") is False)


def _search(attempt, target: float, steps: int = 7):
    """Lowest quality in 0..100 whose measured PSNR reaches target: bisection (PSNR rises
    with quality for a trained model). If no quality tried reaches it, the best one tried.
    attempt(q) -> a tuple whose second item is the measured PSNR."""
    tried = {QUALITY_MAX: attempt(QUALITY_MAX)}
    lo, hi = 0.0, QUALITY_MAX
    for _ in range(steps):
        mid = round((lo + hi) / 2, 4)
        tried[mid] = attempt(mid)
        if tried[mid][1] >= target:
            hi = mid
        else:
            lo = mid
    ok = [q for q, r in tried.items() if r[1] >= target]
    q = min(ok) if ok else max(tried, key=lambda k: tried[k][1])
    return q, tried[q]


def _no_model():
    raise BadInputError(None, "no neural model is installed (weights/zoo.json lists none); "
                              "use --method prior or --model PATH")


def base_of(sections: dict, header: dict, srgb4: np.ndarray, prior_pred: np.ndarray, meta,
            source=None) -> np.ndarray:
    """The planes the latent refines: the local colour-map base when the header names one
    (payloads before it: the global prior)."""
    from rawmeta import baselines

    info = header.get("neural")
    block = info.get("base_block") if isinstance(info, dict) else None
    if block is None:
        return prior_pred
    block = baselines.check_quality("local", block, CorruptMetadataError, source)
    if "LOCL" not in sections:
        raise CorruptMetadataError(source, "payload has no local base section")
    return baselines.decode("local", block, sections["LOCL"], srgb4, prior_pred, meta, source)


def decode(section: bytes, header: dict, srgb4: np.ndarray, base: np.ndarray, device,
           source=None) -> np.ndarray:
    """base: `base_of(...)`."""
    from rawmeta import entropy, zoo

    info = header.get("neural")
    if not isinstance(info, dict) or not isinstance(info.get("model"), str):
        raise CorruptMetadataError(source, "neural header is missing or malformed")
    net, _, _ = zoo.load(info["model"], str(info.get("sha256", "")) or None, source)
    quality = check_quality(info.get("latent_quality", info.get("quality")), CorruptMetadataError,
                            source)
    dev = resolve_device(device)
    place(net, dev)
    inp = make_inputs(srgb4, base)
    del base
    count = tile_count(inp.h, inp.w)
    if info.get("tiles") != count:
        raise CorruptMetadataError(source, f"header says {info.get('tiles')} latent tiles, "
                                           f"the image needs {count}")
    streams = entropy.unpack_streams(section, count, source)
    tiles = LatentDecoder(_probability_path(net), streams, inp.side, net, quality, source)
    try:  # synthesis overlaps the entropy decoding
        return synthesis(net, inp, tiles, dev)
    finally:
        tiles.close()
