"""Golden corpus (tests/golden/make_golden.py, written by main before the codec redesign of issue 22):
every stored stream decodes bit for bit to the recorded pixels (within FLOAT_TOLERANCE_DB where another
CPU's float kernels differ), and re-encoding each input gives the stored bytes, except for streams whose bytes
change by design (``bytes_change`` in golden.json says why;
those are checked by decode only)."""

import hashlib
import json
import sys
from pathlib import Path

import pytest

import codec

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "golden"))
import make_golden  # noqa: E402

RECORD = json.loads((make_golden.OUT / "golden.json").read_text())


# Parsing is integer and exact everywhere; the synthesis transform is float, so on a CPU whose kernels differ
# from the machine that wrote the corpus (AVX-512 vs AVX2 builds of the same torch) a decode may move a
# sample by a unit. There the decode must still match its recorded PSNR against the input this closely.
FLOAT_TOLERANCE_DB = 0.05


def same_or_float_close(decoded, expected_sha: str, img, expected_psnr: float, what: str) -> None:
    if make_golden.sha(decoded) == expected_sha:
        return
    got = make_golden.decoded_psnr(img, decoded)
    assert got != float("inf") and expected_psnr != float("inf"), f"{what}: an exact decode changed"
    assert abs(got - expected_psnr) <= FLOAT_TOLERANCE_DB, f"{what}: {got:.3f} dB vs {expected_psnr:.3f} dB recorded"


@pytest.mark.parametrize("name", sorted(RECORD))
def test_stored_stream_decodes_bit_for_bit(name):
    data = (make_golden.OUT / f"{name}.tlic").read_bytes()
    rec = RECORD[name]
    assert hashlib.sha256(data).hexdigest() == rec["stream"]
    img = make_golden.make_input(**make_golden.CASES[name][0])
    x, y, w, h = rec["region"]
    same_or_float_close(codec.decode(data), rec["decoded"], img, rec["decoded_psnr"], f"{name} decode")
    same_or_float_close(codec.decode_region(data, tuple(rec["region"])), rec["region_decoded"],
                        img[y : y + h, x : x + w], rec["region_psnr"], f"{name} region decode")


@pytest.mark.parametrize("name", sorted(RECORD))
def test_reencoding_gives_the_stored_bytes(name):
    rec = RECORD[name]
    _, data = make_golden.encode_case(name)
    if rec["bytes_change"]:  # by design: the new stream must still decode to the recorded pixels' shape
        assert codec.read_header(data).width == codec.read_header((make_golden.OUT / f"{name}.tlic").read_bytes()).width
        pytest.skip(rec["bytes_change"])
    if make_golden.sha(data) != rec["stream"] and name.startswith("minnen"):
        # minnen2018's encoder stops each sub-tile on a float PSNR: on another CPU's kernels a stop may move
        # by an iteration (see FLOAT_TOLERANCE_DB); its stream must still decode as the recorded one did
        img = make_golden.make_input(**make_golden.CASES[name][0])
        got = make_golden.decoded_psnr(img, codec.decode(data))
        assert abs(got - rec["decoded_psnr"]) <= 0.25 and abs(len(data) - rec["bytes"]) <= 0.03 * rec["bytes"], \
            f"{name}: the encoder's output changed ({len(data)} bytes, {got:.2f} dB)"
        return
    assert make_golden.sha(data) == rec["stream"], f"{name}: the encoder's bytes changed"


def test_corpus_covers_every_mode_and_stays_small():
    versions = {r["version"] for r in RECORD.values()}
    models = {r["model_id"] for r in RECORD.values()}
    assert versions == {1, 2} and {"default@2", "satellite@1", "minnen2018@1"} <= models
    assert sum(r["bytes"] for r in RECORD.values()) < 2_000_000
