"""End to end through the `rawmeta` command: outputs, one-line errors, exit codes, no damage."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rawpy
from PIL import Image

from rawmeta import codec, raw as rawio
from rawmeta.formats import jpeg
from rawmeta.formats.errors import EXIT_BAD_INPUT, EXIT_CORRUPT, EXIT_IO
from rawmeta.metrics import psnr
from rawmeta.synthetic import make_sample


def rawmeta(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rawmeta.cli.main", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd)


def one_line_error(res, code, *words):
    assert res.returncode == code, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("rawmeta: error:"), res.stderr
    assert "Traceback" not in res.stderr
    for w in words:
        assert w in lines[0], lines[0]


def files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_encode_in_place_then_decode(sample, tmp_path):
    dng, jpg = sample
    before = jpg.read_bytes()
    res = rawmeta("encode", dng, jpg, "--json")
    assert res.returncode == 0, res.stderr
    rec = json.loads(res.stdout)
    assert rec["psnr"] > 33 and 0 < rec["bpp"] < 0.5
    after = jpg.read_bytes()
    assert jpeg.scan_bytes(after) == jpeg.scan_bytes(before)
    assert np.array_equal(np.asarray(Image.open(jpg)), np.asarray(Image.open(__import__("io").BytesIO(before))))
    overhead = len(after) - len(before) - rec["payload_bytes"]
    assert 0 < overhead < 200  # APP11 + JUMBF framing only

    out = tmp_path / "rec.dng"
    res = rawmeta("decode", jpg, "-o", out, "--json")
    assert res.returncode == 0, res.stderr
    a, b = rawio.read_raw(dng), rawio.read_raw(out)
    assert (b.meta.cfa, b.meta.black, b.meta.white, b.meta.orientation) == \
        (a.meta.cfa, a.meta.black, a.meta.white, a.meta.orientation)
    assert np.allclose(b.meta.as_shot_neutral, a.meta.as_shot_neutral, atol=1e-4)
    assert psnr(rawio.normalized_mosaic(a.mosaic, a.meta), rawio.normalized_mosaic(b.mosaic, a.meta)) == pytest.approx(rec["psnr"], abs=1e-3)  # encoder measured the truth
    with rawpy.imread(str(out)) as r:
        assert r.postprocess().shape[:2] == Image.open(jpg).size[::-1]


def test_sidecar_leaves_jpeg_untouched(sample, tmp_path):
    dng, jpg = sample
    before = jpg.read_bytes()
    assert rawmeta("encode", dng, jpg, "--sidecar", "-q").returncode == 0
    assert jpg.read_bytes() == before and jpg.with_suffix(".rmeta").exists()
    res = rawmeta("info", jpg, "--json")
    assert res.returncode == 0 and json.loads(res.stdout)["stored_in"] == "sidecar mirror.rmeta"
    assert rawmeta("decode", jpg, "-o", tmp_path / "r.dng", "-q").returncode == 0
    assert (tmp_path / "r.dng").stat().st_size > 1000


def test_output_jpeg_elsewhere_and_info(sample, tmp_path):
    dng, jpg = sample
    before = jpg.read_bytes()
    out = tmp_path / "copy.jpg"
    assert rawmeta("encode", dng, jpg, "-o", out).returncode == 0
    assert jpg.read_bytes() == before
    info = json.loads(rawmeta("info", out, "--json").stdout)
    assert info["stored_in"] == "APP11" and info["method"] == codec.default_method()
    assert info["camera"] == "rawmeta Synthetic" and info["raw_size"] == [384, 256]


def test_info_does_not_import_torch_or_rawpy(sample):
    dng, jpg = sample
    assert rawmeta("encode", dng, jpg, "-q").returncode == 0
    code = ("import sys; from rawmeta.cli.main import cli\n"
            "try: cli(['info', sys.argv[1]])\nexcept SystemExit: pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'rawpy', 'numpy') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code, str(jpg)], capture_output=True, text=True)
    assert "HEAVY []" in res.stdout, res.stdout + res.stderr


# --- bad input: one line, the right exit code, nothing written or changed ------------------

def test_png_and_text_given_as_jpeg(sample, tmp_path):
    dng, jpg = sample
    png = tmp_path / "fake.jpg"
    Image.open(jpg).save(png, "PNG")
    one_line_error(rawmeta("encode", dng, png), EXIT_BAD_INPUT, "fake.jpg", "not a JPEG")
    txt = tmp_path / "notes.jpg"
    txt.write_text("hello")
    one_line_error(rawmeta("decode", txt, "-o", tmp_path / "o.dng"), EXIT_BAD_INPUT, "notes.jpg", "not a JPEG")
    assert not (tmp_path / "o.dng").exists()


def test_jpeg_without_metadata(sample, tmp_path):
    _, jpg = sample
    one_line_error(rawmeta("decode", jpg, "-o", tmp_path / "o.dng"), EXIT_BAD_INPUT, "mirror.jpg",
                   "no rawmeta metadata")
    assert not (tmp_path / "o.dng").exists()


@pytest.mark.parametrize("damage", ["truncate", "bitflip"])
def test_damaged_payload_is_corrupt(sample, tmp_path, damage):
    dng, jpg = sample
    assert rawmeta("encode", dng, jpg, "--sidecar", "-q").returncode == 0
    side = jpg.with_suffix(".rmeta")
    data = bytearray(side.read_bytes())
    if damage == "truncate":
        data = data[: len(data) - 40]
    else:
        data[len(data) // 2] ^= 0x10
    side.write_bytes(bytes(data))
    one_line_error(rawmeta("decode", jpg, "-o", tmp_path / "o.dng"), EXIT_CORRUPT, "mirror.rmeta")
    assert not (tmp_path / "o.dng").exists()


def test_damaged_app11_is_corrupt(sample, tmp_path):
    dng, jpg = sample
    assert rawmeta("encode", dng, jpg, "-q").returncode == 0
    data = bytearray(jpg.read_bytes())
    pos = data.index(b"bidb") + 200
    data[pos] ^= 0xFF
    jpg.write_bytes(bytes(data))
    one_line_error(rawmeta("decode", jpg, "-o", tmp_path / "o.dng"), EXIT_CORRUPT, "mirror.jpg", "CRC")


def test_unsupported_raw(sample, tmp_path):
    _, jpg = sample
    before = jpg.read_bytes()
    bogus = tmp_path / "x.nef"
    bogus.write_bytes(b"II*\x00" + bytes(100))
    one_line_error(rawmeta("encode", bogus, jpg), EXIT_BAD_INPUT, "x.nef")
    assert jpg.read_bytes() == before


def test_mismatched_pair(sample, tmp_path):
    _, jpg = sample
    other, _ = make_sample(tmp_path, "other", h=256, w=384, seed=11)
    before = jpg.read_bytes()
    one_line_error(rawmeta("encode", other, jpg), EXIT_BAD_INPUT, "mirror.jpg", "rendering of this raw")
    assert jpg.read_bytes() == before


def test_existing_output_is_not_overwritten(sample, tmp_path):
    dng, jpg = sample
    assert rawmeta("encode", dng, jpg, "-q").returncode == 0
    out = tmp_path / "exists.dng"
    out.write_bytes(b"precious")
    one_line_error(rawmeta("decode", jpg, "-o", out), EXIT_IO, "exists.dng", "already exists")
    assert out.read_bytes() == b"precious"
    assert rawmeta("decode", jpg, "-o", out, "--force", "-q").returncode == 0
    assert out.read_bytes()[:2] == b"II"
    # encoding again in place without --force must not replace the metadata silently
    before = jpg.read_bytes()
    one_line_error(rawmeta("encode", dng, jpg), EXIT_IO, "already carries rawmeta")
    assert jpg.read_bytes() == before


def test_unwritable_directory(sample, tmp_path):
    dng, jpg = sample
    if os.geteuid() == 0:  # root ignores permission bits; /proc refuses new files even to root
        one_line_error(rawmeta("encode", dng, jpg, "-o", "/proc/o.jpg"), EXIT_IO, "/proc/o.jpg")
        return
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        one_line_error(rawmeta("encode", dng, jpg, "-o", locked / "o.jpg"), EXIT_IO, "not writable")
    finally:
        locked.chmod(0o700)


def test_missing_output_directory(sample, tmp_path):
    dng, jpg = sample
    one_line_error(rawmeta("encode", dng, jpg, "-o", tmp_path / "nope" / "o.jpg"), EXIT_IO, "does not exist")


def test_no_temp_files_left_after_failures(sample, tmp_path):
    dng, jpg = sample
    rawmeta("decode", jpg, "-o", tmp_path / "o.dng")
    rawmeta("encode", dng, tmp_path / "missing.jpg")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_usage_error_exit_code():
    assert rawmeta("encode").returncode == 2


def test_reencoded_jpeg_is_refused_unless_forced(sample, tmp_path):
    dng, jpg = sample
    assert rawmeta("encode", dng, jpg, "--sidecar", "-q").returncode == 0
    Image.open(jpg).save(jpg, quality=80)  # pixels change, sidecar stays
    out = tmp_path / "o.dng"
    one_line_error(rawmeta("decode", jpg, "-o", out), EXIT_BAD_INPUT, "changed since encoding", "dB")
    assert not out.exists()
    res = rawmeta("decode", jpg, "-o", out, "--force")
    assert res.returncode == 0 and "warning" in res.stderr and "thumbnail PSNR" in res.stderr
    sections = json.loads(rawmeta("info", jpg, "--json").stdout)["sections"]
    if "NEUR" in sections:  # the latent needs the exact pixels: colour maps alone
        assert "colour maps alone" in res.stderr
    assert out.exists()


def test_cropped_jpeg_is_refused(sample, tmp_path):
    dng, jpg = sample
    assert rawmeta("encode", dng, jpg, "--sidecar", "-q").returncode == 0
    Image.open(jpg).crop((0, 0, 300, 200)).save(jpg, quality=95)
    one_line_error(rawmeta("decode", jpg, "-o", tmp_path / "o.dng", "--force"), EXIT_BAD_INPUT,
                   "changed since encoding", "300x200")
