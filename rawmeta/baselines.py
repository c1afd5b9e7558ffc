"""Two non-learned baselines that code what the global prior misses, as real codec methods.

Both start from the prior prediction `base` (both sides compute it from the sRGB) and add a
correction carried in one payload section:

- `sam` (after Punnappurath & Brown, "Spatially aware metadata for raw reconstruction",
  WACV 2021): the exact raw codes on a uniform grid, every `stride`-th site of each packed
  plane (stride 8: 1 in 64 raw pixels), stored losslessly as integer differences from the
  prior's codes. The decoder interpolates the residual (raw - prior) at the samples with a
  joint bilateral upsampler guided by the linearised sRGB, so corrections do not bleed
  across edges.
- `local`: a per-block affine map from the full-resolution sRGB (2x2 sites -> 12 linearised
  channels on the packed grid) to the 4 raw planes' residual over the prior, ridge-fitted
  per block (ridge pulls flat or clipped blocks back to the prior). The map is coded in the
  block's whitened feature basis (both sides compute it from the sRGB), where a unit of any
  coefficient costs the same squared error; one uniform step then spends bits where they
  buy accuracy (HERO6, 12 MP, block 8: raw coefficients 49.65 dB at 1.23 bpp; whitened,
  step 2^-9, 49.23 dB at 0.073 bpp; step 2^-7 48.68 dB at 0.019 bpp: most coefficients
  quantise to zero). Integers are zstd-coded. Block size (packed pixels) sets the rate.

quality is the sample stride for `sam` and the block size for `local`.
"""
from __future__ import annotations

import functools

import numpy as np
import zstandard

from rawmeta import raw as rawio
from rawmeta.formats.camera import CameraMeta
from rawmeta.formats.errors import BadInputError, CorruptMetadataError

DEFAULT_QUALITY = {"sam": 8, "local": 32}
QUALITY_RANGE = {"sam": (2, 64), "local": (4, 256)}

SAM_SIGMA_SPACE = 0.6    # spatial Gaussian, in sample-grid units
SAM_SIGMA_RANGE = 0.02   # linear-sRGB distance at which a sample's weight falls to e^-1/2
SAM_RADIUS = 2           # 4x4 nearest samples contribute

LOCAL_RIDGE = 1e-5       # on centred linear-sRGB features; measured best of 1e-6..1e-3
LOCAL_STEP_EXP = 7       # `local` method: quantiser step 2^-7 of the whitened coefficients
LOCAL_STEP_RANGE = (4, 16)
LOCL_V2 = 2              # first byte of a whitened-basis section; version 1 is a bare zstd frame
LOCAL_COEF_STEP = 2.0 ** -8   # version 1 (format 1.0 payloads): raw coefficient quantiser
LOCAL_BIAS_STEP = 2.0 ** -12  # version 1: block-mean residual quantiser
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_ZSTD_LEVEL = 19


def check_quality(method: str, quality, error: type = BadInputError, source=None) -> int:
    """The method's quality (default when None), or `error` if outside its range."""
    q = DEFAULT_QUALITY[method] if quality is None else quality
    lo, hi = QUALITY_RANGE[method]
    if isinstance(q, bool) or not isinstance(q, int) or not lo <= q <= hi:
        raise error(source, f"{method} quality {q!r} outside {lo}..{hi}")
    return q


def linear_srgb(srgb4: np.ndarray) -> np.ndarray:
    """uint8 sRGB codes -> float32 linear light (the sRGB EOTF), via a 256-entry table."""
    c = np.arange(256) / 255.0
    table = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)
    return table[srgb4]


def encode(method: str, quality: int, planes: np.ndarray, srgb4: np.ndarray, base: np.ndarray,
           meta: CameraMeta, step_exp: int = LOCAL_STEP_EXP) -> tuple[bytes, np.ndarray]:
    """-> (section bytes, rebuilt planes exactly as `decode` will produce them).
    step_exp (local): the whitened coefficients' quantiser step is 2^-step_exp."""
    if method == "sam":
        section = _sam_encode(quality, planes, base, meta)
        return section, decode(method, quality, section, srgb4, base, meta)
    return _local_encode(quality, planes, srgb4, base, step_exp)


