"""The `rawmeta` command: one job per subcommand, quiet unless asked, one-line errors.

Exit codes: 0 ok, 2 usage, 3 bad input, 4 corrupt metadata, 5 I/O, 6 batch finished with
failures; see formats.errors.
Heavy modules (numpy, torch, rawpy) are imported inside the commands that need them, so
`rawmeta info` stays instant.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import sys
from pathlib import Path

import click

from rawmeta import __version__
from rawmeta.formats.errors import EXIT_IO, BadInputError, NoMetadataError, OutputError, RawmetaError


def _errors(fn):
    """Turn RawmetaError (and stray OS errors) into one line on stderr and its exit code."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RawmetaError as e:
            click.echo(f"rawmeta: error: {e}", err=True)
            sys.exit(e.exit_code)
        except BrokenPipeError:  # `rawmeta info x.jpg | head`: the reader left; not an error
            sys.exit(0)
        except OSError as e:
            click.echo(f"rawmeta: error: {e.filename or ''}: {e.strerror or e}", err=True)
            sys.exit(EXIT_IO)
        except MemoryError:
            click.echo("rawmeta: error: out of memory", err=True)
            sys.exit(EXIT_IO)
    return wrapper


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise BadInputError(path, f"cannot read: {e.strerror}") from None


def _emit(as_json: bool, record: dict, line: str, quiet: bool = False) -> None:
    if as_json:
        click.echo(json.dumps(record, indent=2, sort_keys=True))
    elif not quiet:
        click.echo(line)


# Commands that live in their own modules, imported only when invoked (keeps `info` instant).
LAZY_COMMANDS = {"batch": "rawmeta.cli.batch:batch", "eval": "rawmeta.cli.evaluate:evaluate",
                 "train": "rawmeta.cli.train:train"}
DEVICE = click.option("--device", type=click.Choice(["cpu", "cuda", "auto"]), default="cpu",
                      show_default=True, help="Where the neural transforms run (the entropy "
                      "model always runs on the CPU in float64: same bitstream either way).")


class LazyGroup(click.Group):
    def _lazy(self):
        return {name: target for name, target in LAZY_COMMANDS.items()
                if importlib.util.find_spec(target.split(":")[0]) is not None}

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self._lazy()))

    def get_command(self, ctx, name):
        target = self._lazy().get(name)
        if target is None:
            return super().get_command(ctx, name)
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rawmeta")
def cli():
    """Keep the sRGB JPEG, drop the RAW: rebuild a faithful DNG from learned metadata."""


