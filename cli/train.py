"""`rawmeta train`: train the neural codec on CPU (resumable), or export a checkpoint as a
named model in weights/."""
from __future__ import annotations

from pathlib import Path

import click

from rawmeta.cli.main import _errors


@click.command("train")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="JSON config; missing keys take rawmeta.train.loop.DEFAULTS.")
@click.option("--steps", type=click.IntRange(1), help="Override the config's step count.")
@click.option("--export", "export_id", metavar="ID",
              help="Do not train: write the run's checkpoint as weights/ID.pt and register it.")
@click.option("--weights-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Where --export writes (default: the installed weights/ folder).")
@_errors
def train(config_path, steps, export_id, weights_dir):
    """Train (or resume) the run described by --config; logs to runs/NAME/log.txt."""
    from rawmeta import zoo
    from rawmeta.train import loop

    cfg = loop.load_config(config_path)
    if steps:
        cfg["steps"] = steps
    if export_id:
        digest = loop.export(cfg, export_id, weights_dir or zoo.WEIGHTS_DIR)
        click.echo(f"{export_id}: sha256 {digest}")
        return
    out = loop.run_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "log.txt", "a") as f:
        def log(msg):
            click.echo(msg, err=True)
            f.write(msg + "\n")
            f.flush()
        loop.train(cfg, log=log)
