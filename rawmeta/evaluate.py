"""The evaluation harness behind `rawmeta eval` (DESIGN.md "Measuring").

For each raw: render its sRGB with an independent pipeline (LibRaw), run every method
through the real encode -> payload bytes -> decode path, and measure rate (bpp over all
payload bytes), raw-domain PSNR/SSIM on the normalised CFA mosaic, the edit-aware error
(+2 EV, warmer white balance, compared in sRGB), wall seconds per megapixel and peak RSS.
Output: a table, a JSON report with every number and the software versions, an R-D plot.
"""
from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import rawmeta
from rawmeta import codec, metrics, raw as rawio
from rawmeta.batch import RAW_EXTS
from rawmeta.formats.errors import BadInputError, RawmetaError
from rawmeta.formats.payload import Payload
from rawmeta.srgb import RENDERS, render_jpeg

DEFAULT_QUALITIES = {"neural": [0, 25, 50, 75, 100], "prior": [None], "sam": [8],
                     "local": [4, 8, 16, 32]}
SHARED_RAW = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "raw"
_RSS_POLL_S = 0.005


@dataclass(frozen=True)
class Run:
    method: str
    quality: float | None = None
    model: str | None = None   # neural: model id or .pt file (default: the installed default)

    @property
    def label(self) -> str:
        return self.method if self.quality is None else f"{self.method}-{self.quality}"


# --- what to run -------------------------------------------------------------------------

def parse_runs(method: str = "all", quality: str | None = None, model: str | None = None
               ) -> list[Run]:
    """--method neural|prior|sam|local|all (or a comma list); --quality "16,32" for one method
    or "local=16,32;sam=8" per method. Methods without a quality list use DEFAULT_QUALITIES.
    `all` includes neural only when a model is installed or given."""
    from rawmeta import zoo

    names = list(codec.METHODS) if method == "all" else [m.strip() for m in method.split(",")]
    if method == "all" and not (model or zoo.default_model()):
        names.remove("neural")
    unknown = [m for m in names if m not in codec.METHODS]
    if unknown:
        raise BadInputError(None, f"unknown method {unknown[0]!r} (choose from "
                                  f"{', '.join(codec.METHODS)} or all)")
    qualities = {m: list(DEFAULT_QUALITIES.get(m, [None])) for m in names}
    for method_name, values in _parse_quality(quality, names).items():
        qualities[method_name] = values
    return [Run(m, q, model if m == "neural" else None) for m in names for q in qualities[m]]


def _parse_quality(spec: str | None, names: list[str]) -> dict[str, list[float]]:
    if not spec:
        return {}
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, _, values = part.rpartition("=")
        name = name.strip() or (names[0] if len(names) == 1 else "")
        if name not in names or name == "prior":  # the prior has no rate knob
            raise BadInputError(None, f"--quality {part!r}: say which selected method, e.g. "
                                      "local=16,32 (prior takes no quality)")
        try:
            out[name] = [_number(v) if name == "neural" else int(v) for v in values.split(",")]
        except ValueError:
            raise BadInputError(None, f"--quality {part!r}: qualities are numbers (integers "
                                      "for sam and local)") from None
    return out


def _number(text: str) -> float | int:
    v = float(text)
    return int(v) if v == int(v) else v


