"""`rawmeta batch` on a generated library: pairing, resume after SIGKILL, no partial outputs,
raws deleted only after verification, and the Dask executor on a loopback LocalCluster."""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from rawmeta import batch as engine
from rawmeta.cli.main import cli
from rawmeta.formats.errors import EXIT_SOME_FAILED
from rawmeta.synthetic import make_sample

H, W = 128, 192
# library path -> which generated sample it is a copy of (raw: .dng, JPEG: .jpg)
LAYOUT = {
    "a/IMG_0001.DNG": ("s1", "dng"), "a/IMG_0001.JPG": ("s1", "jpg"),
    "a/b/DSC01234.dng": ("s2", "dng"), "a/b/dsc01234.jpeg": ("s2", "jpg"),
    "c/Photo.Dng": ("s3", "dng"), "c/PHOTO.jpg": ("s3", "jpg"),
    "c/nojpeg.dng": ("s4", "dng"),          # a raw with no JPEG
    "lone.jpg": ("s1", "jpg"),               # a JPEG with no raw
    "bad.JPG": ("s2", "jpg"),                # its raw (bad.cr2) is garbage
}
GOOD = ["a/IMG_0001.DNG", "a/b/DSC01234.dng", "c/Photo.Dng"]


@pytest.fixture(scope="session")
def samples(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("batch-samples")
    for seed in range(1, 5):
        make_sample(folder, f"s{seed}", h=H, w=W, seed=seed)
    return folder


def build_library(samples: Path, root: Path, layout=LAYOUT) -> Path:
    for rel, (name, ext) in layout.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(samples / f"{name}.{ext}", root / rel)
    (root / "bad.cr2").write_bytes(b"II*\0" + os.urandom(4000))
    (root / "notes.txt").write_text("not a photo")
    return root


@pytest.fixture
def library(samples, tmp_path) -> Path:
    return build_library(samples, tmp_path / "lib")


def run(*args) -> tuple[int, dict | None, str]:
    result = CliRunner().invoke(cli, ["batch", *map(str, args)], catch_exceptions=False)
    report = json.loads(result.stdout) if "-" in args and result.stdout.strip() else None
    return result.exit_code, report, result.output


def digest(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".rawmeta-batch")}


def carries_metadata_once(path: Path) -> bool:
    from rawmeta.formats import jpeg

    return path.read_bytes().count(jpeg.RAWMETA_UUID.bytes) == 1


def decodes(jpg: Path, raw: Path | None = None) -> float:
    """Decode the JPEG's metadata; with the raw, return the PSNR against it."""
    from rawmeta import codec, raw as rawio
    from rawmeta.formats import jpeg

    data = jpg.read_bytes()
    rebuilt, _ = codec.decode(jpeg.extract(data, jpg), jpg, srgb_bytes=data, source=jpg)
    return engine.raw_psnr(rawio.read_raw(raw), rebuilt) if raw else rebuilt.mosaic.shape


def manifest_rows(path: Path) -> dict[str, sqlite3.Row]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    rows = {r["raw"]: r for r in db.execute("SELECT * FROM pairs")}
    db.close()
    return rows


# --- pairing ---------------------------------------------------------------------------

def test_pairs_by_stem_in_any_case(library):
    lib = engine.discover(library)
    pairs = {p.raw: p.jpeg for p in lib.paired}
    assert pairs == {"a/IMG_0001.DNG": "a/IMG_0001.JPG", "a/b/DSC01234.dng": "a/b/dsc01234.jpeg",
                     "c/Photo.Dng": "c/PHOTO.jpg", "bad.cr2": "bad.JPG"}
    assert lib.lone_raws == ["c/nojpeg.dng"]
    assert not any(p.error for p in lib.pairs)


def test_ambiguous_stems_are_failures_not_guesses(samples, tmp_path):
    root = build_library(samples, tmp_path / "lib", {"x.dng": ("s1", "dng"), "x.jpg": ("s1", "jpg"),
                                                     "X.JPEG": ("s1", "jpg")})
    (pair,) = [p for p in engine.discover(root).pairs if p.raw == "x.dng"]
    assert "ambiguous" in pair.error and "X.JPEG" in pair.error


