"""`rawmeta batch`: convert a whole photo library; the engine is rawmeta.batch.

Kept light at import (no numpy, no torch): workers load the codec themselves.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import click

from rawmeta import batch as engine
from rawmeta.cli.main import _errors
from rawmeta.formats.errors import EXIT_SOME_FAILED

_MB = 1024 * 1024


@click.command()
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Write JPEG (or sidecar) copies here, mirroring SRC's tree; SRC is left untouched.")
@click.option("--sidecar", is_flag=True, help="Write NAME.rmeta beside each JPEG instead of embedding.")
@click.option("-j", "--jobs", type=click.IntRange(min=1),
              help="Worker processes (default: the CPUs this process may use).")
@click.option("--render-missing", is_flag=True,
              help="Render a JPEG with LibRaw for raws that have none (default: list them).")
@click.option("--verify", is_flag=True, help="Decode every result and measure it against the raw.")
@click.option("--min-psnr", type=float, metavar="DB", help="Verified PSNR a raw needs for --delete-raw.")
@click.option("--delete-raw", is_flag=True,
              help="Move each raw whose verified PSNR >= --min-psnr to SRC/.rawmeta-trash/ "
                   "(implies --verify; JPEGs are never touched).")
@click.option("--dry-run", is_flag=True, help="Show what would be done; write nothing.")
@click.option("--json", "report_path", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path),
              metavar="REPORT", help="Write a JSON report here ('-': stdout); no progress bar or summary.")
@click.option("--executor", type=click.Choice(["process", "dask"]), default="process", show_default=True,
              help="Local worker processes, or Dask (a loopback LocalCluster of --jobs workers).")
@click.option("--scheduler", metavar="tcp://HOST:PORT",
              help="Run on this Dask scheduler (implies --executor dask; needs rawmeta[distributed] "
                   "and the library at the same path on every worker).")
@_errors
def batch(src, out, sidecar, jobs, render_missing, verify, min_psnr, delete_raw, dry_run,
          report_path, executor, scheduler):
    """Pair every raw under SRC with its JPEG (same stem, any case) and store its metadata.

    Embeds in place by default. A SQLite manifest (.rawmeta-batch.sqlite in SRC, or in
    --out) records every pair: a second run skips what is done, and a killed run resumes.

    Exit codes: 0 all pairs ok, 6 some pairs failed (see the summary or REPORT),
    2 usage, 3 bad input, 5 I/O (e.g. the manifest cannot be written).
    """
    if delete_raw and min_psnr is None:
        raise click.UsageError("--delete-raw needs --min-psnr DB (the verified quality a raw must reach)")
    if delete_raw and out is not None:
        raise click.UsageError("--delete-raw keeps the metadata in the library: it cannot go with --out")
    if out is not None and out.resolve() == src.resolve():
        raise click.UsageError("--out must differ from SRC (omit it to embed in place)")
    opts = engine.Options(
        root=src, out=out, sidecar=sidecar, jobs=jobs or engine.default_jobs(),
        render_missing=render_missing, verify=verify or delete_raw, min_psnr=min_psnr,
        delete_raw=delete_raw, dry_run=dry_run, executor="dask" if scheduler else executor,
        scheduler=scheduler)
    quiet = report_path is not None
    with _ProgressBar(enabled=not quiet and not dry_run) as bar:
        report = engine.run_batch(opts, on_start=bar.start, progress=bar.update)
    if quiet:
        _write_report(report_path, opts, report)
    else:
        _print_summary(opts, report)
    if report.failed:
        sys.exit(EXIT_SOME_FAILED)


class _ProgressBar:
    """tqdm on stderr: files done, MB/s over the raws, ETA."""

    def __init__(self, enabled: bool):
        self.enabled, self.bar, self.files, self.n_tasks = enabled, None, 0, 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()

    def start(self, n_tasks: int, total_bytes: int) -> None:
        if not self.enabled or n_tasks == 0:
            return
        from tqdm import tqdm

        self.bar = tqdm(total=total_bytes, unit="B", unit_scale=True, unit_divisor=1024,
                        desc="rawmeta batch", file=sys.stderr, dynamic_ncols=True)
        self.n_tasks = n_tasks

    def update(self, task: dict, result: dict) -> None:
        if self.bar is None:
            return
        self.files += 1
        self.bar.set_postfix_str(f"{self.files}/{self.n_tasks} files", refresh=False)
        self.bar.update(task["size"])


def _clean(value):
    """JSON has no Infinity: identical rebuilds (PSNR inf) are reported as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return round(value, 5) if isinstance(value, float) else value


def _write_report(path: Path, opts, report) -> None:
    from rawmeta.formats.atomic import write_atomic

    record = {"summary": {k: _clean(v) for k, v in report.summary().items()},
              "planned": report.planned, "dry_run": opts.dry_run,
              "manifest": str(opts.base / engine.MANIFEST_NAME),
              "done": report.done, "skipped": report.skipped, "failed": report.failed,
              "trashed": report.trashed, "kept_raws": report.kept,
              "raws_without_jpeg": report.lone_raws}
    text = json.dumps(record, indent=2, sort_keys=True) + "\n"
    if str(path) == "-":
        click.echo(text, nl=False)
    else:
        write_atomic(path, text.encode(), force=True)


def _print_summary(opts, report) -> None:
    s = report.summary()
    if opts.dry_run:
        p = report.planned
        click.echo(f"dry run: would encode {p.get('encode', 0)} and verify {p.get('verify', 0)} pairs; "
                   f"{s['skipped']} already done, {s['failed']} unpairable")
    else:
        click.echo(f"pairs: {s['done']} done, {s['skipped']} skipped, {s['failed']} failed"
                   + (f", {s['trashed']} raws moved to {engine.TRASH_NAME}/" if report.trashed else ""))
    for raw, error in report.failed.items():
        click.echo(f"  failed: {raw}: {error}")
    for raw, why in report.kept.items():
        click.echo(f"  raw kept: {raw}: {why}")
    if report.lone_raws:
        click.echo(f"raws without a JPEG ({len(report.lone_raws)}; --render-missing renders them):")
        for raw in report.lone_raws:
            click.echo(f"  {raw}")
    if not opts.dry_run and s.get("converted_total"):
        click.echo(f"library ({s['converted_total']} pairs converted): "
                   f"{(s['bytes_before'] or 0) / _MB:.1f} MB raw+JPEG -> {(s['bytes_after'] or 0) / _MB:.1f} MB "
                   f"without raws; mean {_fmt(s['mean_bpp'], 4)} bpp, "
                   f"PSNR {_fmt(s['mean_psnr'])} dB" + (f", verified {_fmt(s['mean_verify_psnr'])} dB"
                                                       if s.get("mean_verify_psnr") is not None else ""))


def _fmt(value, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
