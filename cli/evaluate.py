"""`rawmeta eval`: measure every codec method on real bytes (rate, raw PSNR/SSIM, edit-aware
error, speed, memory) and write a table, a JSON report and a rate-distortion plot."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from rawmeta.cli.main import _errors
from rawmeta.formats.errors import BadInputError



@click.command("eval")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--method", default="all", show_default=True,
              help="neural, prior, sam, local, all, or a comma list (e.g. neural,prior).")
@click.option("--quality", help='Rate points: "16,32,64" for one method, or "neural=10,50;local=16". '
                                "Defaults: neural 0/25/50/75/100, sam 8 (1 in 64 raw pixels), "
                                "local 4/8/16/32 (block size).")
@click.option("--model", help="neural: model id or .pt file (default: the installed default).")
@click.option("--render", type=click.Choice(["libraw", "libraw-linear", "darktable"]),
              default="libraw", show_default=True,
              help="Pipeline that renders each raw into the sRGB JPEG (darktable: darktable-cli's "
                   "default edit, where it is installed).")
@click.option("--jpeg-quality", type=click.IntRange(1, 100), default=95, show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every number, settings and software versions here.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the rate-distortion plot (PNG) here.")
@click.option("--synthetic", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="Unprocess the photos in this folder into raws (fixed seed) and evaluate those.")
@click.option("--limit", type=click.IntRange(1), help="Use only the first N raws / photos.")
@click.option("--seed", default=0, show_default=True, help="Seed for --synthetic.")
@click.option("--subprocess", "use_subprocess", is_flag=True,
              help="Time each encode/decode as a fresh process (honest per-method peak RSS).")
@click.option("--repeat", type=click.IntRange(1), default=1, show_default=True,
              help="Timing runs per method; speed is the median.")
@click.option("--no-edit", is_flag=True, help="Skip the edit-aware renders (faster).")
@click.option("-q", "--quiet", is_flag=True, help="No progress on stderr.")
@_errors
def evaluate(paths, method, quality, model, render, jpeg_quality, json_path, plot_path, synthetic, limit,
             seed, use_subprocess, repeat, no_edit, quiet):
    """Evaluate codec methods on raw files or folders PATHS (default: ../shared/data/raw)."""
    from rawmeta import evaluate as ev

    runs = ev.parse_runs(method, quality, model)
    log = None if quiet else (lambda msg: click.echo(msg, err=True))
    with tempfile.TemporaryDirectory(prefix="rawmeta-synth-") as tmp:
        raws = _raws(paths, synthetic, limit, seed, Path(tmp), ev)
        report = ev.evaluate(raws, runs, render, jpeg_quality, edit=not no_edit,
                             use_subprocess=use_subprocess, repeat=repeat, log=log)
    if synthetic:
        report["settings"]["synthetic"] = {"photos": str(synthetic), "seed": seed, "limit": limit}
    click.echo(ev.format_table(report))
    if json_path:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
    if plot_path:
        ev.plot_rd(report, plot_path)


def _raws(paths, synthetic, limit, seed, tmp: Path, ev) -> list[Path]:
    if synthetic:
        from rawmeta.unprocess import unprocess_folder

        raws = unprocess_folder(synthetic, tmp, seed=seed, limit=limit)
        if not raws:
            raise BadInputError(synthetic, "no photos (png, jpg, tif, bmp, ppm) in this folder")
        return raws
    if not paths:
        if not ev.SHARED_RAW.is_dir():
            raise BadInputError(None, f"no PATHS given and {ev.SHARED_RAW} does not exist; "
                                      "pass raw files or folders, or --synthetic PHOTO_FOLDER")
        paths = (ev.SHARED_RAW,)
    raws = ev.find_raws(list(paths))
    return raws[:limit] if limit else raws