def test_trash_and_output_folders_are_not_walked(library, tmp_path):
    (library / engine.TRASH_NAME / "old").mkdir(parents=True)
    shutil.copy(library / "c/Photo.Dng", library / engine.TRASH_NAME / "old/Photo.dng")
    shutil.copy(library / "c/PHOTO.jpg", library / engine.TRASH_NAME / "old/Photo.jpg")
    raws = {p.raw for p in engine.discover(library, skip=[library / "c"]).pairs}
    assert raws == {"a/IMG_0001.DNG", "a/b/DSC01234.dng", "bad.cr2"}


# --- converting ------------------------------------------------------------------------

def test_batch_embeds_in_place_and_one_bad_file_fails_alone(library):
    before = digest(library)
    code, report, _ = run(library, "--jobs", "2", "--json", "-")
    assert code == EXIT_SOME_FAILED
    assert sorted(report["done"]) == sorted(GOOD)
    assert list(report["failed"]) == ["bad.cr2"]
    assert "bad.cr2" in report["failed"]["bad.cr2"] and "\n" not in report["failed"]["bad.cr2"]
    assert report["raws_without_jpeg"] == ["c/nojpeg.dng"]
    s = report["summary"]
    assert (s["done"], s["skipped"], s["failed"]) == (3, 0, 1)
    assert s["bytes_before"] > s["bytes_after"] > 0 and 0 < s["mean_bpp"] < 8 and s["mean_psnr"] > 25

    after = digest(library)
    for jpg in ("a/IMG_0001.JPG", "a/b/dsc01234.jpeg", "c/PHOTO.jpg"):
        assert after[jpg] != before[jpg] and carries_metadata_once(library / jpg)
    unchanged = set(before) - {"a/IMG_0001.JPG", "a/b/dsc01234.jpeg", "c/PHOTO.jpg"}
    assert {k: after[k] for k in unchanged} == {k: before[k] for k in unchanged}  # raws, lone JPEG, bad.JPG
    rows = manifest_rows(library / engine.MANIFEST_NAME)
    assert {r: rows[r]["state"] for r in rows} == {**{g: "done" for g in GOOD}, "bad.cr2": "failed"}
    assert decodes(library / "a/IMG_0001.JPG", library / "a/IMG_0001.DNG") == pytest.approx(
        rows["a/IMG_0001.DNG"]["psnr"], abs=1e-3)

    code, report, _ = run(library, "--json", "-")
    assert code == EXIT_SOME_FAILED
    assert report["done"] == [] and sorted(report["skipped"]) == sorted(GOOD)
    assert digest(library) == after  # nothing rewritten


def test_scan_is_untouched_and_all_good_means_exit_0(samples, tmp_path):
    root = build_library(samples, tmp_path / "lib", {"p.dng": ("s1", "dng"), "p.jpg": ("s1", "jpg")})
    from rawmeta.formats import jpeg
    scan = jpeg.scan_bytes((root / "p.jpg").read_bytes())
    (root / "bad.cr2").unlink()
    code, _, output = run(root, "--jobs", "1")
    assert code == 0, output
    assert "1 done, 0 skipped, 0 failed" in output
    assert jpeg.scan_bytes((root / "p.jpg").read_bytes()) == scan


def test_jpeg_with_foreign_metadata_is_left_alone(library):
    from rawmeta import codec
    from rawmeta.formats import jpeg

    jpg = library / "c/PHOTO.jpg"
    data = jpg.read_bytes()
    jpg.write_bytes(jpeg.embed(data, codec.encode(library / "c/Photo.Dng", jpg, srgb_bytes=data).payload))
    mine = jpg.read_bytes()
    _, report, _ = run(library, "--json", "-")
    assert "c/Photo.Dng" in report["skipped"] and jpg.read_bytes() == mine
    assert manifest_rows(library / engine.MANIFEST_NAME)["c/Photo.Dng"]["state"] == "existing"


