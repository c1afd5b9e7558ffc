"""`.rmeta` sidecar: the payload bytes alone, in a file beside the JPEG (photo.rmeta)."""
from __future__ import annotations

import os
from pathlib import Path

from .atomic import write_atomic
from .errors import BadInputError, OutputError
from .payload import is_payload

SUFFIX = ".rmeta"
MAX_SIDECAR_BYTES = 1 << 30


def sidecar_path(jpeg_path: str | os.PathLike) -> Path:
    return Path(jpeg_path).with_suffix(SUFFIX)


def read_sidecar(path: str | os.PathLike) -> bytes:
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_SIDECAR_BYTES:
            raise BadInputError(path, f"sidecar is {size} bytes, larger than any rawmeta payload")
        data = path.read_bytes()
    except OSError as e:
        raise OutputError(path, f"cannot read: {e.strerror}") from None
    if not is_payload(data):
        raise BadInputError(path, "not a rawmeta sidecar (bad magic)")
    return data


def write_sidecar(path: str | os.PathLike, payload: bytes, force: bool = False) -> None:
    write_atomic(path, payload, force=force)
