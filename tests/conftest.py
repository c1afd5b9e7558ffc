"""Shared fixtures: small generated samples, the shared real data (skipped when absent)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rawmeta.evaluate import SHARED_RAW
from rawmeta.synthetic import make_sample



def shared_raw(name: str) -> Path:
    path = SHARED_RAW / name
    if not path.exists():
        pytest.skip(f"{path} not present (no ../shared/data on this machine)")
    return path


def need_tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        pytest.skip(f"{name} not installed (CI installs it via .ci/run)")
    return exe


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory) -> Path:
    """One generated raw + its LibRaw JPEG, mirrored like the GoPro files (Orientation 2)."""
    folder = tmp_path_factory.mktemp("sample")
    make_sample(folder, "mirror", h=256, w=384, seed=3, orientation=2)
    return folder


@pytest.fixture
def sample(sample_dir, tmp_path) -> tuple[Path, Path]:
    """A private copy of (dng, jpg) a test may modify."""
    dng, jpg = tmp_path / "mirror.dng", tmp_path / "mirror.jpg"
    shutil.copy(sample_dir / "mirror.dng", dng)
    shutil.copy(sample_dir / "mirror.jpg", jpg)
    return dng, jpg