def find_raws(paths: list[str | os.PathLike]) -> list[Path]:
    """Raw files named, plus the raw files (by suffix) directly inside named folders."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in RAW_EXTS and f.is_file())
        elif p.is_file():
            out.append(p)
        else:
            raise BadInputError(p, "no such file or folder")
    if not out:
        raise BadInputError(None, f"no raw files in {', '.join(map(str, paths))}")
    return out


# --- rendering and measuring ------------------------------------------------------------

def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def timed(fn, *args, **kwargs):
    """-> (result, wall seconds, peak RSS bytes during the call).

    Peak RSS is sampled every 5 ms from /proc (Linux); elsewhere the process's lifetime
    ru_maxrss, which only ever grows, is all there is."""
    if not os.path.exists("/proc/self/statm"):
        import resource

        t = time.perf_counter()
        result = fn(*args, **kwargs)
        scale = 1 if sys.platform == "darwin" else 1024
        return result, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale
    peak = [_rss_bytes()]
    done = threading.Event()

    def poll():
        while not done.wait(_RSS_POLL_S):
            peak[0] = max(peak[0], _rss_bytes())

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    t = time.perf_counter()
    try:
        result = fn(*args, **kwargs)
    finally:
        elapsed = time.perf_counter() - t
        done.set()
        watcher.join()
    return result, elapsed, max(peak[0], _rss_bytes())


def _in_process(run: Run, raw_path: Path, jpg: Path, work: Path):
    """Encode and decode in this process. -> (payload, mosaic, enc (s, rss), dec (s, rss))."""
    enc, te, re = timed(codec.encode, raw_path, jpg, method=run.method, quality=run.quality,
                        model=run.model)
    (image, _), td, rd = timed(codec.decode, enc.payload, jpg)
    return enc.payload, image.mosaic, (te, re), (td, rd)


def _in_subprocess(run: Run, raw_path: Path, jpg: Path, work: Path):
    """Each side in a fresh Python process: whole-process wall time and its own peak RSS."""
    payload_path, mosaic_path = work / f"{run.label}.rmeta", work / f"{run.label}.npy"
    quality = "" if run.quality is None else str(run.quality)
    enc = _child(["encode", str(raw_path), str(jpg), run.method, quality, str(payload_path),
                  run.model or ""])
    dec = _child(["decode", str(payload_path), str(jpg), str(mosaic_path)])
    return payload_path.read_bytes(), np.load(mosaic_path), enc, dec


def _child(args: list[str]) -> tuple[float, int]:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rawmeta.evaluate", *args],
                          capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1:] or ["?"]
        raise RawmetaError(None, f"{args[0]} subprocess failed: {last[0]}")
    return elapsed, int(proc.stdout.split()[-1])


def _own_peak_rss() -> int:
    """This process's peak RSS in bytes. VmHWM, not ru_maxrss: Linux carries the parent's
    RSS at fork into a child's ru_maxrss, which would charge the harness to every method."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)


def measure_run(run: Run, raw_path: Path, jpg: Path, work: Path, truth: np.ndarray, meta,
                edit_ref: np.ndarray | None, use_subprocess: bool = False, repeat: int = 1) -> dict:
    """One method on one image through real bytes; timings are medians over `repeat`."""
    runner = _in_subprocess if use_subprocess else _in_process
    trials = [runner(run, raw_path, jpg, work) for _ in range(max(1, repeat))]
    payload, mosaic = trials[0][0], trials[0][1]
    rebuilt = rawio.normalized_mosaic(mosaic, meta)
    mp = meta.width * meta.height / 1e6
    pixels = _srgb_pixels(jpg)
    row = {
        "method": run.method, "quality": run.quality, "label": run.label,
        "payload_bytes": len(payload), "bpp": metrics.bpp(len(payload), pixels),
        "psnr": metrics.psnr(rebuilt, truth), "ssim": metrics.ssim(rebuilt, truth),
        "encode_psnr": Payload.from_bytes(payload).header.get("psnr"),
        "encode_s_per_mp": statistics.median(t[2][0] for t in trials) / mp,
        "decode_s_per_mp": statistics.median(t[3][0] for t in trials) / mp,
        "encode_peak_rss_mb": max(t[2][1] for t in trials) / 2**20,
        "decode_peak_rss_mb": max(t[3][1] for t in trials) / 2**20,
    }
    if edit_ref is not None:
        row.update(metrics.edit_error(None, mosaic, meta, reference=edit_ref))
    return row


def _srgb_pixels(jpg: Path) -> int:
    from PIL import Image

    with Image.open(jpg) as im:
        return im.width * im.height