def test_out_with_sidecar_leaves_library_untouched(library, tmp_path):
    before = digest(library)
    out = tmp_path / "out"
    code, report, _ = run(library, "--out", out, "--sidecar", "--verify", "--json", "-")
    assert code == EXIT_SOME_FAILED and report["failed"].keys() == {"bad.cr2"}
    assert digest(library) == before
    assert not (library / engine.MANIFEST_NAME).exists() and (out / engine.MANIFEST_NAME).exists()
    made = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()
                  and not p.name.startswith(".rawmeta-batch"))
    assert made == ["a/IMG_0001.rmeta", "a/b/dsc01234.rmeta", "c/PHOTO.rmeta"]
    rows = manifest_rows(out / engine.MANIFEST_NAME)
    assert all(rows[g]["state"] == "verified" and rows[g]["verify_psnr"] > 25 for g in GOOD)


def test_render_missing_makes_the_jpeg_atomically(library):
    code, report, _ = run(library, "--render-missing", "--verify", "--json", "-")
    assert "c/nojpeg.dng" in report["done"] and report["raws_without_jpeg"] == []
    jpg = library / "c/nojpeg.jpg"
    assert carries_metadata_once(jpg) and decodes(jpg, library / "c/nojpeg.dng") > 25


def test_dry_run_writes_nothing(library):
    before = digest(library)
    code, report, _ = run(library, "--dry-run", "--json", "-")
    assert report["planned"] == {"encode": 4, "verify": 0}
    assert digest(library) == before
    assert not any(p.name.startswith(".rawmeta") for p in library.iterdir())


def test_stale_temp_files_are_removed_and_user_files_kept(library):
    stale = library / "a" / ".IMG_0001.JPG.k3j_x9q2.part"
    stale.write_bytes(b"half a JPEG")
    mine = library / "a" / "draft.part"
    mine.write_bytes(b"user data")
    run(library, "--json", "-")
    assert not stale.exists() and mine.read_bytes() == b"user data"