def decode(method: str, quality: int, section: bytes, srgb4: np.ndarray, base: np.ndarray,
           meta: CameraMeta, source=None) -> np.ndarray:
    if method == "sam":
        return _sam_decode(quality, section, srgb4, base, meta, source)
    return _local_decode(quality, section, srgb4, base, source)


# --- zstd int16 arrays -------------------------------------------------------------------

def _pack_ints(values: np.ndarray) -> bytes:
    return zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(values.astype("<i2").tobytes())


def _unpack_ints(data: bytes, shape: tuple, source) -> np.ndarray:
    """Bounded decompression: exactly the size the header implies, else corrupt."""
    expected = 2 * int(np.prod(shape))
    try:
        raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=expected)
    except zstandard.ZstdError:
        raise CorruptMetadataError(source, "baseline section does not decode") from None
    if len(raw) != expected:
        raise CorruptMetadataError(source, f"baseline section holds {len(raw)} bytes, expected {expected}")
    return np.frombuffer(raw, "<i2").reshape(shape).astype(np.int32)


# --- sam: sparse exact samples + guided interpolation ------------------------------------

def _sites(n: int, stride: int) -> np.ndarray:
    return np.arange(stride // 2, n, stride)


def _sam_encode(stride: int, planes: np.ndarray, base: np.ndarray, meta: CameraMeta) -> bytes:
    ys, xs = _sites(planes.shape[1], stride), _sites(planes.shape[2], stride)
    codes = rawio.denormalize(planes[:, ys][:, :, xs], meta).astype(np.int32)
    predicted = rawio.denormalize(base[:, ys][:, :, xs], meta).astype(np.int32)
    return _pack_ints(codes - predicted)  # |diff| <= white level < 2^15


def _sam_decode(stride, section, srgb4, base, meta, source) -> np.ndarray:
    h, w = base.shape[1:]
    ys, xs = _sites(h, stride), _sites(w, stride)
    if len(ys) == 0 or len(xs) == 0:
        raise CorruptMetadataError(source, "sam stride larger than the image")
    diff = _unpack_ints(section, (4, len(ys), len(xs)), source)
    predicted = rawio.denormalize(base[:, ys][:, :, xs], meta).astype(np.int32)
    codes = np.clip(predicted + diff, 0, 65535).astype(np.uint16)
    residual = rawio.normalize(codes, meta) - base[:, ys][:, :, xs]
    guide = linear_srgb(srgb4)
    out = np.empty_like(base)
    for c in range(4):  # one plane at a time bounds memory
        out[c] = base[c] + _joint_bilateral(residual[c], guide[c], stride)
    out[:, ys[:, None], xs[None, :]] = rawio.normalize(codes, meta)  # samples are exact
    return np.clip(out, 0.0, 1.0, out=out)


def _joint_bilateral(samples: np.ndarray, guide: np.ndarray, stride: int) -> np.ndarray:
    """Upsample (ny, nx) samples taken at `_sites` to the guide's (h, w) grid.

    Each pixel averages its 2R x 2R nearest samples, weighted by a spatial Gaussian and by
    how close the guide (3, h, w) at the pixel is to the guide at the sample.
    """
    _, h, w = guide.shape
    ny, nx = samples.shape
    off = stride // 2
    yy, xx = (np.arange(h) - off) / stride, (np.arange(w) - off) / stride
    y0, x0 = np.floor(yy).astype(int), np.floor(xx).astype(int)
    g_at = guide[:, off::stride, off::stride][:, :ny, :nx]
    num = np.zeros((h, w), np.float32)
    den = np.full((h, w), 1e-12, np.float32)
    for dy in range(1 - SAM_RADIUS, SAM_RADIUS + 1):
        iy = np.clip(y0 + dy, 0, ny - 1)
        wy = np.exp(-0.5 * ((yy - iy) / SAM_SIGMA_SPACE) ** 2).astype(np.float32)
        for dx in range(1 - SAM_RADIUS, SAM_RADIUS + 1):
            ix = np.clip(x0 + dx, 0, nx - 1)
            wx = np.exp(-0.5 * ((xx - ix) / SAM_SIGMA_SPACE) ** 2).astype(np.float32)
            dist = np.zeros((h, w), np.float32)
            for g, gs in zip(guide, g_at):
                dist += (g - gs[iy][:, ix]) ** 2
            weight = wy[:, None] * wx[None, :] * np.exp(dist * (-0.5 / SAM_SIGMA_RANGE ** 2))
            num += weight * samples[iy][:, ix]
            den += weight
    return num / den


# --- local: per-block ridge affine map -----------------------------------------------------

def _band_blocks(x: np.ndarray, size: int) -> np.ndarray:
    """(C, rows <= size, w) band -> (nbx, size*size, C), edge-padded to whole blocks."""
    c, h, w = x.shape
    nbx = -(-w // size)
    x = np.pad(x, ((0, 0), (0, size - h), (0, nbx * size - w)), mode="edge")
    return x.reshape(c, size, nbx, size).transpose(2, 1, 3, 0).reshape(nbx, size * size, c)


def _bands(h: int, size: int):
    return [slice(y, min(y + size, h)) for y in range(0, h, size)]


def _centred_features(srgb4: np.ndarray, rows: slice, size: int) -> np.ndarray:
    """Linear sRGB at the 12 sites of each packed pixel of one block row, minus its block
    mean (the decoder computes the same mean, so the affine offset is the block's mean
    residual) -> (nbx, size*size, 12). Band by band: cache-sized copies, no whole-image
    12-channel float array (12 MP: 1.7 -> 0.5 s to encode)."""
    fb = _band_blocks(linear_srgb(srgb4[:, :, rows]).reshape(12, -1, srgb4.shape[3]), size)
    return fb - fb.mean(axis=1, keepdims=True)


def _one_blas_thread(fn):
    """Run fn with OpenBLAS on one thread. Its LU solve threads even 12x12 systems (dgetrs
    parallel); 100k+ tiny solves then spend their time handing work between spinning
    threads, and next to another busy process a 12 MP block-4 decode took 550 s, not 3 s."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)
    return run


def _whiten(xc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """-> (features float64, Cholesky factor L of each block's feature Gram matrix + ridge).
    Coefficients a with map = x L^-T a see orthonormal features: an error of d in any a
    costs d^2 per pixel, so one uniform quantiser step is rate-distortion consistent."""
    x = xc.astype(np.float64)
    gram = x.transpose(0, 2, 1) @ x / x.shape[1] + LOCAL_RIDGE * np.eye(12)
    return x, np.linalg.cholesky(gram)


@_one_blas_thread
def _local_encode(size: int, planes, srgb4, base, step_exp: int) -> tuple[bytes, np.ndarray]:
    """-> (section, rebuilt planes): each band is rebuilt from its quantised parameters as
    soon as they are fitted, by the decoder's own `_local_apply` (no second feature pass)."""
    check_step(step_exp)
    step = 2.0 ** -step_exp
    out = base.copy()

    def fit(rows: slice):
        x, chol = _whiten(_centred_features(srgb4, rows, size))
        target = _band_blocks(planes[:, rows] - base[:, rows], size).astype(np.float64)
        bias = target.mean(axis=1)                                       # (nbx, 4)
        xty = x.transpose(0, 2, 1) @ (target - bias[:, None]) / x.shape[1]
        a = np.linalg.solve(chol, xty)                                   # (nbx, 12, 4)
        qa = np.clip(np.rint(a / step), -32768, 32767).astype(np.int32)
        qb = np.clip(np.rint(bias / step), -32768, 32767).astype(np.int32)
        _local_apply(out, rows, x, chol, qa, qb, step, size)
        return qa, qb

    fitted = [fit(rows) for rows in _bands(planes.shape[1], size)]
    qa = np.concatenate([a for a, _ in fitted])
    qb = np.concatenate([b for _, b in fitted])
    # parameter-major order puts like numbers together: zstd finds the runs
    ints = _pack_ints(np.concatenate([qa.transpose(1, 2, 0).ravel(), qb.T.ravel()]))
    return bytes([LOCL_V2, step_exp]) + ints, np.clip(out, 0.0, 1.0, out=out)


def check_step(step_exp, error: type = BadInputError, source=None) -> int:
    lo, hi = LOCAL_STEP_RANGE
    if isinstance(step_exp, bool) or not isinstance(step_exp, int) or not lo <= step_exp <= hi:
        raise error(source, f"local quantiser step 2^-{step_exp!r} outside 2^-{lo}..2^-{hi}")
    return step_exp


def _local_apply(out, rows: slice, x, chol, qa, qb, step: float, size: int) -> None:
    """out[:, rows] += one block row's affine maps (whitened int parameters, as stored)."""
    coef = np.linalg.solve(chol.transpose(0, 2, 1), qa * step)          # (nbx, 12, 4)
    nbx, w = len(coef), out.shape[2]
    band = (x @ coef + (qb * step)[:, None]).reshape(nbx, size, size, 4).transpose(3, 1, 0, 2)
    out[:, rows] += band.reshape(4, size, -1)[:, :rows.stop - rows.start, :w]


@_one_blas_thread
def _local_decode(size, section, srgb4, base, source) -> np.ndarray:
    if section[:4] == _ZSTD_MAGIC:
        return _local_decode_v1(size, section, srgb4, base, source)
    if len(section) < 2 or section[0] != LOCL_V2:
        raise CorruptMetadataError(source, "local section has an unknown version")
    step = 2.0 ** -check_step(section[1], CorruptMetadataError, source)
    qa, qb, nbx = _block_params(section[2:], base.shape, size, source)
    out = base.copy()
    for i, rows in enumerate(_bands(base.shape[1], size)):
        blocks = slice(i * nbx, (i + 1) * nbx)
        x, chol = _whiten(_centred_features(srgb4, rows, size))
        _local_apply(out, rows, x, chol, qa[blocks], qb[blocks], step, size)
    return np.clip(out, 0.0, 1.0, out=out)


def _block_params(data: bytes, shape: tuple, size: int, source):
    """zstd ints, parameter-major -> (coefficients (nb, 12, 4), biases (nb, 4), blocks per
    row); both section versions store them so."""
    nbx = -(-shape[2] // size)
    nb = -(-shape[1] // size) * nbx
    q = _unpack_ints(data, (52 * nb,), source)
    return q[: 48 * nb].reshape(12, 4, nb).transpose(2, 0, 1), q[48 * nb:].reshape(4, nb).T, nbx


# --- local version 1 (format 1.0 payloads: raw coefficients; decode only) -----------------

def _local_apply_v1(out, rows: slice, xc, qcoef, qbias, size: int) -> None:
    # C order on both sides: numpy's matmul takes BLAS or its own loop by memory layout,
    # and the two round differently
    coef = qcoef.astype(np.float32, order="C") * LOCAL_COEF_STEP
    bias = qbias.astype(np.float32, order="C") * LOCAL_BIAS_STEP
    nbx, w = len(coef), out.shape[2]
    band = (xc @ coef + bias[:, None]).reshape(nbx, size, size, 4).transpose(3, 1, 0, 2)
    out[:, rows] += band.reshape(4, size, -1)[:, :rows.stop - rows.start, :w]


def _local_decode_v1(size, section, srgb4, base, source) -> np.ndarray:
    qcoef, qbias, nbx = _block_params(section, base.shape, size, source)
    out = base.copy()
    for i, rows in enumerate(_bands(base.shape[1], size)):
        blocks = slice(i * nbx, (i + 1) * nbx)
        _local_apply_v1(out, rows, _centred_features(srgb4, rows, size), qcoef[blocks],
                        qbias[blocks], size)
    return np.clip(out, 0.0, 1.0, out=out)