def evaluate_image(raw_path: Path, runs: list[Run], work: Path, render: str = "libraw",
                   jpeg_quality: int = 95, edit: bool = True, use_subprocess: bool = False,
                   repeat: int = 1, log=None) -> dict:
    """All runs on one raw -> {"image", ..., "results": [row per run]}."""
    original = rawio.read_raw(raw_path)  # first: a clear error for what LibRaw cannot read
    jpg = work / f"{raw_path.stem}.jpg"
    render_jpeg(raw_path, jpg, render, jpeg_quality)
    meta = original.meta
    truth = rawio.normalized_mosaic(original.mosaic, meta)
    edit_ref = metrics.edit_render(original.mosaic, meta) if edit else None
    record = {"image": raw_path.name, "path": str(raw_path), "width": meta.width,
              "height": meta.height, "cfa": meta.cfa, "camera": f"{meta.make} {meta.model}",
              "srgb_pixels": _srgb_pixels(jpg), "srgb_bytes": jpg.stat().st_size, "results": []}
    for run in runs:
        if log:
            log(f"{raw_path.name}: {run.label}")
        record["results"].append(measure_run(run, raw_path, jpg, work, truth, meta, edit_ref,
                                             use_subprocess, repeat))
    return record


def mean_rows(images: list[dict]) -> list[dict]:
    """Per run label: the arithmetic mean of every number over the images that succeeded."""
    by_label: dict[str, list[dict]] = {}
    for image in images:
        for row in image.get("results", []):
            by_label.setdefault(row["label"], []).append(row)
    out = []
    for label, rows in by_label.items():
        mean = {k: rows[0][k] for k in ("method", "quality", "label")}
        mean["images"] = len(rows)
        for key, value in rows[0].items():
            if isinstance(value, (int, float)) and key not in mean and value is not None:
                mean[key] = float(np.mean([r[key] for r in rows]))
        out.append(mean)
    return out