def test_a_second_concurrent_run_is_refused(library):
    fd = os.open(library / engine.LOCK_NAME, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        code, _, output = run(library)
        assert code == 5 and "another rawmeta batch run" in output
    finally:
        os.close(fd)


# --- deleting raws ---------------------------------------------------------------------

def test_delete_raw_needs_a_threshold_and_a_library(library, tmp_path):
    assert run(library, "--delete-raw")[0] == 2
    assert run(library, "--delete-raw", "--min-psnr", "20", "--out", tmp_path / "o")[0] == 2
    assert not (library / engine.MANIFEST_NAME).exists()


def test_delete_raw_moves_only_verified_raws_inside_the_library(library, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(library / "c/Photo.Dng", outside / "linked.dng")
    (library / "linked.dng").symlink_to(outside / "linked.dng")
    shutil.copy(library / "c/PHOTO.jpg", library / "linked.jpg")

    code, report, _ = run(library, "--delete-raw", "--min-psnr", "20", "--json", "-")
    assert code == EXIT_SOME_FAILED
    assert sorted(report["trashed"]) == sorted(GOOD)
    for raw in GOOD:
        assert not (library / raw).exists() and (library / engine.TRASH_NAME / raw).is_file()
    assert "outside the library" in report["kept_raws"]["linked.dng"]
    assert (library / "linked.dng").is_symlink() and (outside / "linked.dng").is_file()
    assert (library / "bad.cr2").exists()  # failed: never touched
    for jpg in ("a/IMG_0001.JPG", "a/b/dsc01234.jpeg", "c/PHOTO.jpg"):
        assert carries_metadata_once(library / jpg)
    rows = manifest_rows(library / engine.MANIFEST_NAME)
    assert {rows[r]["state"] for r in GOOD} == {"trashed"}


def test_delete_raw_keeps_raws_below_min_psnr(library):
    code, report, _ = run(library, "--delete-raw", "--min-psnr", "99", "--json", "-")
    assert report["trashed"] == [] and set(report["kept_raws"]) == set(GOOD)
    assert all((library / raw).exists() for raw in GOOD)
    # a reachable threshold next time: verified again (the JPEG may have changed), not re-encoded
    code, report, _ = run(library, "--delete-raw", "--min-psnr", "20", "--json", "-")
    assert sorted(report["trashed"]) == sorted(GOOD)
    assert report["planned"] == {"encode": 1, "verify": 3}  # bad.cr2 is retried


def test_delete_raw_reverifies_and_keeps_raw_of_a_stripped_jpeg(library):
    from rawmeta.formats import jpeg

    run(library, "--verify", "--json", "-")
    jpg = library / "a/IMG_0001.JPG"
    jpg.write_bytes(jpeg.strip(jpg.read_bytes()))  # an editor dropped the metadata since
    code, report, _ = run(library, "--delete-raw", "--min-psnr", "20", "--json", "-")
    assert "a/IMG_0001.DNG" in report["failed"] and "no rawmeta metadata" in report["failed"]["a/IMG_0001.DNG"]
    assert (library / "a/IMG_0001.DNG").is_file()
    assert sorted(report["trashed"]) == ["a/b/DSC01234.dng", "c/Photo.Dng"]


# --- crash safety ----------------------------------------------------------------------

def _count_recorded(manifest: Path) -> int:
    if not manifest.exists():
        return 0
    try:
        db = sqlite3.connect(f"{manifest.as_uri()}?mode=ro", uri=True, timeout=1)
        try:
            return db.execute("SELECT COUNT(*) FROM pairs WHERE state='done'").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def test_sigkill_mid_batch_resumes_with_nothing_half_written(samples, tmp_path):
    layout = {}
    for i in range(8):
        layout[f"d{i % 2}/IMG_{i:04d}.dng"] = (f"s{i % 4 + 1}", "dng")
        layout[f"d{i % 2}/IMG_{i:04d}.jpg"] = (f"s{i % 4 + 1}", "jpg")
    root = build_library(samples, tmp_path / "lib", layout)
    (root / "bad.cr2").unlink()
    manifest = root / engine.MANIFEST_NAME
    cmd = [sys.executable, "-m", "rawmeta.cli.main", "batch", str(root), "--jobs", "1", "--json",
           str(tmp_path / "r1.json")]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while _count_recorded(manifest) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    _wait_group_gone(proc.pid)  # orphaned workers finish their pair and exit
    first = {r for r, row in manifest_rows(manifest).items() if row["state"] == "done"}
    assert 1 <= len(first) < 8, "the kill came too late to test anything"
    mtimes = {r: (root / r).with_suffix(".jpg").stat().st_mtime_ns for r in first}

    code, report, _ = run(root, "--jobs", "1", "--json", "-")
    assert code == 0
    assert sorted(report["skipped"]) == sorted(first)
    assert sorted(report["done"] + report["skipped"]) == sorted(r for r in layout if r.endswith(".dng"))
    assert not list(root.rglob("*.part"))
    rows = manifest_rows(manifest)
    assert {row["state"] for row in rows.values()} == {"done"} and len(rows) == 8
    assert all(rows[r]["attempts"] == 1 for r in first)
    assert {r: (root / r).with_suffix(".jpg").stat().st_mtime_ns for r in first} == mtimes
    for jpg in root.rglob("*.jpg"):
        assert carries_metadata_once(jpg) and decodes(jpg) == (H, W)


def _wait_group_gone(pgid: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.killpg(pgid, signal.SIGKILL)
    pytest.fail("worker processes outlived their killed parent")


# --- Dask ------------------------------------------------------------------------------

def test_dask_local_cluster_runs_the_same_tasks(library):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://",
                                  host="127.0.0.1", dashboard_address=None) as cluster:
        code, report, _ = run(library, "--scheduler", cluster.scheduler_address, "--verify",
                              "--json", "-")
    assert code == EXIT_SOME_FAILED
    assert sorted(report["done"]) == sorted(GOOD) and list(report["failed"]) == ["bad.cr2"]
    rows = manifest_rows(library / engine.MANIFEST_NAME)
    assert all(rows[g]["state"] == "verified" for g in GOOD)
    assert carries_metadata_once(library / "a/IMG_0001.JPG")
