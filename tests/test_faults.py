"""Faults: disk full while writing, read-only outputs, SIGKILL at any moment. The input JPEG
is never left modified or truncated and no half-written file appears under a final name."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rawmeta.formats.errors import EXIT_IO

# Runs the CLI with os.fsync failing as a full disk does (data written, flush refused).
_DISK_FULL = """
import errno, os, sys
def full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
os.fsync = full
from rawmeta.cli.main import main
sys.argv = ["rawmeta"] + sys.argv[1:]
main()
"""


def run(*args, disk_full=False, **kw):
    cmd = [sys.executable, "-c", _DISK_FULL] if disk_full else [sys.executable, "-m", "rawmeta.cli.main"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, **kw)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


@pytest.mark.parametrize("where", ["in-place", "sidecar", "output"])
def test_disk_full_during_encode_changes_nothing(sample, tmp_path, where):
    dng, jpg = sample
    before = jpg.read_bytes()
    extra = {"in-place": [], "sidecar": ["--sidecar"], "output": ["-o", tmp_path / "out.jpg"]}[where]
    res = run("encode", dng, jpg, "--method", "prior", *extra, disk_full=True)
    assert res.returncode == EXIT_IO, res.stderr
    assert "No space left" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert jpg.read_bytes() == before
    assert not (tmp_path / "out.jpg").exists() and not jpg.with_suffix(".rmeta").exists()
    assert leftovers(jpg.parent) == [] and leftovers(tmp_path) == []


def test_disk_full_during_decode_leaves_no_dng(sample, tmp_path):
    dng, jpg = sample
    assert run("encode", dng, jpg, "--method", "prior").returncode == 0
    before = jpg.read_bytes()
    res = run("decode", jpg, "-o", tmp_path / "rec.dng", disk_full=True)
    assert res.returncode == EXIT_IO, res.stderr
    assert not (tmp_path / "rec.dng").exists() and leftovers(tmp_path) == []
    assert jpg.read_bytes() == before


def test_read_only_output_directory(sample, tmp_path):
    dng, jpg = sample
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as root: permissions are not enforced")
        res = run("encode", dng, jpg, "--method", "prior", "-o", ro / "x.jpg")
        assert res.returncode == EXIT_IO and "not writable" in res.stderr
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.0, 3.5])
def test_sigkill_during_encode_in_place_keeps_the_jpeg_whole(sample, delay):
    """Killed at any moment: the JPEG is either untouched or the complete new file."""
    from rawmeta.formats import jpeg

    dng, jpg = sample
    before = jpg.read_bytes()
    proc = subprocess.Popen([sys.executable, "-m", "rawmeta.cli.main", "encode", str(dng),
                             str(jpg), "--method", "prior", "-q"])
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    after = jpg.read_bytes()
    if after != before:  # it finished: the new file must be whole and carry the payload
        assert jpeg.extract(after, jpg) is not None
        assert jpeg.strip(after) == before
    names = [p.name for p in jpg.parent.iterdir() if not p.name.endswith(".part")]
    assert sorted(names) == sorted([dng.name, jpg.name])


@pytest.mark.parametrize("delay", [0.5, 2.0, 3.5])
def test_sigkill_during_decode_leaves_no_partial_dng(sample, tmp_path, delay):
    import rawpy

    dng, jpg = sample
    assert run("encode", dng, jpg, "--method", "prior").returncode == 0
    out = tmp_path / "rec.dng"
    proc = subprocess.Popen([sys.executable, "-m", "rawmeta.cli.main", "decode", str(jpg), "-o",
                             str(out), "-q"])
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    if out.exists():  # finished before the kill: must be a complete, readable DNG
        with rawpy.imread(str(out)) as r:
            assert r.raw_image_visible.shape == (256, 384)
