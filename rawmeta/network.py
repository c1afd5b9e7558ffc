"""The learned codec's network (DESIGN.md step 4), built from CompressAI entropy models.

Everything runs on the packed half-resolution raw (4 planes R, G1, G2, B). Notation:
    u     (16, h, w)  what both sides have: the sRGB at each plane's sites (12) + the prior (4)
    x     (4, h, w)   the true raw planes (encoder only)
    y     (M, h/8, w/8) the latent, one cell per 16x16 full-resolution pixels
    side  (24, h/8, w/8) exact block statistics of the sRGB (integer means and maxima)

  features(u)            -> sRGB feature pyramid f1..f4 (strides 1, 2, 4, 8)
  analysis(x, u, f)      -> y                                   (encoder)
  v = y * gain(q)        variable rate: per-channel gains interpolated between levels
  hyper_analysis(v)      -> z, coded with an EntropyBottleneck
  hyper_synthesis(z^), side, q -> Gaussian (scale, mean) of the checkerboard anchors
  context(anchors of v^) -> (scale, mean) of the other half                (two-pass)
  y^ = v^ * inverse_gain(q);  synthesis(y^, f) -> residual;  raw^ = prior + residual

The probability path (hyper_synthesis, context, entropy parameters) sees only z^, side, q
and decoded anchors, never the float32 sRGB features, so it can run in float64 on the CPU
and choose the same CDFs on every machine (`rawmeta.entropy`). Activations are LeakyReLU and
pixel shuffles only: exact IEEE operations, no transcendental functions whose vectorised
versions differ between CPU instruction sets.

Cost per full-resolution pixel (FlopCounterMode, see tests/bench_neural.py): ~2 kMAC of
features + ~1.3 kMAC analysis + ~7 kMAC synthesis; the latent-resolution nets are < 0.1 kMAC.
"""
from __future__ import annotations

import math

import warnings

import torch
from torch import nn
import torch.nn.functional as F



def _light_compressai() -> None:
    """Make `compressai` importable without running its package __init__, which loads the
    dataset registry and torch_geometric (~8 s on this CPU) that the codec never uses. Its
    subpackages (entropy_models, ans) import normally; the two functions they ask the
    package for are provided with compressai's own defaults (the rANS coder)."""
    import importlib.util
    import sys
    import types

    if "compressai" in sys.modules:
        return
    spec = importlib.util.find_spec("compressai")
    pkg = types.ModuleType("compressai")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__file__ = spec.origin
    pkg.get_entropy_coder = lambda: "ans"
    pkg.available_entropy_coders = lambda: ["ans"]
    sys.modules["compressai"] = pkg


def _import_entropy_models():
    """compressai's entropy_models imports scipy.stats (~2 s here) at module level but only
    calls it when a GaussianConditional derives its tail bound, which the codec never does
    at run time. Import it against a placeholder, then drop the placeholder: scipy's own
    lazy submodule loading supplies the real scipy.stats on first use."""
    import sys
    import types

    import scipy

    if "scipy.stats" in sys.modules:
        from compressai import entropy_models
        return entropy_models
    sys.modules["scipy.stats"] = placeholder = types.ModuleType("scipy.stats")
    try:
        from compressai import entropy_models
    finally:
        del sys.modules["scipy.stats"]
        if vars(scipy).get("stats") is placeholder:
            delattr(scipy, "stats")
    return entropy_models


_light_compressai()
with warnings.catch_warnings():  # compressai's import-time torch.jit.script deprecation notice
    warnings.simplefilter("ignore", FutureWarning)
    _em = _import_entropy_models()
EntropyBottleneck, GaussianConditional = _em.EntropyBottleneck, _em.GaussianConditional

STRIDE = 8          # latent cell = 8x8 half-resolution pixels = 16x16 sensor pixels
HYPER_STRIDE = 4    # z cell = 4x4 latent cells
SIDE_CHANNELS = 24
RESIDUAL_SCALE = 32.0  # raw - prior is ~0.003-0.02: scaled to unit-ish range for the analysis
U_CHANNELS = 16
SCALES_MIN, SCALES_MAX, SCALES_LEVELS = 0.11, 64.0, 64


def scale_table() -> torch.Tensor:
    return torch.exp(torch.linspace(math.log(SCALES_MIN), math.log(SCALES_MAX), SCALES_LEVELS))


def conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def act() -> nn.Module:
    return nn.LeakyReLU(0.125)  # a power of two: exact in every arithmetic


