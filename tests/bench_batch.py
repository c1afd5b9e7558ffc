"""Benchmark `rawmeta batch`: pairs per minute on 12 MP raws, --jobs 1, --jobs 2, and a
2-worker Dask LocalCluster (loopback). Not collected by pytest (name lacks `test_`).

    .venv/bin/python tests/bench_batch.py [--pairs 4] [--raw PATH]

Builds a temp library in /tmp: N symlinks to the raw, each with a copy of its LibRaw JPEG
(copies: the batch embeds into them in place). Times the whole `rawmeta batch` process
(worker start-up included) on a fresh library per configuration.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERO6 = Path(__file__).resolve().parents[2] / "shared" / "data" / "raw" / "Hero6_GOPR0024.dng"
CONFIGS = {"jobs 1": ["--jobs", "1"], "jobs 2": ["--jobs", "2"],
           "dask LocalCluster 2 workers": ["--executor", "dask", "--jobs", "2"]}


def make_library(root: Path, raw: Path, jpg: Path, pairs: int) -> None:
    for i in range(pairs):
        folder = root / f"day{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"GOPR{i:04d}.DNG").symlink_to(raw)
        shutil.copy(jpg, folder / f"GOPR{i:04d}.JPG")


def run_config(args: list[str], library: Path) -> tuple[float, dict]:
    report = library.parent / f"{library.name}.json"
    cmd = [sys.executable, "-m", "rawmeta.cli.main", "batch", str(library), *args, "--json", str(report)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr}")
    return wall, json.loads(report.read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--raw", type=Path, default=HERO6)
    ap.add_argument("--only", choices=list(CONFIGS), action="append")
    a = ap.parse_args()
    from rawmeta.srgb import render_jpeg

    with tempfile.TemporaryDirectory(prefix="rawmeta-bench-") as tmp:
        tmp = Path(tmp)
        jpg = tmp / "render.jpg"
        t = time.perf_counter()
        render_jpeg(a.raw, jpg)
        print(f"rendered {a.raw.name} -> JPEG in {time.perf_counter() - t:.1f} s; "
              f"{a.pairs} pairs per run, {os.cpu_count()} CPUs")
        for name in a.only or CONFIGS:
            library = tmp / name.replace(" ", "_")
            make_library(library, a.raw, jpg, a.pairs)
            wall, report = run_config(CONFIGS[name], library)
            s = report["summary"]
            assert s["done"] == a.pairs, s
            print(f"{name:28s} {a.pairs} pairs in {wall:6.1f} s = {60 * a.pairs / wall:5.2f} pairs/min "
                  f"(mean {s['mean_bpp']:.4f} bpp, PSNR {s['mean_psnr']:.2f} dB)")


if __name__ == "__main__":
    main()