@cli.command()
@click.argument("raw", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("srgb", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the JPEG (or with --sidecar the .rmeta) here instead of in place.")
@click.option("--sidecar", is_flag=True, help="Write SRGB's stem + .rmeta; leave the JPEG untouched.")
@click.option("--method", type=click.Choice(["neural", "prior", "sam", "local"]), default=None,
              help="Codec: neural (learned; the default when a model is installed), prior "
                   "(global curves only), sam (1-in-N^2 raw samples), local (per-block affine).")
@click.option("--quality", type=float, default=None,
              help="Rate knob: neural 0-100 (continuous, default 50; higher = more bytes), "
                   "sam sample stride, local block size (smaller = more bytes).")
@click.option("--target-psnr", type=float, default=None, metavar="DB",
              help="neural: the lowest quality whose PSNR, measured on the raw, reaches DB.")
@click.option("--model", default=None, help="neural: model id (weights/zoo.json) or a .pt file.")
@DEVICE
@click.option("--force", is_flag=True, help="Overwrite an existing output or replace existing metadata.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@_errors
def encode(raw, srgb, output, sidecar, method, quality, target_psnr, model, device, force,
           as_json, quiet):
    """Compute metadata for RAW and store it in the JPEG SRGB (or a sidecar)."""
    from rawmeta import zoo
    from rawmeta.formats import jpeg, rmeta
    from rawmeta.formats.atomic import check_writable, write_atomic

    if method == "neural" or (method is None and zoo.default_model()):
        _preload_neural()

    data = _read(srgb)
    in_place = output is None and not sidecar
    target = output or (rmeta.sidecar_path(srgb) if sidecar else srgb)
    if in_place:
        if jpeg.extract(data, srgb) is not None and not force:
            raise OutputError(srgb, "already carries rawmeta metadata (use --force to replace it)")
    else:
        check_writable(target, force)

    from rawmeta import codec
    if method in ("sam", "local") and quality is not None:
        if quality != int(quality):
            raise BadInputError(None, f"--quality for {method} is a whole number, not {quality:g}")
        quality = int(quality)
    result = codec.encode(raw, srgb, srgb_bytes=data, method=method, quality=quality,
                          target_psnr=target_psnr, model=model, device=device)
    if sidecar:
        rmeta.write_sidecar(target, result.payload, force=force)
    else:
        out = jpeg.embed(data, result.payload, srgb)
        write_atomic(target, out, force=force or in_place, mode_from=srgb)
    record = {"output": str(target), "payload_bytes": len(result.payload), "bpp": round(result.bpp, 5),
              "psnr": result.psnr, "method": result.header["method"]}
    if "neural" in result.header:
        record["quality"] = result.header["neural"]["quality"]
        record["model"] = result.header["neural"]["model"]
    _emit(as_json, record, f"{target}: {len(result.payload)} bytes, {result.bpp:.4f} bpp, "
                           f"PSNR {result.psnr:.2f} dB", quiet)


def _preload_neural() -> None:
    from rawmeta import neural

    neural.preload()


def _method_of(payload: bytes) -> str | None:
    """The payload's codec, or None if it does not parse (decode then reports why)."""
    from rawmeta.formats.errors import RawmetaError
    from rawmeta.formats.payload import Payload

    try:
        return Payload.from_bytes(payload).header.get("method")
    except RawmetaError:
        return None


def _find_payload(srgb: Path, data: bytes, meta: Path | None) -> tuple[bytes, Path]:
    """Payload from --meta, else inside the JPEG, else the sidecar beside it."""
    from rawmeta.formats import jpeg, rmeta

    if meta is not None:
        return rmeta.read_sidecar(meta), meta
    embedded = jpeg.extract(data, srgb)
    if embedded is not None:
        return embedded, srgb
    side = rmeta.sidecar_path(srgb)
    if side.exists():
        return rmeta.read_sidecar(side), side
    raise NoMetadataError(srgb, f"carries no rawmeta metadata and there is no sidecar {side.name} "
                                "(stripped by an editor? `exiftool -all=` removes it)")


@cli.command()
@click.argument("srgb", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The DNG to write.")
@click.option("--meta", type=click.Path(dir_okay=False, path_type=Path),
              help="Read the metadata from this .rmeta instead of the JPEG.")
@click.option("--uncompressed", is_flag=True, help="Write uncompressed strips instead of LJ92 tiles.")
@DEVICE
@click.option("--force", is_flag=True,
              help="Overwrite an existing DNG; decode even if the JPEG's pixels changed since encoding.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable result on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="Print nothing on success.")
@_errors
def decode(srgb, output, meta, uncompressed, device, force, as_json, quiet):
    """Rebuild the raw behind the JPEG SRGB as a DNG."""
    from rawmeta.formats.atomic import check_writable

    check_writable(output, force)
    data = _read(srgb)
    payload, source = _find_payload(srgb, data, meta)
    if _method_of(payload) == "neural":
        _preload_neural()
    from rawmeta import codec
    from rawmeta.formats.dng import write_dng

    image, header = codec.decode(payload, srgb, srgb_bytes=data, source=source, force=force,
                                 device=device, warn=lambda msg: click.echo(f"rawmeta: warning: {msg}", err=True))
    write_dng(output, image.mosaic, image.meta, compress=not uncompressed, force=force)
    record = {"output": str(output), "width": image.meta.width, "height": image.meta.height,
              "encode_psnr": header.get("psnr"), "metadata": str(source)}
    _emit(as_json, record, f"{output}: {image.meta.width}x{image.meta.height} "
                           f"{image.meta.make} {image.meta.model}", quiet)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@_errors
def info(file, as_json):
    """Show what rawmeta metadata FILE (a JPEG or .rmeta) carries. Instant: no codec load."""
    from rawmeta.formats import payload as pl
    from rawmeta.formats.payload import Payload

    data = _read(file)
    if pl.is_payload(data):
        raw_payload, where = data, "sidecar"
    else:
        raw_payload, source = _find_payload(file, data, None)
        where = "APP11" if source == file else f"sidecar {source.name}"
    p = Payload.from_bytes(raw_payload, str(file))
    h = p.header
    geom, cam = h.get("geometry", {}), h.get("camera", {})
    pixels = max(1, geom.get("srgb_width", 0) * geom.get("srgb_height", 0))
    record = {
        "file": str(file), "stored_in": where, "format_version": f"{pl.MAJOR}.{pl.MINOR}",
        "software": h.get("software"), "method": h.get("method"),
        "model": (h.get("neural") or {}).get("model"), "quality": (h.get("neural") or {}).get("quality", h.get("quality")),
        "payload_bytes": len(raw_payload), "bpp": round(8 * len(raw_payload) / pixels, 5),
        "encode_psnr": h.get("psnr"),
        "srgb_size": [geom.get("srgb_width"), geom.get("srgb_height")],
        "raw_size": [cam.get("width"), cam.get("height")], "cfa": cam.get("cfa"),
        "camera": f"{cam.get('make', '?')} {cam.get('model', '?')}",
        "sections": {k: len(v) for k, v in p.sections.items()},
    }
    if as_json:
        click.echo(json.dumps(record, indent=2))
        return
    for key, value in record.items():
        click.echo(f"{key:15} {value}")


def main():
    """Console entry point. Ends with os._exit once output is flushed: every file this
    process writes is already fsynced and renamed into place, and tearing down torch's
    interpreter state costs ~0.7 s per run for nothing."""
    import os

    try:
        cli(prog_name="rawmeta", standalone_mode=True)
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, int) and e.code is not None:
            print(e.code, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
