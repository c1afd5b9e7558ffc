"""Benchmark the neural codec: complexity (kMAC per sensor pixel, torch FlopCounterMode),
whole-process encode/decode wall time (median of N) and peak RSS on the 12 MP HERO6 DNG and
on a generated 48 MP raw. Not collected by pytest (name lacks `test_`).

    .venv/bin/python tests/bench_neural.py [--repeat 3] [--model ID|PATH] [--no-48mp]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERO6 = Path(__file__).resolve().parents[2] / "shared" / "data" / "raw" / "Hero6_GOPR0024.dng"


def complexity(model: str | None) -> dict:
    """MACs per full-resolution pixel of each part, on a 512x512 half-res window."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from rawmeta import zoo
    from rawmeta.network import SIDE_CHANNELS

    net, _, _ = zoo.load(model or zoo.default_model())
    h = w = 512
    pixels = 4 * h * w
    u, x = torch.rand(1, 16, h, w), torch.rand(1, 4, h, w)
    side = torch.rand(1, SIDE_CHANNELS, h // 8, w // 8)

    def macs(fn) -> float:
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            fn()
        return fc.get_total_flops() / 2 / pixels

    f = net.features(u)
    y = net.analysis(x, u, f)
    z = net.h_a(y).round()
    first, _, _ = net.anchor_params(z, side, torch.tensor([0.5]))
    parts = {
        "features": macs(lambda: net.features(u)),
        "analysis": macs(lambda: net.analysis(x, u, f)),
        "hyper_analysis": macs(lambda: net.h_a(y)),
        "probability_path": macs(lambda: (net.anchor_params(z, side, torch.tensor([0.5])),
                                          net.other_params(first, y))),
        "synthesis": macs(lambda: net.synthesis(y, f)),
    }
    parts["decode_total"] = parts["features"] + parts["probability_path"] + parts["synthesis"]
    parts["encode_total"] = parts["decode_total"] + parts["analysis"] + parts["hyper_analysis"]
    return {k: round(v / 1000, 2) for k, v in parts.items()}  # kMAC / pixel


def timed(cmd: list[str]) -> tuple[float, int]:
    """Whole-process wall seconds and peak RSS (KB) via GNU time."""
    t = time.perf_counter()
    res = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t
    if res.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {res.stderr.strip()[-300:]}")
    return wall, int(res.stderr.strip().splitlines()[-1])


def speed(raw: Path, jpg: Path, work: Path, repeat: int, model: str | None) -> dict:
    exe = [sys.executable, "-m", "rawmeta.cli.main"]
    enc, dec = [], []
    extra = ["--model", model] if model else []
    for i in range(repeat):
        out = work / f"{raw.stem}-{i}.rmeta"
        enc.append(timed(exe + ["encode", str(raw), str(jpg), "--sidecar", "-o", str(out), "-q",
                                "--method", "neural", *extra]))
        dec.append(timed(exe + ["decode", str(jpg), "--meta", str(out), "-o",
                                str(work / f"{raw.stem}-{i}.dng"), "-q"]))
    import rawpy
    with rawpy.imread(str(raw)) as r:
        mp = r.raw_image_visible.size / 1e6
    return {"megapixels": round(mp, 2),
            "encode_s": round(statistics.median(t for t, _ in enc), 2),
            "decode_s": round(statistics.median(t for t, _ in dec), 2),
            "encode_s_per_mp": round(statistics.median(t for t, _ in enc) / mp, 3),
            "decode_s_per_mp": round(statistics.median(t for t, _ in dec) / mp, 3),
            "encode_peak_rss_mb": round(max(m for _, m in enc) / 1024),
            "decode_peak_rss_mb": round(max(m for _, m in dec) / 1024),
            "payload_bytes": (work / f"{raw.stem}-0.rmeta").stat().st_size}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--model")
    ap.add_argument("--no-48mp", action="store_true")
    args = ap.parse_args()
    from rawmeta.srgb import render_jpeg
    from rawmeta.synthetic import make_sample

    report = {"complexity_kmac_per_pixel": complexity(args.model)}
    print(json.dumps(report, indent=2), flush=True)
    with tempfile.TemporaryDirectory(prefix="rawmeta-bench-") as tmp:
        work = Path(tmp)
        if HERO6.exists():
            jpg = work / "hero6.jpg"
            render_jpeg(HERO6, jpg)
            report["hero6_12mp"] = speed(HERO6, jpg, work, args.repeat, args.model)
            print(json.dumps(report["hero6_12mp"], indent=2), flush=True)
        if not args.no_48mp:
            dng, jpg = make_sample(work, "big48", h=6000, w=8000, seed=7)
            report["synthetic_48mp"] = speed(dng, jpg, work, 1, args.model)
            print(json.dumps(report["synthetic_48mp"], indent=2), flush=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
