"""Named models: weights files in `weights/` (package data) listed in `weights/zoo.json`
with their sha256. A payload records the model id and sha256; decode needs the same model.

`RAWMETA_MODELS` (a folder, os.pathsep-separated for several) adds models outside the
package: `<id>.pt` files there are found by id (their sha256 is still checked against the
payload). Weights load with `torch.load(weights_only=True)`: a weights file is data, not code.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path

from rawmeta.formats.errors import BadInputError, CorruptMetadataError

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
try:  # installed wheel: weights are the rawmeta.weights package
    import rawmeta.weights as _w
    WEIGHTS_DIR = Path(_w.__file__).resolve().parent
except ImportError:  # pragma: no cover
    pass
REGISTRY = WEIGHTS_DIR / "zoo.json"
CDF_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length")  # entropy models' coding tables


def registry() -> dict:
    if not REGISTRY.exists():
        return {"default": None, "models": {}}
    return json.loads(REGISTRY.read_text())


def default_model() -> str | None:
    return registry().get("default")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _search_dirs() -> list[Path]:
    extra = os.environ.get("RAWMETA_MODELS", "")
    return [Path(p) for p in extra.split(os.pathsep) if p] + [WEIGHTS_DIR]


def find(model_id: str) -> tuple[Path, str | None]:
    """model id or a path to a .pt file -> (file, expected sha256 or None)."""
    if model_id.endswith(".pt") and Path(model_id).is_file():
        return Path(model_id), None
    entry = registry()["models"].get(model_id)
    if entry:
        return WEIGHTS_DIR / entry["file"], entry["sha256"]
    for folder in _search_dirs():
        path = folder / f"{model_id}.pt"
        if path.is_file():
            return path, None
    raise LookupError(model_id)


def model_id_of(path: Path) -> str:
    return path.stem


@functools.lru_cache(maxsize=4)
def load(model_id: str, expect_sha256: str | None = None, source=None):
    """-> (RawMetaNet in eval mode, id, sha256). A payload's model that is not installed, or
    whose weights differ from the ones it was made with, is a clear error."""
    import torch
    from rawmeta.network import RawMetaNet

    try:
        path, listed = find(model_id)
    except LookupError:
        err = CorruptMetadataError if expect_sha256 else BadInputError
        raise err(source, f"model {model_id!r} is not installed (known: "
                          f"{', '.join(sorted(registry()['models'])) or 'none'}); "
                          "install the rawmeta version that made this file") from None
    digest = sha256_file(path)
    for want, what in ((listed, "the model registry"), (expect_sha256, "the payload")):
        if want and want != digest:
            raise CorruptMetadataError(source, f"model {model_id!r} at {path} has sha256 "
                                               f"{digest[:12]}..., {what} expects {want[:12]}...")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    net = RawMetaNet(**blob["config"])
    # the CDF tables are buffers sized at update() time: size them before loading
    for name in ("entropy_bottleneck", "gaussian_conditional"):
        module = getattr(net, name)
        for buf in CDF_BUFFERS:
            key = f"{name}.{buf}"
            getattr(module, buf).resize_(blob["state_dict"][key].shape)
    net.load_state_dict(blob["state_dict"])
    net.eval()
    return net, model_id_of(path) if listed is None else model_id, digest


def save(net, path: Path, extra: dict | None = None) -> str:
    """Write a model with its CDF tables (computed here, once: decoders never recompute them)."""
    import torch

    net.entropy_bottleneck.update(force=True)
    net.gaussian_conditional.update_scale_table(
        net.gaussian_conditional.scale_table, force=True)
    blob = {"config": net.config, "state_dict": net.state_dict(), **(extra or {})}
    tmp = Path(path).with_suffix(".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)
    return sha256_file(Path(path))