def versions() -> dict:
    """Versions of everything that produced the numbers (no heavy import needed)."""
    from importlib.metadata import PackageNotFoundError, version

    import rawpy

    out = {"rawmeta": rawmeta.__version__, "python": platform.python_version(),
           "platform": platform.platform(), "libraw": ".".join(map(str, rawpy.libraw_version))}
    for pkg in ("numpy", "rawpy", "scikit-image", "pillow", "zstandard", "tifffile",
                "imagecodecs", "torch", "compressai", "matplotlib"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def evaluate(raws: list[Path], runs: list[Run], render: str = "libraw", jpeg_quality: int = 95,
             edit: bool = True, use_subprocess: bool = False, repeat: int = 1, log=None) -> dict:
    """The whole report: settings, software, per-image rows (or errors), means."""
    images = []
    with tempfile.TemporaryDirectory(prefix="rawmeta-eval-") as tmp:
        for raw_path in raws:
            work = Path(tmp) / f"{len(images)}"
            work.mkdir()
            try:
                images.append(evaluate_image(Path(raw_path), runs, work, render, jpeg_quality,
                                             edit, use_subprocess, repeat, log))
            except RawmetaError as e:  # one unreadable raw must not sink the whole run
                if log:
                    log(f"{Path(raw_path).name}: skipped: {e}")
                images.append({"image": Path(raw_path).name, "path": str(raw_path), "error": str(e)})
    return {
        "settings": {"runs": [r.label for r in runs], "render": render, "render_options": RENDERS[render],
                     "jpeg_quality": jpeg_quality, "repeat": repeat,
                     "edit": {"ev": metrics.EDIT_EV, "wb_shift_rgb": metrics.EDIT_WB_SHIFT,
                              "pipeline": "LibRaw on a temporary DNG: AHD, camera matrix, sRGB, "
                                          "no auto-brightening"} if edit else None},
        "measurement": {
            "bpp": "8 x payload bytes (header included) / sRGB pixels",
            "psnr_ssim": "normalised (x - black)/(white - black) visible CFA mosaic, peak 1; SSIM: "
                         "scikit-image, 7x7 window, data_range 1",
            "edit": "sRGB PSNR (peak 255) and mean CIEDE2000 (scikit-image) of edited renders",
            "speed": ("whole process per side (fresh `python -m rawmeta.evaluate`, interpreter start "
                      "and imports included), wall s per raw megapixel; the child's own peak RSS "
                      "(VmHWM)" if use_subprocess else
                      "in-process wall s per raw megapixel of codec.encode/decode (raw reading "
                      "included); peak RSS of this process sampled every 5 ms during the call, "
                      "harness memory included"),
        },
        "software": versions(),
        "images": images,
        "mean": mean_rows(images),
    }


# --- output ------------------------------------------------------------------------------

_COLUMNS = [("method", "label", 10, "s"), ("bytes", "payload_bytes", 8, ".0f"),
            ("bpp", "bpp", 8, ".4f"), ("PSNR", "psnr", 6, ".2f"), ("SSIM", "ssim", 6, ".4f"),
            ("editPSNR", "edit_psnr", 8, ".2f"), ("dE00", "edit_de2000", 5, ".2f"),
            ("enc s/MP", "encode_s_per_mp", 8, ".2f"), ("dec s/MP", "decode_s_per_mp", 8, ".2f"),
            ("encMB", "encode_peak_rss_mb", 6, ".0f"), ("decMB", "decode_peak_rss_mb", 6, ".0f")]


def format_table(report: dict) -> str:
    """One line per image and run, then the means over images."""
    header = f"{'image':<24}" + " ".join(f"{t:<{w}}" if f == "s" else f"{t:>{w}}"
                                         for t, _, w, f in _COLUMNS)
    lines = [header, "-" * len(header)]
    for image in report["images"]:
        if "error" in image:
            lines.append(f"{image['image'][:24]:<24}error: {image['error']}")
        for row in image.get("results", []):
            lines.append(_format_row(image["image"][:24], row))
    for row in report["mean"]:
        lines.append(_format_row(f"mean of {row['images']}", row))
    return "\n".join(lines)


def _format_row(name: str, row: dict) -> str:
    cells = []
    for _, key, width, spec in _COLUMNS:
        value = row.get(key)
        if value is None:
            cells.append(f"{'-':>{width}}")
        else:
            cells.append(f"{value:<{width}{spec}}" if spec == "s" else f"{value:>{width}{spec}}")
    return f"{name:<24}" + " ".join(cells)


def plot_rd(report: dict, path: str | os.PathLike) -> None:
    """PSNR vs bpp (log scale), one curve per method through its mean rate points; each
    image's points faint behind it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, method in enumerate(dict.fromkeys(r["method"] for r in report["mean"])):
        colour = f"C{i}"
        pts = sorted((r["bpp"], r["psnr"]) for r in report["mean"] if r["method"] == method)
        ax.plot(*zip(*pts), "o-", color=colour, label=method)
        for image in report["images"]:
            ipts = sorted((r["bpp"], r["psnr"]) for r in image.get("results", []) if r["method"] == method)
            if ipts:
                ax.plot(*zip(*ipts), ".:", color=colour, alpha=0.35)
    ax.set_xscale("log")
    ax.set_xlabel("bits per sRGB pixel (payload bytes, header included)")
    ax.set_ylabel("raw PSNR on the normalised CFA mosaic (dB)")
    n = sum(1 for im in report["images"] if "results" in im)
    ax.set_title(f"rawmeta rate-distortion, mean of {n} image(s)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- child process for --subprocess --------------------------------------------------------

def _child_main(argv: list[str]) -> None:
    """python -m rawmeta.evaluate encode RAW JPG METHOD QUALITY OUT MODEL | decode PAYLOAD JPG OUT.npy"""
    if argv[0] == "encode":
        raw_path, jpg, method, quality, out, model = argv[1:]
        result = codec.encode(raw_path, jpg, method=method, model=model or None,
                              quality=_number(quality) if quality else None)
        Path(out).write_bytes(result.payload)
    else:
        payload, jpg, out = argv[1:]
        image, _ = codec.decode(Path(payload).read_bytes(), jpg)
        np.save(out, image.mosaic)
    print(_own_peak_rss())


if __name__ == "__main__":
    _child_main(sys.argv[1:])
