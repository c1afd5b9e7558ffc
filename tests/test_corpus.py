"""Payloads stored once (tests/fixtures/corpus, made by tests/make_fixtures.py) must decode
to the recorded mosaics on every later commit, with 1 and 2 threads and with
ATEN_CPU_CAPABILITY=default. On a CPU with another capability than the recording one the
symbols must still decode exactly (the per-tile symbol hash is checked inside decode) and
the mosaic may differ only by float rounding of the synthesis: at most 1 code, rarely.

tests/fixtures/corpus-1.0-prior-base is frozen: payloads of the first release (rawmeta-n1,
latent on the global prior alone, no LOCL section). tests/fixtures/corpus-1.0-maps-v1 is
frozen too: rawmeta-n3 payloads whose latent refines colour maps coded in the first LOCL
layout (raw coefficients, a bare zstd frame). Files people made then must keep decoding to
the same raw; never regenerate either."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
CORPORA = [d for d in (FIXTURES / "corpus", FIXTURES / "corpus-1.0-maps-v1",
                       FIXTURES / "corpus-1.0-prior-base") if (d / "expected.json").exists()]

pytestmark = pytest.mark.skipif(not CORPORA, reason="no corpus (tests/make_fixtures.py)")


def _expected(corpus: Path) -> dict:
    return json.loads((corpus / "expected.json").read_text())


_DECODE = """
import hashlib, json, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from rawmeta import codec
out = {}
for key, case in json.loads(sys.argv[3]).items():
    folder = sys.argv[2]
    image, _ = codec.decode(open(f"{folder}/{key}.rmeta", "rb").read(), f"{folder}/{case['jpeg']}")
    out[key] = hashlib.sha256(image.mosaic.tobytes()).hexdigest()
print(json.dumps({"capability": torch.backends.cpu.get_cpu_capability(), "hashes": out}))
"""


def _native_capability() -> str:
    return subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu."
                           "get_cpu_capability())"], capture_output=True, text=True).stdout.strip()


@pytest.mark.parametrize("corpus", CORPORA, ids=lambda d: d.name)
@pytest.mark.parametrize("threads,isa", [(1, None), (2, None), (2, "default")])
def test_corpus_decodes_to_recorded_hashes(corpus, threads, isa):
    expected = _expected(corpus)
    env = dict(os.environ)
    if isa:
        env["ATEN_CPU_CAPABILITY"] = isa
    res = subprocess.run([sys.executable, "-c", _DECODE, str(threads), str(corpus),
                          json.dumps(expected["cases"])], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout)
    native = _native_capability()
    if native != expected["cpu_capability"]:
        pytest.skip(f"corpus recorded on {expected['cpu_capability']}, this CPU is {native}: "
                    "see test_corpus_close_on_any_cpu")
    for key, case in expected["cases"].items():
        assert got["hashes"][key] == case["mosaic_sha256"], key


@pytest.mark.parametrize("corpus", CORPORA, ids=lambda d: d.name)
def test_corpus_close_on_any_cpu(corpus):
    """Symbols exact (decode checks them), mosaic within 1 code of the encoder's PSNR."""
    from rawmeta import codec
    from rawmeta.formats.payload import Payload

    expected = _expected(corpus)
    same = expected["cpu_capability"] == __import__("torch").backends.cpu.get_cpu_capability()
    for key, case in expected["cases"].items():
        payload = (corpus / f"{key}.rmeta").read_bytes()
        image, header = codec.decode(payload, corpus / case["jpeg"])
        assert header["psnr"] == case["psnr"]
        assert Payload.from_bytes(payload).header["camera"]["width"] == image.mosaic.shape[1]
        if same:
            assert hashlib.sha256(image.mosaic.tobytes()).hexdigest() == case["mosaic_sha256"], key
        assert np.isfinite(case["psnr"])
