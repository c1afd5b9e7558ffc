"""Regenerate the decode-determinism corpus in tests/fixtures/corpus (run after a change
that is *meant* to change decoded output, e.g. new shipped weights; say so in the commit).

    .venv/bin/python tests/make_fixtures.py

Each case: a small generated raw (one per Bayer phase), its LibRaw JPEG, and payloads made
by the shipped default model at two qualities (and once with its latent kept), by the prior
and by the local colour maps. expected.json records the
sha256 of every decoded mosaic, the PSNR the encoder measured and the CPU capability the
hashes were recorded on. tests/test_corpus.py decodes them on every commit.
"""
from __future__ import annotations

import hashlib
import json
import tempfile
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "fixtures" / "corpus"
CASES = [("rggb", "RGGB", 1), ("bggr", "BGGR", 3), ("grbg", "GRBG", 2), ("gbrg", "GBRG", 6)]
RUNS = [("neural-q20", "neural", 20.0), ("neural-q90", "neural", 90.0), ("prior", "prior", None),
        ("local-8", "local", 8), ("neural-q50-latent", "neural", 50.0)]
# On these 36k-pixel images the latent never pays for its bits, so the encoder leaves it out;
# this case keeps it anyway, so that the shipped model's latent decoding is pinned too.
FORCE_LATENT = {"neural-q50-latent"}


def main() -> None:
    import torch

    from rawmeta import codec, neural, zoo
    from rawmeta.formats.payload import MAJOR, MINOR
    from rawmeta.synthetic import make_sample

    CORPUS.mkdir(parents=True, exist_ok=True)
    expected = {"cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "format": f"{MAJOR}.{MINOR}", "model": zoo.default_model(), "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name, cfa, orientation in CASES:
            dng, jpg = make_sample(tmp, name, h=160, w=224, seed=len(name) + ord(cfa[0]),
                                   cfa=cfa, orientation=orientation)
            (CORPUS / f"{name}.jpg").write_bytes(jpg.read_bytes())
            pays = neural.latent_pays
            for label, method, quality in RUNS:
                neural.latent_pays = (lambda *a: True) if label in FORCE_LATENT else pays
                res = codec.encode(dng, jpg, method=method, quality=quality)
                (CORPUS / f"{name}.{label}.rmeta").write_bytes(res.payload)
                image, _ = codec.decode(res.payload, jpg)
                expected["cases"][f"{name}.{label}"] = {
                    "jpeg": f"{name}.jpg", "psnr": res.psnr,
                    "mosaic_sha256": hashlib.sha256(image.mosaic.tobytes()).hexdigest()}
    (CORPUS / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")
    print(f"{len(expected['cases'])} payloads -> {CORPUS}")


if __name__ == "__main__":
    main()
