"""The evaluation harness: real bytes through every method, table, JSON, plot; unprocessing."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from rawmeta import evaluate as ev, unprocess, zoo
from rawmeta.cli.main import cli
from rawmeta.formats.errors import BadInputError
from rawmeta.synthetic import make_sample


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    dng, _ = make_sample(folder, "tiny", h=128, w=192, seed=4, orientation=2)
    return dng


def test_parse_runs():
    labels = [r.label for r in ev.parse_runs("all")]
    neural = [f"neural-{q:g}" for q in ev.DEFAULT_QUALITIES["neural"]] if zoo.default_model() else []
    assert labels == neural + ["prior", "sam-8", "local-4", "local-8", "local-16", "local-32"]
    assert [r.label for r in ev.parse_runs("local", "8,16")] == ["local-8", "local-16"]
    runs = ev.parse_runs("sam,local", "local=32;sam=4,8")
    assert [r.label for r in runs] == ["sam-4", "sam-8", "local-32"]
    for method, quality in (("neural-x", None), ("all", "8"), ("prior", "prior=3"), ("local", "a")):
        with pytest.raises(BadInputError):
            ev.parse_runs(method, quality)


def test_evaluate_measures_real_bytes(tiny):
    runs = ev.parse_runs("prior,sam,local", "local=8,16")
    report = ev.evaluate([tiny], runs)
    rows = {r["label"]: r for r in report["images"][0]["results"]}
    assert list(rows) == ["prior", "sam-8", "local-8", "local-16"]
    for row in rows.values():
        assert row["bpp"] == pytest.approx(8 * row["payload_bytes"] / (128 * 192))
        assert row["psnr"] == pytest.approx(row["encode_psnr"], abs=1e-3)  # decode == encode claim
        assert 0.5 < row["ssim"] <= 1.0
        assert np.isfinite(row["edit_psnr"]) and row["edit_de2000"] > 0
        assert row["encode_s_per_mp"] > 0 and row["decode_peak_rss_mb"] > 10
    assert rows["local-8"]["psnr"] > rows["local-16"]["psnr"] > rows["prior"]["psnr"]
    assert rows["local-8"]["payload_bytes"] > rows["local-16"]["payload_bytes"] > rows["prior"]["payload_bytes"]
    # edit-aware error follows raw error: the better raw renders closer after the edit
    assert rows["local-8"]["edit_psnr"] > rows["prior"]["edit_psnr"]
    mean = {r["label"]: r for r in report["mean"]}
    assert mean["local-8"]["psnr"] == pytest.approx(rows["local-8"]["psnr"])
    assert report["software"]["rawpy"] and report["software"]["libraw"]
    json.dumps(report)  # every number serialisable


def test_table_and_plot(tiny, tmp_path):
    report = ev.evaluate([tiny], ev.parse_runs("prior"), edit=False)
    table = ev.format_table(report)
    assert "prior" in table and "mean of 1" in table and "editPSNR" in table
    ev.plot_rd(report, tmp_path / "rd.png")
    assert (tmp_path / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_unreadable_raw_is_reported_not_fatal(tiny, tmp_path):
    bad = tmp_path / "broken.dng"
    bad.write_bytes(b"not a raw")
    report = ev.evaluate([bad, tiny], ev.parse_runs("prior"), edit=False)
    assert "error" in report["images"][0] and report["mean"][0]["images"] == 1


def test_subprocess_timing(tiny):
    report = ev.evaluate([tiny], ev.parse_runs("local", "16"), edit=False, use_subprocess=True)
    row = report["images"][0]["results"][0]
    in_proc = ev.evaluate([tiny], ev.parse_runs("local", "16"), edit=False)["images"][0]["results"][0]
    assert row["payload_bytes"] == in_proc["payload_bytes"] and row["psnr"] == in_proc["psnr"]
    assert row["encode_peak_rss_mb"] > 20 and "fresh" in report["measurement"]["speed"]


def test_cli_eval_writes_table_json_plot(tiny, tmp_path):
    out_json, out_png = tmp_path / "e.json", tmp_path / "rd.png"
    result = CliRunner().invoke(cli, ["eval", str(tiny.parent), "--method", "prior,local",
                                      "--quality", "local=16", "--no-edit", "-q",
                                      "--json", str(out_json), "--plot", str(out_png)])
    assert result.exit_code == 0, result.output
    assert "local-16" in result.output
    report = json.loads(out_json.read_text())
    assert [r["label"] for r in report["mean"]] == ["prior", "local-16"]
    assert out_png.stat().st_size > 1000


def test_cli_eval_bad_method(tiny):
    result = CliRunner().invoke(cli, ["eval", str(tiny), "--method", "magic"])
    assert result.exit_code == 3 and "unknown method" in result.output


def test_unprocess_is_deterministic_and_plausible(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(2):
        img = (rng.uniform(0, 1, (33, 50, 1)) * np.array([200, 150, 90]) + 20).astype(np.uint8)
        Image.fromarray(img).save(photos / f"p{i}.png")
    a = unprocess.unprocess_folder(photos, tmp_path / "a", seed=7)
    b = unprocess.unprocess_folder(photos, tmp_path / "b", seed=7, limit=1)
    c = unprocess.unprocess_folder(photos, tmp_path / "c", seed=8, limit=1)
    from rawmeta.raw import read_raw

    ra, rb, rc = (read_raw(p[0]) for p in (a, b, c))
    assert len(a) == 2 and len(b) == 1
    assert np.array_equal(ra.mosaic, rb.mosaic)          # same seed, same raw
    assert not np.array_equal(ra.mosaic, rc.mosaic)      # other seed, other noise and gains
    assert ra.mosaic.shape == (32, 50) and ra.meta.cfa == "RGGB"
    assert ra.mosaic.min() >= 0 and ra.mosaic.max() <= unprocess.WHITE
    # inverse white balance: the raw's green dominates for a warm-ish photo after dividing gains
    r, g = ra.mosaic[0::2, 0::2].mean(), ra.mosaic[0::2, 1::2].mean()
    assert g > r and ra.meta.as_shot_neutral[0] < 1.0


def test_unprocess_inverts_the_forward_pipeline():
    """Without noise, LibRaw-style forward processing (gains, matrix, gamma, tone) recovers the photo."""
    rng = np.random.default_rng(1)
    photo = rng.integers(10, 230, (8, 8, 3), dtype=np.uint8)
    cap = unprocess.Capture(red_gain=2.0, blue_gain=1.7, brightness=1.25, shot=0.0, read=0.0)
    x = photo.astype(np.float64) / 255
    x = 0.5 - np.sin(np.arcsin(1 - 2 * x) / 3)
    x = np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)
    cam = unprocess._invert_gains(x @ unprocess.rgb_to_camera().T, cap)
    back = (cam * np.array([2.0, 1.0, 1.7]) * 1.25) @ np.linalg.inv(unprocess.rgb_to_camera()).T
    assert np.allclose(back, x, atol=1e-9)


def test_cli_eval_synthetic(tmp_path):
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(2)
    y, x = np.mgrid[0:64, 0:96]
    for i in range(3):  # smooth structure: the LibRaw render must register against the raw
        img = np.stack([x * 2 + 20 * i, y * 3, (x + y) % 64 * 3], -1) + rng.integers(0, 8, (64, 96, 3))
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(photos / f"k{i}.png")
    result = CliRunner().invoke(cli, ["eval", "--synthetic", str(photos), "--limit", "2",
                                      "--method", "prior", "--no-edit", "-q",
                                      "--json", str(tmp_path / "s.json")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "s.json").read_text())
    assert [im["image"] for im in report["images"]] == ["k0.dng", "k1.dng"]
    assert report["settings"]["synthetic"]["seed"] == 0


@pytest.mark.slow
def test_eval_on_shared_gopro(tmp_path):
    from conftest import shared_raw

    raws = [shared_raw("Hero6_GOPR0024.dng"), shared_raw("Fusion_GPFR7066.dng")]
    report = ev.evaluate(raws, ev.parse_runs("all"))
    for image in report["images"]:
        rows = {r["label"]: r for r in image["results"]}
        assert rows["sam-8"]["psnr"] > rows["prior"]["psnr"]
        assert rows["local-32"]["psnr"] > rows["prior"]["psnr"]