class Up(nn.Sequential):
    """conv to 4x channels + pixel shuffle: a 2x upsampling without transposed-conv artefacts."""

    def __init__(self, cin: int, cout: int):
        super().__init__(conv(cin, cout * 4), nn.PixelShuffle(2))


def checkerboard(h: int, w: int, device=None) -> torch.Tensor:
    """(1, 1, h, w) bool: True on anchors ((i + j) even), decoded first."""
    i = torch.arange(h, device=device).view(-1, 1)
    j = torch.arange(w, device=device).view(1, -1)
    return ((i + j) % 2 == 0).view(1, 1, h, w)


class RawMetaNet(nn.Module):
    def __init__(self, m: int = 64, n_hyper: int = 32, levels: int = 6,
                 widths: tuple = (16, 32, 48, 64)):
        super().__init__()
        c1, c2, c3, c4 = widths
        self.m, self.levels = m, levels
        self.config = dict(m=m, n_hyper=n_hyper, levels=levels, widths=list(widths))
        # sRGB feature pyramid: both sides
        self.f1 = nn.Sequential(conv(U_CHANNELS, c1), act())
        self.f2 = nn.Sequential(conv(c1, c2, stride=2), act())
        self.f3 = nn.Sequential(conv(c2, c3, stride=2), act())
        self.f4 = nn.Sequential(conv(c3, c4, stride=2), act())
        # analysis: encoder only
        self.a1 = nn.Sequential(conv(8 + c1, 32, stride=2), act())
        self.a2 = nn.Sequential(conv(32 + c2, 48, stride=2), act())
        self.a3 = nn.Sequential(conv(48 + c3, 64, stride=2), act(), conv(64, m))
        # synthesis: decoder; the widest layers at the lowest resolutions (CPU budget)
        self.s1 = nn.Sequential(conv(m + c4, 64), act(), Up(64, 48), act())
        self.s2 = nn.Sequential(Up(48 + c3, 32), act())
        self.s3 = nn.Sequential(Up(32 + c2, 12), act())
        self.s4 = nn.Sequential(conv(12 + c1, 4))
        # variable rate: log gains per level and channel
        spread = torch.linspace(0.0, 3.0, levels).view(-1, 1)  # gains 1..20 at the start
        self.log_gain = nn.Parameter(spread.repeat(1, m).clone())
        self.log_igain = nn.Parameter((-spread).repeat(1, m).clone())
        # hyperprior
        self.h_a = nn.Sequential(conv(m, 64), act(), conv(64, 64, stride=2), act(),
                                 conv(64, n_hyper, stride=2))
        self.h_s = nn.Sequential(Up(n_hyper, 48), act(), Up(48, 64), act())
        self.side = nn.Sequential(conv(SIDE_CHANNELS + 1, 48, k=1), act(), conv(48, 48), act())
        self.ep_anchor = nn.Sequential(conv(64 + 48, 128, k=1), act(), conv(128, 2 * m, k=1))
        self.ctx = conv(m, 2 * m, k=3)
        self.ep_other = nn.Sequential(conv(2 * m + 128, 128, k=1), act(), conv(128, 2 * m, k=1))
        self.entropy_bottleneck = EntropyBottleneck(n_hyper)
        self.gaussian_conditional = GaussianConditional(scale_table().tolist())
        nn.init.zeros_(self.s4[-1].weight)
        nn.init.zeros_(self.s4[-1].bias)

    # --- gains ---------------------------------------------------------------------------
    def gains(self, q: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
        """q in [0, levels - 1] (continuous; tensor (B,) for a batch) -> gain, inverse gain
        (B, M, 1, 1): geometric interpolation between the two neighbouring levels."""
        q = torch.as_tensor(q, dtype=self.log_gain.dtype, device=self.log_gain.device).reshape(-1)
        q = q.clamp(0, self.levels - 1)
        lo = q.floor().long().clamp(max=self.levels - 2)
        t = (q - lo).view(-1, 1)
        lg = self.log_gain[lo] * (1 - t) + self.log_gain[lo + 1] * t
        lig = self.log_igain[lo] * (1 - t) + self.log_igain[lo + 1] * t
        return lg.exp()[..., None, None], lig.exp()[..., None, None]

    # --- transforms ----------------------------------------------------------------------
    def features(self, u: torch.Tensor) -> list[torch.Tensor]:
        f1 = self.f1(u)
        f2 = self.f2(f1)
        f3 = self.f3(f2)
        return [f1, f2, f3, self.f4(f3)]

    def analysis(self, x: torch.Tensor, u: torch.Tensor, f: list[torch.Tensor]) -> torch.Tensor:
        prior = u[:, 12:16]
        a = self.a1(torch.cat([x, (x - prior) * RESIDUAL_SCALE, f[0]], 1))
        a = self.a2(torch.cat([a, f[1]], 1))
        return self.a3(torch.cat([a, f[2]], 1))

    def synthesis(self, y_hat: torch.Tensor, f: list[torch.Tensor]) -> torch.Tensor:
        s = self.s1(torch.cat([y_hat, f[3]], 1))
        s = self.s2(torch.cat([s, f[2]], 1))
        s = self.s3(torch.cat([s, f[1]], 1))
        return self.s4(torch.cat([s, f[0]], 1)) / 4

    # --- probability path (float64 at inference) ----------------------------------------
    def anchor_params(self, z_hat: torch.Tensor, side: torch.Tensor, qpos: torch.Tensor):
        """-> hidden (for the second pass), scales, means of every latent cell."""
        b, _, h, w = side.shape
        qmap = qpos.view(-1, 1, 1, 1).expand(b, 1, h, w).to(side.dtype)
        hs = self.h_s(z_hat)[..., :h, :w]
        hidden = torch.cat([hs, self.side(torch.cat([side, qmap], 1))], 1)
        first = self.ep_anchor[0](hidden)
        scales, means = self.ep_anchor[1:](first).chunk(2, 1)
        return first, scales, means

    def other_params(self, first: torch.Tensor, anchors_hat: torch.Tensor):
        """anchors_hat: v^ with non-anchor cells zeroed -> scales, means for all cells."""
        scales, means = self.ep_other(torch.cat([first, self.ctx(anchors_hat)], 1)).chunk(2, 1)
        return scales, means

    # --- training forward ------------------------------------------------------------------
    def forward(self, x, u, side, q):
        """Noisy-quantisation forward for training -> (raw_hat, y_likelihoods, z_likelihoods).
        The synthesis sees straight-through rounded latents (what the decoder will see)."""
        f = self.features(u)
        y = self.analysis(x, u, f)
        g, ig = self.gains(q)
        v = y * g
        z = self.h_a(v)
        z_tilde, z_lik = self.entropy_bottleneck(z)
        z_offset = self.entropy_bottleneck._get_medians()
        z_hat = _ste_round(z - z_offset) + z_offset
        qpos = torch.as_tensor(q, dtype=v.dtype, device=v.device).reshape(-1).expand(v.shape[0])
        qpos = qpos / (self.levels - 1)
        first, s_a, m_a = self.anchor_params(z_hat, side, qpos)
        mask = checkerboard(v.shape[2], v.shape[3], v.device)
        v_hat_a = (_ste_round(v - m_a) + m_a) * mask
        s_o, m_o = self.other_params(first, v_hat_a)
        scales = torch.where(mask, s_a, s_o)
        means = torch.where(mask, m_a, m_o)
        _, y_lik = self.gaussian_conditional(v, scales, means=means)
        v_hat = _ste_round(v - means) + means
        residual = self.synthesis(v_hat * ig, f)
        return u[:, 12:16] + residual, y_lik, z_lik


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    return (torch.round(x) - x).detach() + x


def side_features(srgb4):
    """Exact block statistics, float64 (24, h/8, w/8): per 8x8 half-res block, the mean and
    maximum of each of the 12 sRGB channels, scaled to [0, 1]. Integer sums divided by a
    power of two: bit-identical on every machine. srgb4: uint8 (12, h, w), h, w multiples of 8."""
    import numpy as np

    c, h, w = srgb4.shape
    blocks = srgb4.reshape(c, h // STRIDE, STRIDE, w // STRIDE, STRIDE)
    sums = blocks.sum(axis=(2, 4), dtype=np.int64).astype(np.float64)
    means = sums / (STRIDE * STRIDE * 256.0)
    maxima = blocks.max(axis=(2, 4)).astype(np.float64) / 256.0
    return np.concatenate([means, maxima], 0)


# Half-res pixels of context a tile needs on each side so that its interior equals the
# whole-image result: the receptive field rounded up to a multiple of STRIDE (windows must
# start on the latent grid). Measured by gradient in tests/test_neural.py: the analysis
# reaches 16 px back and 9 ahead, the synthesis 32 back and 25 ahead. Extra halo is
# recomputed work (a 48-px halo cost 12 MP encodes ~0.4 s).
ANALYSIS_HALO = 16
SYNTHESIS_HALO = 32


def pad_to(t: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = t.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        t = F.pad(t, (0, pw, 0, ph), mode="replicate")
    return t
